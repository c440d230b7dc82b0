//! Secrets never show, end to end on the binary: a config that uses every kind of secret
//! (chat webhook paths, Slack Workflow and Mattermost URLs, a token as the URL's user name,
//! credential query keys including one holding `)`, a chat webhook behind a proxy path,
//! secret headers, auth, a signing secret, `${ENV}` values, NATS credentials in a URL) runs
//! against real receivers, and every output is searched for them: results and dead letters
//! of a file-sink run, logs at debug, /metrics, `render`, and `check` on a config whose
//! fields have the wrong shape.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{event, read_lines, ClosedPort, Output, Receiver, Reply};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

/// Every secret the configs below hold, as the outputs must never show them.
const SECRETS: &[&str] = &[
    "SLACKHOOKSECRET",
    "WORKFLOWSECRET",
    "MATTERMOSTSECRET",
    "ghp_USERINFOSECRET",
    "PRIVATETOKENSECRET",
    "ACCESSTOKENSECRET",
    "PARENSECRET",
    "LEAKTAIL",
    "ROCKETRELAYSECRET",
    "GCHATKEYSECRET",
    "TEAMSSIGSECRET",
    "NETERRSECRET",
    "CREDHEADERSECRET",
    "APIKEYENVSECRET",
    "COOKIESECRET",
    "AUTHTOKENSECRET",
    "BASICPASSSECRET",
    "BEARERSECRET",
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// A config that uses every kind of secret, on a followed events file in `dir`, delivering
/// to the receiver on `port` (and to the closed port `closed`).
fn config(dir: &std::path::Path, port: u16, closed: u16) -> Value {
    let at = |rest: &str| format!("http://127.0.0.1:{port}{rest}");
    let chat = |name: &str, kind: &str| json!({"name": name, "type": kind, "connection": name, "message": "Ticket $this->ref$"});
    let hook =
        |name: &str, payload: &str| json!({"name": name, "type": "webhook", "connection": name, "payload": payload});
    json!({
        "source": {"type": "file", "path": dir.join("events.jsonl"), "follow": true},
        "responses": {"type": "file", "path": dir.join("responses.jsonl")},
        "dead_letter": {"type": "file", "path": dir.join("dead-letter.jsonl")},
        "server": {"listen": "127.0.0.1:0"},
        "delivery": {
            "allow_private_networks": true,
            "shutdown_timeout": "5s",
            "retry": {"max_attempts": 2, "initial": "50ms", "max": "100ms"},
        },
        "connections": {
            "slack": {"url": at("/services/T0/B0/SLACKHOOKSECRET")},
            "workflow": {"url": at("/triggers/T0/1234/WORKFLOWSECRET")},
            "mattermost": {"url": at("/hooks/MATTERMOSTSECRET")},
            "userinfo": {"url": format!("http://ghp_USERINFOSECRET@127.0.0.1:{port}/api")},
            "query": {"url": at("/api?private_token=PRIVATETOKENSECRET&access-token=ACCESSTOKENSECRET&page=2&token=PARENSECRET)LEAKTAIL")},
            "relay": {"url": at("/relay/chat/ROCKETRELAYSECRET")},
            "gchat": {"url": at("/v1/spaces/AAA/messages?key=GCHATKEYSECRET&token=x")},
            "teams": {"url": at("/workflows/1/triggers/manual/paths/invoke?api-version=1&sig=TEAMSSIGSECRET")},
            "closed": {"url": format!("http://127.0.0.1:{closed}/x?token=NETERRSECRET")},
            "headers": {
                "url": at("/plain"),
                "headers": {
                    "X-Credentials": "CREDHEADERSECRET",
                    "X-Api-Key": "${SECRETS_T_APIKEY}",
                    "Cookie": "session=COOKIESECRET",
                    "X-Auth-Token": "AUTHTOKENSECRET",
                },
                "auth": {"type": "basic", "user": "rest", "password": {"env": "SECRETS_T_PASSWORD"}},
                "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
            "bearer": {"url": at("/bearer"), "auth": {"type": "bearer", "token": "BEARERSECRET"}},
        },
        "actions": [
            chat("slack", "slack"),
            hook("workflow", r#"{"ref": "$this->ref$"}"#),
            hook("mattermost", r#"{"text": "$this->ref$"}"#),
            hook("userinfo", "{}"),
            hook("query", "{}"),
            chat("relay", "rocketchat"),
            chat("gchat", "google_chat"),
            chat("teams", "teams"),
            hook("closed", "{}"),
            hook("headers", "{}"),
            hook("bearer", "{}"),
        ],
        "triggers": [{
            "name": "created", "on": "create", "class": "Ticket",
            "actions": ["slack", "workflow", "mattermost", "userinfo", "query", "relay", "gchat", "teams", "closed", "headers", "bearer"],
        }],
    })
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("SECRETS_T_APIKEY", "APIKEYENVSECRET")
        .env("SECRETS_T_PASSWORD", "BASICPASSSECRET")
        .env("HOOKBRIDGE_LOG", "debug");
    cmd
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_shows_a_secret() {
    // The Slack webhook answers an error body, so its delivery is a dead letter too.
    let rx = Receiver::start(|_, seen| {
        if seen.path.starts_with("/services/") {
            Reply::Status(400, vec![], "invalid_payload".into())
        } else {
            Reply::Status(200, vec![], "ok".into())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let closed = ClosedPort::new();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config(dir.path(), rx.addr.port(), closed.port).to_string()).unwrap();
    std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
    let event_path = dir.path().join("event.json");
    std::fs::write(&event_path, event("e-1", "1", json!({})).to_string()).unwrap();
    let config_arg = config_path.to_str().unwrap();

    // render and check
    let render =
        command(&["render", "--config", config_arg, "--event", event_path.to_str().unwrap()]).output().unwrap();
    assert!(render.status.success(), "{}", output_text(&render));
    let rendered = output_text(&render);
    assert_no_secret("render", &rendered);
    assert!(rendered.contains("\"url\": \"http://127.0.0.1:") && rendered.contains("***"), "{rendered}");
    let check = command(&["check", "--config", config_arg]).output().unwrap();
    assert!(check.status.success(), "{}", output_text(&check));
    assert_no_secret("check", &output_text(&check));

    // A run: results, dead letters, logs at debug, /metrics.
    let mut child =
        command(&["run", "--config", config_arg]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = Output::collect(child.stderr.take().unwrap());
    let base = stderr.ops_base(Duration::from_secs(20)).await;
    let mut events = std::fs::OpenOptions::new().append(true).open(dir.path().join("events.jsonl")).unwrap();
    writeln!(events, "{}", event("e-1", "1", json!({}))).unwrap();
    let responses = dir.path().join("responses.jsonl").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_lines(&responses).len() < 11 {
        assert!(Instant::now() < deadline, "only {} results", read_lines(&responses).len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    common::sigterm(&child);
    assert!(common::exit_within(&mut child, Duration::from_secs(15)).await.is_some(), "no exit after SIGTERM");
    let logs = format!("{}{}", stderr.finish(), output_text(&child.wait_with_output().unwrap()));
    let results = std::fs::read_to_string(&responses).unwrap();
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap_or_default();
    assert_no_secret("results", &results);
    assert_no_secret("dead letters", &dead);
    assert_no_secret("logs", &logs);
    assert_no_secret("/metrics", &metrics);

    // The secrets were really used, and the outputs say what happened.
    let seen = rx.seen();
    let headers = seen.iter().find(|s| s.path == "/plain").expect("headers connection reached");
    assert_eq!(headers.header("x-api-key"), Some("APIKEYENVSECRET"));
    assert!(headers.header("webhook-signature").is_some());
    assert!(seen.iter().any(|s| s.path.contains("PARENSECRET)LEAKTAIL")), "{seen:?}");
    let by_action = |name: &str| read_lines(&responses).into_iter().find(|r| r["action"] == name).unwrap();
    assert_eq!(by_action("relay")["request"]["url"], format!("http://127.0.0.1:{}/***", rx.addr.port()));
    assert_eq!(by_action("userinfo")["request"]["url"], format!("http://***@127.0.0.1:{}/api", rx.addr.port()));
    assert_eq!(by_action("slack")["error"]["reason"], "invalid_payload");
    assert_eq!(by_action("closed")["status"], "failed");
    let dead: Vec<Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(dead.iter().any(|d| d["action"] == "closed") && dead.iter().any(|d| d["action"] == "slack"), "{dead:?}");
    assert!(logs.contains("DEBUG"), "logs were at debug level");
}

#[test]
fn check_does_not_show_environment_values_in_fields_of_the_wrong_shape() {
    let yaml = r#"
delivery:
  timeout: "${SECRETS_T_SHAPE}"
  concurrency: "${SECRETS_T_SHAPE}"
  retry: "${SECRETS_T_SHAPE}"
  proxy: {url: "http://proxyuser:${SECRETS_T_SHAPE}@proxy.internal:3128/path"}
connections:
  c:
    url: "https://example.com/x"
    timeout: "${SECRETS_T_SHAPE}"
    auth: {type: bearer, token: "${SECRETS_T_SHAPE}", extra: 1}
  d:
    url: "${SECRETS_T_URL}"
actions: [{name: a, type: webhook, connection: c, payload: '{}', method: "${SECRETS_T_SHAPE}"}]
triggers: [{name: t, on: create, class: X, actions: [a]}]
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .env("SECRETS_T_SHAPE", "SHAPESECRET-9f8e7d")
        .env("SECRETS_T_URL", "ftp://u:URLSECRET@h/x")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("delivery.timeout") && text.contains("connections.c"), "{text}");
    for secret in ["SHAPESECRET", "9f8e7d", "URLSECRET"] {
        assert!(!text.contains(secret), "check shows {secret}:\n{text}");
    }
}

#[test]
fn nats_connection_errors_do_not_show_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let closed = ClosedPort::new();
    // Unreachable at start: retried (and logged) until startup_timeout ends the start.
    let config = json!({
        "source": {"type": "nats", "url": format!("nats://bridge:NATSPASSSECRET@127.0.0.1:{}", closed.port), "stream": "S"},
        "server": {"listen": null},
        "allow_no_triggers": true,
        "startup_timeout": "2s",
    });
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(BIN).args(["run", "--config", path.to_str().unwrap()]).output().unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot connect to nats://***:***@127.0.0.1"), "{text}");
    assert!(!text.contains("NATSPASSSECRET"), "{text}");
}
