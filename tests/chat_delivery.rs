//! Chat actions against receivers that answer as the services do: Slack's `ok` and error
//! bodies, Teams Workflows' 202 with an empty body, Google Chat's JSON message, Rocket.Chat's
//! `{"success": true}`, and 429 with Retry-After — and the results a user reads.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{event, lines, Receiver, Reply, Run};
use serde_json::{json, Value};

#[tokio::test]
async fn each_service_answer_becomes_the_result_a_user_expects() {
    // Slack: the first message is accepted, the second hits a removed channel.
    let slack = Receiver::start(|n, _| {
        if n == 0 {
            Reply::Status(200, vec![("content-type", "text/html".into())], "ok".into())
        } else {
            Reply::Status(404, vec![], "channel_not_found".into())
        }
    })
    .await;
    // Teams Workflows: 202 Accepted, empty body.
    let teams = Receiver::start(|_, _| Reply::Status(202, vec![], String::new())).await;
    // Google Chat: rate limited once, then the created message.
    let gchat = Receiver::start(|n, _| {
        if n == 0 {
            Reply::Status(
                429,
                vec![("retry-after", "1".into())],
                r#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}"#.into(),
            )
        } else {
            Reply::Status(
                200,
                vec![("content-type", "application/json".into())],
                r#"{"name": "spaces/AAA/messages/BBB"}"#.into(),
            )
        }
    })
    .await;
    let rocket = Receiver::start(|_, _| Reply::Status(200, vec![], r#"{"success": true}"#.into())).await;
    let slack_bad_payload = Receiver::start(|_, _| Reply::Status(400, vec![], "invalid_blocks".into())).await;
    let run = Run::new();
    run.write_events(&lines(&[event("e1", "1", json!({})), event("e2", "2", json!({}))]));
    let config = run.config(
        json!({"retry": {"max_attempts": 3, "initial": "50ms", "max": "2s"}}),
        json!({
            "connections": {
                "slack": {"url": slack.url("/services/T000/B000/XXXXXXXXXXXXXXXX")},
                "slack-bad": {"url": slack_bad_payload.url("/services/T000/B001/YYYYYYYYYYYYYYYY")},
                "teams": {"url": teams.url("/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=SECRETSIG")},
                "gchat": {"url": gchat.url("/v1/spaces/AAA/messages?key=KEY&token=TOKEN")},
                "rocket": {"url": rocket.url("/hooks/5f3a9c1e/aZ3kL9pQ2wX8yV7bN4mR6tU1")},
            },
            "actions": [
                {"name": "slack", "type": "slack", "connection": "slack", "message": "Ticket $this->ref$"},
                {"name": "slack-bad", "type": "slack", "connection": "slack-bad", "message": "Ticket $this->ref$"},
                {"name": "teams", "type": "teams", "connection": "teams", "title": "$this->ref$", "message": "$this->title$"},
                {"name": "gchat", "type": "google_chat", "connection": "gchat", "message": "$this->ref$", "thread_key": "$this->ref$"},
                {"name": "rocket", "type": "rocketchat", "connection": "rocket", "message": "$this->ref$", "alias": "iTop"},
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["slack", "slack-bad", "teams", "gchat", "rocket"]}],
        }),
    );
    run.run(&config).await;
    let results = run.responses();
    let by: HashMap<(String, String), &Value> = results
        .iter()
        .map(|r| ((r["action"].as_str().unwrap().to_string(), r["event_id"].as_str().unwrap().to_string()), r))
        .collect();
    let r = |a: &str, e: &str| by[&(a.to_string(), e.to_string())];

    // Slack: `ok` is delivered; an error body is a final failure carrying Slack's code.
    let delivered = ["e1", "e2"].iter().filter(|e| r("slack", e)["status"] == "delivered").count();
    assert_eq!(delivered, 1);
    let failed = ["e1", "e2"].iter().map(|e| r("slack", e)).find(|x| x["status"] == "failed").unwrap();
    assert_eq!(failed["error"]["reason"], "channel_not_found");
    assert_eq!(failed["http_status"], 404);
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["request"]["url"], format!("http://{}/***", slack.addr));
    assert_eq!(r("slack-bad", "e1")["error"]["reason"], "invalid_blocks");
    assert!(slack.seen().iter().all(|s| s.json()["blocks"].is_array()));

    // Teams Workflows: 202 with an empty body is success.
    for e in ["e1", "e2"] {
        assert_eq!(r("teams", e)["status"], "delivered");
        assert_eq!(r("teams", e)["http_status"], 202);
        assert!(!r("teams", e)["request"]["url"].as_str().unwrap().contains("SECRETSIG"));
    }
    assert_eq!(teams.seen()[0].json()["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");

    // Google Chat: 429 with Retry-After waits, then delivers.
    let gseen = gchat.seen();
    assert_eq!(gseen.len(), 3, "one 429, then both messages");
    assert!(gseen[1].at - gseen[0].at >= Duration::from_secs(1) || gseen[2].at - gseen[0].at >= Duration::from_secs(1));
    assert!(gseen.iter().all(|s| s.path.contains("messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")));
    let retried = ["e1", "e2"].iter().map(|e| r("gchat", e)).find(|x| x["attempts"] == 2).unwrap();
    assert_eq!(retried["status"], "delivered");
    assert!(!retried["request"]["url"].as_str().unwrap().contains("TOKEN"));

    // Rocket.Chat.
    assert_eq!(r("rocket", "e1")["status"], "delivered");
    assert_eq!(rocket.seen()[0].json()["alias"], "iTop");
    assert_eq!(r("rocket", "e1")["request"]["url"], format!("http://{}/***", rocket.addr));

    // Final failures are dead-lettered with the action.
    let dl = run.dead_letters();
    assert_eq!(dl.len(), 3, "{dl:#?}");
    assert!(dl.iter().all(|d| d["action"] == "slack" || d["action"] == "slack-bad"));
}
