//! Start-up, on the binary: a config without triggers is refused by `run` (and warned about
//! by `check`); a broker unreachable at start means "alive, not ready, retrying" for both
//! sources, until the broker comes or `startup_timeout` ends it; every log line, fatal
//! errors included, is one flat JSON object with `--log-format json`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_status, wait_status, with_keys, ClosedPort, Output};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

/// A running `hookbridge run` and its log.
struct Running {
    child: Child,
    stderr: Output,
}

/// Writes `config` as `config.yaml` in `dir` and starts `hookbridge run` on it with JSON logs.
fn start(dir: &Path, config: &Value) -> Running {
    let path = dir.join("config.yaml");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap(), "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Output::collect(child.stderr.take().unwrap());
    Running { child, stderr }
}

/// The client port a nats-server started with `-p -1` chose and reported.
async fn reported_nats_port(log: &Output) -> u16 {
    const LISTENING: &str = "Listening for client connections on ";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = log.text();
        if let Some(addr) = text.lines().find_map(|l| l.split(LISTENING).nth(1)) {
            return addr.trim().rsplit(':').next().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "nats-server reported no port:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the exit; returns the exit code and the log lines, each checked to be one flat
/// JSON object (fields beside `message`, no nested `fields`).
async fn finish(run: Running, within: Duration) -> (Option<i32>, Vec<Value>) {
    let Running { mut child, mut stderr } = run;
    let Some(status) = common::exit_within(&mut child, within).await else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("hookbridge did not exit within {within:?}");
    };
    let text = stderr.finish();
    let lines = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
            assert!(v.get("fields").is_none(), "nested fields: {l}");
            assert!(v.get("level").is_some() && v.get("message").is_some(), "{l}");
            v
        })
        .collect();
    (status.code(), lines)
}

/// Results and dead letters as files in `dir`, the ops server on a port of its choosing,
/// `source` read, and no triggers: the bridge only has to start.
fn starting(dir: &Path, source: Value) -> Value {
    json!({
        "source": source,
        "responses": {"type": "file", "path": dir.join("responses.jsonl")},
        "dead_letter": {"type": "file", "path": dir.join("dead-letter.jsonl")},
        "server": {"listen": "127.0.0.1:0"},
        "delivery": {"shutdown_timeout": "2s"},
        "allow_no_triggers": true,
    })
}

/// A file source in `dir`, the outputs beside it, no ops server, and no triggers.
fn no_triggers(dir: &Path) -> Value {
    json!({
        "source": {"type": "file", "path": dir.join("events.jsonl")},
        "responses": {"type": "file", "path": dir.join("responses.jsonl")},
        "dead_letter": {"type": "file", "path": dir.join("dead-letter.jsonl")},
        "server": {"listen": null},
    })
}

#[tokio::test]
async fn run_refuses_a_config_without_triggers_and_check_warns() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.jsonl"), "{\"not\": \"read\"}\n").unwrap();
    let (code, logs) = finish(start(dir.path(), &no_triggers(dir.path())), Duration::from_secs(10)).await;
    assert_eq!(code, Some(2), "{logs:?}");
    let refusal = logs.iter().find(|l| l["level"] == "ERROR").expect("an error line");
    assert!(refusal["message"].as_str().unwrap().contains("allow_no_triggers"), "{refusal}");
    assert!(refusal["config"].as_str().unwrap().ends_with("config.yaml"), "flat field: {refusal}");
    // Nothing was read: the event is still there for a config with triggers.
    assert!(!dir.path().join("dead-letter.jsonl").exists());

    let out = Command::new(BIN)
        .args(["check", "--config", dir.path().join("config.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: no triggers"), "{stderr}");

    // Meant: runs, reads the file, exits 0.
    let meant = with_keys(no_triggers(dir.path()), json!({"allow_no_triggers": true}));
    let (code, logs) = finish(start(dir.path(), &meant), Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{logs:?}");
    assert!(dir.path().join("dead-letter.jsonl").exists(), "the invalid line was read and dead-lettered");
}

#[tokio::test]
async fn a_fatal_error_is_a_json_log_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
    // The ops port is taken: the start fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = with_keys(
        no_triggers(dir.path()),
        json!({"server": {"listen": taken.local_addr().unwrap()}, "allow_no_triggers": true}),
    );
    let (code, logs) = finish(start(dir.path(), &config), Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "{logs:?}");
    let fatal = logs.iter().find(|l| l["message"] == "fatal error").expect("a fatal error line");
    assert_eq!(fatal["level"], "ERROR");
    assert!(fatal["error"].as_str().unwrap().contains("server.listen"), "{fatal}");
}

/// A NATS server down at start: the process stays up, `/healthz` 200, `/readyz` 503, and
/// retries; once nats-server (JetStream) and the stream exist, it becomes ready.
#[tokio::test(flavor = "multi_thread")]
async fn nats_unreachable_at_start_is_not_ready_then_ready() {
    let dir = tempfile::tempdir().unwrap();
    // The stream exists in the server's store before the bridge starts (a missing stream is
    // the operator's to fix and ends the start at once): create it, then stop the server.
    // The first server picks its port (`-p -1`) and reports it; the second takes it again.
    let store = tempfile::tempdir().unwrap();
    let spawn_server = |port: &str| {
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server is installed by scripts/test-deps.sh")
    };
    let mut first = spawn_server("-1");
    let first_log = Output::collect(first.stderr.take().unwrap());
    let nats_port = reported_nats_port(&first_log).await;
    let connect = || async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match async_nats::connect(format!("nats://127.0.0.1:{nats_port}")).await {
                Ok(c) => break c,
                Err(e) => assert!(Instant::now() < deadline, "nats-server: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let js = async_nats::jetstream::new(connect().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "CHANGES".into(),
        subjects: vec!["changes.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    drop(js);
    let _ = first.kill();
    let _ = first.wait();
    let source = json!({
        "type": "nats", "url": format!("nats://127.0.0.1:{nats_port}"), "stream": "CHANGES",
        "subjects": ["changes.>"], "consumer": "hookbridge",
    });
    let run = start(dir.path(), &starting(dir.path(), source));
    let base = run.stderr.ops_base(Duration::from_secs(20)).await;
    wait_status(&format!("{base}/healthz"), 200, Duration::from_secs(20)).await;
    assert_eq!(http_status(&format!("{base}/readyz")).await, Some(503));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_status(&format!("{base}/healthz")).await, Some(200), "still alive after 2 s");
    assert_eq!(http_status(&format!("{base}/readyz")).await, Some(503));

    let mut server = spawn_server(&nats_port.to_string());
    let _server_log = Output::collect(server.stderr.take().unwrap());
    // Retries back off to at most 30 s; the first ones are at 0.5, 1, 2, 4 s.
    wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(40)).await;
    common::sigterm(&run.child);
    let (code, logs) = finish(run, Duration::from_secs(15)).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, Some(0), "{logs:?}");
    let retries = logs.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.contains("retrying"))).count();
    assert!(retries >= 2, "{logs:?}");
    assert!(logs.iter().any(|l| l["attempt"].as_u64() >= Some(2)), "attempt numbers are logged");
}

/// `startup_timeout` ends a start that never gets ready, for NATS and for Kafka alike, with
/// exit code 1 and the reason in a JSON log line; librdkafka's complaints about the
/// unreachable broker are rate-limited.
#[tokio::test(flavor = "multi_thread")]
async fn startup_timeout_ends_a_start_that_never_gets_ready() {
    // Nothing listens on the brokers' ports, and nothing can start listening there meanwhile.
    let (nats, kafka) = (ClosedPort::new(), ClosedPort::new());
    for (name, source) in [
        (
            "nats",
            json!({"type": "nats", "url": format!("nats://127.0.0.1:{}", nats.port), "stream": "CHANGES", "consumer": "hookbridge"}),
        ),
        (
            "kafka",
            json!({"type": "kafka", "brokers": [format!("127.0.0.1:{}", kafka.port)], "group_id": "g", "topics": ["changes"]}),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = with_keys(starting(dir.path(), source), json!({"startup_timeout": "4s"}));
        let started = Instant::now();
        let run = start(dir.path(), &config);
        let base = run.stderr.ops_base(Duration::from_secs(10)).await;
        wait_status(&format!("{base}/healthz"), 200, Duration::from_secs(10)).await;
        assert_eq!(http_status(&format!("{base}/readyz")).await, Some(503), "{name}");
        let (code, logs) = finish(run, Duration::from_secs(30)).await;
        assert_eq!(code, Some(1), "{name}: {logs:?}");
        assert!(started.elapsed() >= Duration::from_secs(4), "{name}: exited before startup_timeout");
        let fatal = logs.iter().find(|l| l["message"] == "fatal error").expect("a fatal error line");
        assert!(fatal["error"].as_str().unwrap().contains("startup_timeout"), "{name}: {fatal}");
        let librdkafka = logs.iter().filter(|l| l["target"] == "hookbridge::kafka::librdkafka").count();
        assert!(librdkafka <= 12, "{name}: {librdkafka} librdkafka lines in 4 s: {logs:?}");
    }
}
