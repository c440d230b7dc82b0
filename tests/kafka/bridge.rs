//! The bridge under test, in process (a task and a cancellation token) or as a separate
//! `hookbridge run` process that can be killed; and the config the tests share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{load, webhook, with_keys, KEY_SEQ};

/// Config of a bridge reading `topics` in `group` and writing results and dead letters to
/// the `responses` and `dead-letter` topics, built as a value ([`Setup::config`]).
pub struct Setup<'a> {
    pub brokers: &'a str,
    pub group: &'a str,
    /// Topic names or `^`-anchored regular expressions.
    pub topics: &'a [&'a str],
    /// Keys set in `source` (e.g. `retry_topic`).
    pub source: Value,
    /// librdkafka properties set beside the short session timeout every test uses.
    pub properties: Value,
    /// Keys set in `delivery` (beside private networks allowed and a 10 s drain).
    pub delivery: Value,
    /// `connections`, `actions` and `triggers`.
    pub body: Value,
    /// `server.listen`, or none.
    pub listen: Option<String>,
}

impl<'a> Setup<'a> {
    /// A bridge of `group` reading `changes`, with `delivery` and `body`, nothing else added.
    pub fn new(brokers: &'a str, group: &'a str, delivery: Value, body: Value) -> Setup<'a> {
        Setup {
            brokers,
            group,
            topics: &["changes"],
            source: Value::Null,
            properties: Value::Null,
            delivery,
            body,
            listen: None,
        }
    }

    /// [`Setup::new`] with [`webhook_body`] to `url`: what most tests run.
    pub fn webhook(brokers: &'a str, group: &'a str, delivery: Value, url: &str) -> Setup<'a> {
        Setup::new(brokers, group, delivery, webhook_body(url))
    }

    /// The config, as a value (JSON is YAML).
    pub fn config(&self) -> Value {
        let source = json!({
            "type": "kafka",
            "brokers": [self.brokers],
            "group_id": self.group,
            "topics": self.topics,
            "properties": with_keys(
                json!({"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}),
                self.properties.clone(),
            ),
        });
        let config = json!({
            "source": with_keys(source, self.source.clone()),
            "responses": {"type": "kafka", "topic": "responses"},
            "dead_letter": {"type": "kafka", "topic": "dead-letter"},
            "server": {"listen": self.listen},
            "delivery": with_keys(
                json!({"allow_private_networks": true, "shutdown_timeout": "10s"}),
                self.delivery.clone(),
            ),
        });
        with_keys(config, self.body.clone())
    }
}

/// A webhook action `hook` to `url` sending `{"key": ref, "seq": seq}` for every created
/// ticket.
pub fn webhook_body(url: &str) -> Value {
    webhook_body_from(url, "")
}

/// [`webhook_body`] with an `x-replica: replica` header on every request.
pub fn webhook_body_from(url: &str, replica: &str) -> Value {
    webhook(json!({"url": url, "headers": {"x-replica": replica}}), json!({"payload": KEY_SEQ}))
}

/// The bridge running in this process.
pub struct InProcess {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl InProcess {
    pub fn start(config: &Value) -> InProcess {
        // HOOKBRIDGE_TEST_LOG=debug shows the bridge's logs (tracing's EnvFilter syntax).
        if let Ok(filter) = std::env::var("HOOKBRIDGE_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let config = Arc::new(load(config));
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { hookbridge::run(config, token).await.map_err(|e| e.to_string()) });
        InProcess { stop, task }
    }

    /// SIGTERM, in effect: drains and commits, then returns.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the bridge stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// `hookbridge run` as a child process, its log in a file.
pub struct Process {
    child: Child,
    log: PathBuf,
    pub name: String,
}

impl Process {
    pub fn start(name: &str, dir: &Path, config: &Value) -> Process {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config.to_string()).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
            .args(["run", "--config"])
            .arg(&path)
            .env("HOOKBRIDGE_LOG", std::env::var("HOOKBRIDGE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("hookbridge starts");
        Process { child, log, name: name.to_string() }
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        crate::common::sigterm(&self.child);
    }

    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = crate::common::exit_within(&mut self.child, limit).await;
        status.unwrap_or_else(|| panic!("{} did not exit within {limit:?}:\n{}", self.name, self.log_tail()))
    }

    /// `http://<addr>` of the ops server, once the replica has logged it (started with
    /// `listen: "127.0.0.1:0"`, it picks its own port).
    pub async fn ops_base(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = crate::common::ops_addr_in(&log) {
                return format!("http://{addr}");
            }
            assert!(Instant::now() < deadline, "{} reported no ops address:\n{}", self.name, self.log_tail());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
