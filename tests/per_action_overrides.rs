//! Per-action `retry` and per-connection `allow_private_network`, as a user configures them
//! for one on-premises iTop: what a real receiver saw and the results a user reads.

mod common;

use common::{event, lines, Receiver, Reply, Run};
use hookbridge::Config;
use serde_json::json;

#[tokio::test]
async fn an_action_retries_by_its_own_policy() {
    let rx = Receiver::start(|_, _| Reply::Status(503, vec![], "busy".into())).await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    let yaml = run.config(
        json!({"quick_attempts": 10, "retry": {"max_attempts": 4, "initial": "10ms", "max": "20ms"}}),
        json!({
            "connections": {"api": {"url": rx.url("")}},
            "actions": [
                {"name": "own", "type": "webhook", "connection": "api", "path": "/own",
                 "retry": {"max_attempts": 2, "initial": "10ms", "max": "20ms"}},
                {"name": "global", "type": "webhook", "connection": "api", "path": "/global"},
            ],
            "triggers": [{"name": "t", "on": "create", "class": "Ticket", "actions": ["own", "global"]}],
        }),
    );
    run.run(&yaml).await;
    let seen = rx.seen();
    assert_eq!(seen.iter().filter(|s| s.path == "/own").count(), 2);
    assert_eq!(seen.iter().filter(|s| s.path == "/global").count(), 4);
    let results = run.responses();
    let attempts = |a: &str| results.iter().find(|r| r["action"] == a).unwrap()["attempts"].clone();
    assert_eq!((attempts("own"), attempts("global")), (json!(2), json!(4)));
}

#[tokio::test]
async fn one_connection_may_reach_a_private_network() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    // Private networks are not allowed globally; only the on-premises connection opens them.
    let yaml = format!(
        "source: {{type: file, path: {events}}}\nresponses: {{type: file, path: {out}}}\ndead_letter: {{type: file, path: {dl}}}\nserver: {{listen: null}}\ndelivery: {{retry: {{max_attempts: 1}}}}\n\
connections:\n  on-prem: {{url: \"{url}/itop\", allow_private_network: true}}\n  other: {{url: \"{url}/other\"}}\n\
actions:\n  - {{name: on-prem, type: webhook, connection: on-prem}}\n  - {{name: other, type: webhook, connection: other}}\n\
triggers:\n  - {{name: t, on: create, class: Ticket, actions: [on-prem, other]}}\n",
        events = run.path("events.jsonl"),
        out = run.path("responses.jsonl"),
        dl = run.path("dead-letter.jsonl"),
        url = rx.url(""),
    );
    run.run(&yaml).await;
    let seen = rx.seen();
    assert_eq!(seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/itop"]);
    let results = run.responses();
    let by = |a: &str| results.iter().find(|r| r["action"] == a).unwrap().clone();
    assert_eq!(by("on-prem")["status"], "delivered");
    let other = by("other");
    assert_eq!(other["status"], "failed");
    assert_eq!(other["error"]["reason"], "destination_refused");
    assert!(other["error"]["detail"].as_str().unwrap().contains("allow_private_network"), "{other}");
}

#[test]
fn check_refuses_a_broken_action_retry() {
    let yaml = "connections:\n  api: {url: \"https://api.example.com\"}\nactions:\n  - {name: a, type: webhook, connection: api, retry: {max_attempts: 0, initial: 2s, max: 1s}}\n";
    let e = Config::from_yaml(yaml).unwrap_err().to_string();
    assert!(e.contains("actions[0].retry.max_attempts: must be at least 1"), "{e}");
    assert!(e.contains("actions[0].retry.initial: must not exceed actions[0].retry.max"), "{e}");
}
