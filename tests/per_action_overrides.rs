//! Per-action `retry` and per-connection `allow_private_network`, as a user configures them
//! for one on-premises iTop: what a real receiver saw and the results a user reads.

mod common;

use common::{event, lines, read_config, Receiver, Reply, Run};
use serde_json::json;

#[tokio::test]
async fn an_action_retries_by_its_own_policy() {
    let rx = Receiver::start(|_, _| Reply::Status(503, vec![], "busy".into())).await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({}))]));
    let config = run.config(
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
    run.run(&config).await;
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
    let url = rx.url("");
    let config = run.files_config(
        json!({"retry": {"max_attempts": 1}}),
        json!({
            "connections": {
                "on-prem": {"url": format!("{url}/itop"), "allow_private_network": true},
                "other": {"url": format!("{url}/other")},
            },
            "actions": [
                {"name": "on-prem", "type": "webhook", "connection": "on-prem"},
                {"name": "other", "type": "webhook", "connection": "other"},
            ],
            "triggers": [{"name": "t", "on": "create", "class": "Ticket", "actions": ["on-prem", "other"]}],
        }),
    );
    run.run(&config).await;
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
    let config = json!({
        "connections": {"api": {"url": "https://api.example.com"}},
        "actions": [{
            "name": "a", "type": "webhook", "connection": "api",
            "retry": {"max_attempts": 0, "initial": "2s", "max": "1s"},
        }],
    });
    let e = read_config(&config).unwrap_err().to_string();
    assert!(e.contains("actions[0].retry.max_attempts: must be at least 1"), "{e}");
    assert!(e.contains("actions[0].retry.initial: must not exceed actions[0].retry.max"), "{e}");
}
