//! URLs from the object, as in the manual's per-team example: a connection URL that is one
//! placeholder (`$this->team_id->webhook_url$`) and an action path from an attribute, as a
//! real receiver sees them, and what is refused instead of sent.

mod common;

use common::{event, lines, load, Receiver, Run};
use hookbridge::parse_event;
use hookbridge::render_event;
use serde_json::json;

#[tokio::test]
async fn the_url_comes_from_the_object_and_is_checked_per_request() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    let team = |url: &str, path: &str| json!({"object": {"ref": "R-1", "title": "t", "api_path": path, "team_id": {"id": 5, "name": "Ops", "webhook_url": url}}});
    run.write_events(&lines(&[
        event("good", "1", team(&rx.url("/hooks/ops?token=abc"), "tickets/R 1/comments")),
        event("ftp", "2", team("ftp://files.example.com/x", "tickets/R-2")),
        event("metadata", "3", team("http://169.254.169.254/latest/meta-data", "tickets/R-3")),
        event("climb", "4", team(&rx.url("/hooks/ops"), "../admin")),
    ]));
    let config = run.config(
        json!({"retry": {"max_attempts": 1}}),
        json!({
            "connections": {"per-team": {"url": "$this->team_id->webhook_url$"}},
            "actions": [{
                "name": "per-team", "type": "webhook", "connection": "per-team",
                "path": "$this->api_path$", "payload": r#"{"ref": "$this->ref$"}"#,
            }],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["per-team"]}],
        }),
    );
    let notes = load(&config).notes();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("connections.per-team.url: whole URL from the placeholder $this->team_id->webhook_url$")
    );
    run.run(&config).await;

    // The good one arrives where the object says, its path value's `/` kept, the space encoded.
    let seen = rx.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/hooks/ops/tickets/R%201/comments?token=abc");
    let results = run.responses();
    let by = |id: &str| results.iter().find(|r| r["event_id"] == id).unwrap().clone();
    assert_eq!(by("good")["status"], "delivered");
    for (id, reason, detail) in [
        ("ftp", "invalid_request", "has the scheme \"ftp\", not http or https"),
        ("metadata", "destination_refused", "cloud metadata"),
        ("climb", "invalid_request", "segment \"..\" cannot be a path segment"),
    ] {
        let r = by(id);
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["error"]["reason"], reason, "{r}");
        assert!(r["error"]["detail"].as_str().unwrap().contains(detail), "{r}");
    }
}

#[test]
fn render_says_which_url_form_is_used() {
    let config = load(&json!({
        "connections": {
            "per-team": {"url": "$this->team_id->webhook_url$"},
            "fixed": {"url": "https://api.example.com/tickets"},
            "templated": {"url": "https://api.example.com/teams/$this->team_id->name$"},
        },
        "actions": [
            {"name": "per-team", "type": "slack", "connection": "per-team", "message": "$this->ref$"},
            {"name": "fixed", "type": "webhook", "connection": "fixed"},
            {"name": "templated", "type": "webhook", "connection": "templated"},
        ],
        "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["per-team", "fixed", "templated"]}],
    }));
    let e = event(
        "e1",
        "1",
        json!({"object": {"ref": "R-1", "team_id": {"id": 5, "name": "Ops / L1", "webhook_url": "https://hooks.slack.com/services/T0/B0/SECRET"}}}),
    );
    let e = parse_event(e.to_string().as_bytes(), None).unwrap();
    let out = serde_json::to_value(render_event(&config, &e, None)).unwrap();
    let m = out["matched"].as_array().unwrap();
    assert_eq!(m[0]["url_form"], "whole_url_from_placeholder");
    assert_eq!(m[0]["request"]["url"], "https://hooks.slack.com/***");
    assert_eq!(m[0]["refused"], json!([]));
    assert_eq!(m[1]["url_form"], "fixed");
    assert_eq!(m[2]["url_form"], "template");
    assert_eq!(m[2]["request"]["url"], "https://api.example.com/teams/Ops%20%2F%20L1");
}
