//! The bridge under test, in process (a task and a cancellation token) or as a separate
//! `hookbridge run` process that can be killed; and the config the tests share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Config of a bridge reading `topic` in `group` and writing results and dead letters to
/// the `responses` and `dead-letter` topics.
pub struct Setup<'a> {
    pub brokers: &'a str,
    pub group: &'a str,
    pub topic: &'a str,
    /// Extra `delivery:` keys.
    pub delivery: &'a str,
    /// `connections:`, `actions:` and `triggers:` sections.
    pub body: String,
    /// `server.listen`, or none.
    pub listen: Option<String>,
}

impl Setup<'_> {
    pub fn yaml(&self) -> String {
        self.yaml_with("")
    }

    /// The config with more librdkafka properties (`key: "value"` lines, 4 spaces in).
    pub fn yaml_with(&self, properties: &str) -> String {
        self.yaml_full("", properties)
    }

    /// The config with more `source` keys (`key: value` lines, 2 spaces in) and more
    /// librdkafka properties (4 spaces in).
    pub fn yaml_full(&self, source: &str, properties: &str) -> String {
        let listen = self.listen.as_ref().map_or("null".to_string(), |l| format!("\"{l}\""));
        format!(
            "source:\n  type: kafka\n  brokers: [\"{brokers}\"]\n  group_id: {group}\n  topics: [{topic}]\n{source}  properties:\n    session.timeout.ms: \"6000\"\n    heartbeat.interval.ms: \"500\"\n{properties}responses: {{type: kafka, topic: responses}}\ndead_letter: {{type: kafka, topic: dead-letter}}\nserver: {{listen: {listen}}}\ndelivery: {{allow_private_networks: true, shutdown_timeout: 10s, {delivery}}}\n{body}",
            brokers = self.brokers,
            group = self.group,
            topic = self.topic,
            delivery = self.delivery,
            body = self.body,
        )
    }
}

/// A webhook action `hook` to `url` sending `{"key": ref, "seq": seq}` for every created
/// ticket.
pub fn webhook_body(url: &str) -> String {
    webhook_body_from(url, "")
}

/// [`webhook_body`] with an `x-replica: replica` header on every request.
pub fn webhook_body_from(url: &str, replica: &str) -> String {
    format!(
        "connections:\n  hook: {{url: \"{url}\", headers: {{x-replica: \"{replica}\"}}}}\nactions:\n  - {{name: hook, type: webhook, connection: hook, payload: '{{\"key\": \"$this->ref$\", \"seq\": \"$this->seq$\"}}'}}\ntriggers:\n  - {{name: created, on: create, class: Ticket, actions: [hook]}}\n"
    )
}

/// The bridge running in this process.
pub struct InProcess {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl InProcess {
    pub fn start(yaml: &str) -> InProcess {
        // HOOKBRIDGE_TEST_LOG=debug shows the bridge's logs (tracing's EnvFilter syntax).
        if let Ok(filter) = std::env::var("HOOKBRIDGE_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let config = Arc::new(hookbridge::Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")));
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
    pub fn start(name: &str, dir: &Path, yaml: &str) -> Process {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
            .args(["run", "--config"])
            .arg(&config)
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
