//! Operations, end to end on the binary: /metrics passes promtool, health and readiness,
//! graceful shutdown on SIGTERM, JSON logs without secrets, and the README's quickstart.

mod common;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{event, http_get, wait_status, ClosedPort, Output, Receiver, Reply};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    common::exit_within(child, within).await.unwrap_or_else(|| panic!("process did not exit within {within:?}"))
}

struct Bridge {
    dir: tempfile::TempDir,
    child: Child,
    stderr: Output,
    base: String,
}

/// Starts the binary on a followed events file with secrets in its config, and waits for
/// the address of its ops server (on port 0: the child picks it).
async fn start_bridge(receiver_url: &str, slack_url: &str, extra_env: &[(&str, &str)]) -> Bridge {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    // JSON is YAML: the config is built as a value, never spliced together as text.
    let config = json!({
        "source": {"type": "file", "path": events, "follow": true},
        "responses": {"type": "file", "path": dir.path().join("responses.jsonl")},
        "dead_letter": {"type": "file", "path": dir.path().join("dead-letter.jsonl")},
        "server": {"listen": "127.0.0.1:0"},
        "delivery": {
            "allow_private_networks": true,
            "shutdown_timeout": "5s",
            "retry": {"max_attempts": 2, "initial": "50ms", "max": "100ms"},
        },
        "connections": {
            "api": {
                "url": receiver_url,
                "auth": {"type": "basic", "user": "rest", "password": {"env": "OPS_TEST_PASSWORD"}},
                "headers": {"x-api-key": "${OPS_TEST_KEY}"},
            },
            "slack": {"url": slack_url},
        },
        "actions": [
            {"name": "api", "type": "webhook", "connection": "api", "payload": r#"{"ref": "$this->ref$"}"#},
            {"name": "chat", "type": "slack", "connection": "slack", "message": "Ticket $this->ref$"},
        ],
        "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["api", "chat"]}],
    });
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config", path.to_str().unwrap(), "--log-format", "json"])
        .env("OPS_TEST_PASSWORD", "pw-Sup3rSecret")
        .env("OPS_TEST_KEY", "key-T0pSecret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = Output::collect(child.stderr.take().unwrap());
    let base = stderr.ops_base(Duration::from_secs(20)).await;
    Bridge { dir, child, stderr, base }
}

impl Bridge {
    fn append(&self, events: &[Value]) {
        let mut f = std::fs::OpenOptions::new().append(true).open(self.dir.path().join("events.jsonl")).unwrap();
        for e in events {
            writeln!(f, "{e}").unwrap();
        }
    }
    fn responses(&self) -> Vec<Value> {
        common::read_lines(&self.dir.path().join("responses.jsonl").display().to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_health_and_graceful_shutdown() {
    let rx = Receiver::start(|n, _| {
        if n % 3 == 0 {
            Reply::Status(500, vec![], "x".into())
        } else {
            Reply::Status(200, vec![], "ok".into())
        }
    })
    .await;
    let slack = Receiver::start(|_, _| Reply::Status(404, vec![], "channel_not_found".into())).await;
    let mut bridge = start_bridge(&rx.url("/hook"), &slack.url("/services/T000/B000/XXXXSECRETTOKEN"), &[]).await;
    wait_status(&format!("{}/readyz", bridge.base), 200, Duration::from_secs(20)).await;
    assert_eq!(http_get(&format!("{}/healthz", bridge.base)).await.unwrap().0, 200);
    bridge.append(&(0..10).map(|i| event(&format!("e{i}"), &i.to_string(), json!({}))).collect::<Vec<_>>());
    bridge.append(&[json!({"not": "an event"})]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge.responses().len() < 20 {
        assert!(Instant::now() < deadline, "only {} results", bridge.responses().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, text) = http_get(&format!("{}/metrics", bridge.base)).await.unwrap();
    assert_eq!(status, 200);
    for name in [
        "hookbridge_events_received_total",
        "hookbridge_events_invalid_total{reason=\"schema_violation\"} 1",
        "hookbridge_trigger_matches_total",
        "hookbridge_deliveries_total",
        "hookbridge_attempts_total",
        "hookbridge_delivery_duration_seconds_bucket",
        "hookbridge_retries_scheduled_total",
        "hookbridge_deliveries_in_flight",
        "hookbridge_dead_letters_total",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(!text.contains("127.0.0.1"), "no URL in a label");
    let metrics_file = bridge.dir.path().join("metrics.txt");
    std::fs::write(&metrics_file, &text).unwrap();
    let promtool =
        Command::new("promtool").args(["check", "metrics"]).stdin(std::fs::File::open(&metrics_file).unwrap()).output();
    let promtool = promtool.expect("promtool is installed by scripts/test-deps.sh");
    assert!(
        promtool.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    // A followed file never ends: the bridge runs until the signal, then drains and exits 0
    // (killed by the signal instead, it would have no exit code), its results all written.
    assert!(bridge.child.try_wait().unwrap().is_none(), "exited before SIGTERM");
    common::sigterm(&bridge.child);
    let status = wait_exit(&mut bridge.child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert_eq!(bridge.responses().len(), 20, "{:#?}", bridge.responses());
    let logs = bridge.stderr.finish();
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_logs_results_or_render() {
    let rx = Receiver::start(|_, _| Reply::Status(503, vec![], "down".into())).await;
    let closed = ClosedPort::new();
    let slack_url = format!("http://127.0.0.1:{}/services/T000/B000/XXXXSECRETTOKEN", closed.port);
    let mut bridge = start_bridge(&rx.url("/hook"), &slack_url, &[("HOOKBRIDGE_LOG", "debug")]).await;
    wait_status(&format!("{}/readyz", bridge.base), 200, Duration::from_secs(20)).await;
    bridge.append(&[event("e1", "1", json!({}))]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge.responses().len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    common::sigterm(&bridge.child);
    wait_exit(&mut bridge.child, Duration::from_secs(10)).await;
    let logs = bridge.stderr.finish();
    let out = bridge.child.wait_with_output().unwrap();
    let everything = format!(
        "{}{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        logs,
        std::fs::read_to_string(bridge.dir.path().join("responses.jsonl")).unwrap(),
        std::fs::read_to_string(bridge.dir.path().join("dead-letter.jsonl")).unwrap_or_default(),
    );
    // The receiver did get the credentials: they were really used.
    let seen = rx.seen();
    assert!(seen[0].header("authorization").unwrap().starts_with("Basic "));
    assert_eq!(seen[0].header("x-api-key"), Some("key-T0pSecret"));
    let basic = seen[0].header("authorization").unwrap().trim_start_matches("Basic ").to_string();
    for secret in ["pw-Sup3rSecret", "key-T0pSecret", "XXXXSECRETTOKEN", basic.as_str()] {
        assert!(!everything.contains(secret), "secret {secret} leaked:\n{everything}");
    }
    assert!(everything.contains(&format!(":{}/***", closed.port)), "the Slack URL is shown as its host only");
    let render = Command::new(BIN)
        .args(["render", "--config", bridge.dir.path().join("config.yaml").to_str().unwrap(), "--event"])
        .arg({
            let p = bridge.dir.path().join("one.json");
            std::fs::write(&p, event("e1", "1", json!({})).to_string()).unwrap();
            p
        })
        .env("OPS_TEST_PASSWORD", "pw-Sup3rSecret")
        .env("OPS_TEST_KEY", "key-T0pSecret")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&render.stdout);
    assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
    for secret in ["pw-Sup3rSecret", "key-T0pSecret", "XXXXSECRETTOKEN", basic.as_str()] {
        assert!(!shown.contains(secret), "render leaked {secret}:\n{shown}");
    }
}

#[test]
fn quickstart_runs_as_written() {
    let out = Command::new(BIN)
        .args(["run", "--config", "config/quickstart.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let dry: Vec<&Value> = lines.iter().filter(|l| l["status"] == "dry_run").collect();
    assert!(dry.len() >= 5, "{lines:#?}");
    assert!(dry.iter().all(|l| l["request"]["body"].is_string()));
    assert_eq!(lines.iter().filter(|l| l["kind"] == "dead_letter").count(), 1);
    let schema: Value = serde_json::from_str(hookbridge::schema::RESPONSE).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for l in &lines {
        let errors: Vec<String> = validator.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{l}: {errors:?}");
    }
}

#[test]
fn check_reports_every_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"
connections:
  c: {url: "https://example.com/hook"}
actions:
  - {name: a, type: webhook, connection: nope, payload: "{'a': 1}"}
triggers:
  - {name: t, on: log_update, class: UserRequest, actions: [a]}
  - {name: s, on: state_enter, class: UserRequest, actions: [a], condition: "object.x =="}
"#,
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "actions[0].connection: no connection named \"nope\"",
        "actions[0].payload: line 1 column 2: key must be a string (single quotes are not JSON)",
        "triggers[0].actions[0]: a log_update trigger is reserved for e-mail replies",
        "triggers[1].state: required for on: state_enter",
        "triggers[1].condition: invalid CEL expression",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in\n{err}");
    }
    let ok = Command::new(BIN)
        .args(["check", "--config", "config/quickstart.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    for which in ["config", "event", "response"] {
        let s = Command::new(BIN).args(["schema", which]).output().unwrap();
        let v: Value = serde_json::from_slice(&s.stdout).unwrap();
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_prints_the_answer() {
    let rx =
        Receiver::start(|_, _| Reply::Status(201, vec![("x-remote-id", "77".into())], r#"{"created": true}"#.into()))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    let config_value = json!({
        "delivery": {"allow_private_networks": true},
        "connections": {"c": {"url": rx.url("/x")}},
        "actions": [{
            "name": "a", "type": "webhook", "connection": "c", "payload": r#"{"ref": "$this->ref$"}"#,
            "callback": {"when": "success", "fields": {"remote_id": r#"response.headers["x-remote-id"]"#}},
        }],
        "triggers": [{"name": "t", "on": "update", "class": "Ticket", "actions": ["a"]}],
    });
    std::fs::write(&config, config_value.to_string()).unwrap();
    let ev = dir.path().join("e.json");
    // Mentions in the event do not change the webhook-id of a trigger that is not a mention
    // trigger: `send` sends what `run` would, with the same id.
    std::fs::write(
        &ev,
        event("e9", "9", json!({"mentions": [{"class": "Person", "id": 3, "name": "Ann"}]})).to_string(),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["send", "--config", config.to_str().unwrap(), "--event", ev.to_str().unwrap(), "--action", "a"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"]["status"], 201);
    assert_eq!(v["result"]["status"], "delivered");
    assert_eq!(v["callback_update"]["fields"]["remote_id"], "77");
    assert_eq!(rx.seen()[0].json()["ref"], "R-9");
    assert_eq!(
        rx.seen()[0].header("webhook-id"),
        Some(hookbridge::internals::request::webhook_id("e9", "a", None).as_str())
    );
    assert!(v["result"].get("mention").is_none(), "{}", v["result"]);
}

#[test]
fn render_prints_exact_requests_with_escaping_that_round_trips() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut ev: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/examples/ticket-assigned.json")).unwrap())
            .unwrap();
    ev["object"]["ref"] = json!("R 1/2");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.json");
    std::fs::write(&path, ev.to_string()).unwrap();
    let out = Command::new(BIN)
        .args([
            "render",
            "--config",
            "config/quickstart.yaml",
            "--event",
            path.to_str().unwrap(),
            "--action",
            "ticket-webhook",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v["matched"][0];
    assert_eq!(m["action"], "ticket-webhook");
    let req = &m["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["url"], "https://api.example.com/hooks/tickets/R%201%2F2");
    assert_eq!(req["headers"]["authorization"], "***");
    assert_eq!(req["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["title"], ev["object"]["title"], "quotes, newline and non-ASCII survive");
    assert!(body["title"].as_str().unwrap().contains('\n'));
    assert_eq!(body["ref"], "R 1/2");
}
