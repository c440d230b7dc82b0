//! The harness every suite includes: the HTTP receiver ([`Receiver`], real, on port 0, records
//! what arrived and answers as told), event builders, configs built as values ([`with_keys`],
//! [`webhook`], [`Run::config`]: JSON is YAML, so their text is a config file), and helpers
//! to run the bridge over a JSON Lines file, a bridge process's output and the ops address it
//! reports ([`Output`]), its ops server's answers ([`http_get`], [`wait_status`]), a port
//! nothing listens on ([`ClosedPort`]), and a child's stop ([`sigterm`], [`exit_within`]).
#![allow(dead_code)]

mod child;
mod http;
mod receiver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

// Each suite uses a part of the harness.
#[allow(unused_imports)]
pub use child::{exit_within, ops_addr_in, sigterm, ClosedPort, Output};
#[allow(unused_imports)]
pub use http::{http_get, http_status, wait_status};
#[allow(unused_imports)]
pub use receiver::{Receiver, Reply, Seen};

/// `{"key": ref, "seq": seq}`: the payload of the ordering tests, which [`Seen`] reads out.
pub const KEY_SEQ: &str = r#"{"key": "$this->ref$", "seq": "$this->seq$"}"#;

/// `base` (an object) with each key of `keys` (an object, or null for none) set in it,
/// replacing what `base` had there: the one way the suites add to a part of a config.
pub fn with_keys(mut base: Value, keys: Value) -> Value {
    match keys {
        Value::Object(keys) => {
            for (key, value) in keys {
                base[key] = value;
            }
        }
        Value::Null => {}
        other => panic!("keys to set are an object, not {other}"),
    }
    base
}

/// One webhook action `hook` on the connection `hook` (`connection`), with `action`'s keys
/// added, fired by every created Ticket: the `connections`, `actions` and `triggers` of a
/// config.
pub fn webhook(connection: Value, action: Value) -> Value {
    json!({
        "connections": {"hook": connection},
        "actions": [with_keys(json!({"name": "hook", "type": "webhook", "connection": "hook"}), action)],
        "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": ["hook"]}],
    })
}

/// `delivery` keys for quick retries.
pub fn fast_retry() -> Value {
    json!({"retry": {"max_attempts": 4, "initial": "50ms", "max": "2s", "jitter": 0.1}})
}

/// Reads a config built as a value as `run` and `check` read a config file: JSON is YAML.
pub fn read_config(config: &Value) -> Result<hookbridge::Config, hookbridge::ConfigError> {
    hookbridge::Config::from_yaml(&config.to_string())
}

/// [`read_config`] of a config that must be valid.
pub fn load(config: &Value) -> hookbridge::Config {
    read_config(config).unwrap_or_else(|e| panic!("{e}\n{config:#}"))
}

/// Waits until `cond` holds, checking every 20 ms; after `limit`, panics naming `what`, with
/// `context()` (a log, say).
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal valid event for `class::key`.
pub fn event(id: &str, key: &str, extra: Value) -> Value {
    let e = json!({
        "id": id, "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": key, "object": {"ref": format!("R-{key}"), "title": "t"},
        "source": {"name": "iTop", "url": "https://itop.example.com/"}
    });
    with_keys(e, extra)
}

/// A temporary directory with an events file and an output file for results and dead letters.
pub struct Run {
    pub dir: tempfile::TempDir,
}

impl Run {
    pub fn new() -> Run {
        Run { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes raw lines as the events file.
    pub fn write_events(&self, lines: &[Vec<u8>]) {
        let mut all = Vec::new();
        for l in lines {
            all.extend_from_slice(l);
            all.push(b'\n');
        }
        std::fs::write(self.path("events.jsonl"), all).unwrap();
    }

    /// A config built as a value, never spliced together as text: the file source and
    /// outputs in the run's directory and no ops server, with `delivery` as given and
    /// `rest`'s keys (connections, actions, triggers…) beside them. JSON is YAML, so its text
    /// is what `--config` and [`Config::from_yaml`](hookbridge::Config::from_yaml) read.
    pub fn files_config(&self, delivery: Value, rest: Value) -> Value {
        let config = json!({
            "source": {"type": "file", "path": self.path("events.jsonl")},
            "responses": {"type": "file", "path": self.path("responses.jsonl")},
            "dead_letter": {"type": "file", "path": self.path("dead-letter.jsonl")},
            "server": {"listen": null},
            "delivery": delivery,
        });
        with_keys(config, rest)
    }

    /// The config most tests share: [`Run::files_config`] with private networks allowed (the
    /// receivers are on loopback) and `delivery`'s keys set beside that.
    pub fn config(&self, delivery: Value, rest: Value) -> Value {
        self.files_config(with_keys(json!({"allow_private_networks": true}), delivery), rest)
    }

    /// Writes `config` as `config.yaml` in the run's directory, for the binary's `--config`;
    /// returns its path.
    pub fn write_config(&self, config: &Value) -> String {
        let path = self.path("config.yaml");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    /// Runs the bridge on `config` to the end of the events file.
    pub async fn run(&self, config: &Value) {
        let config = Arc::new(load(config));
        hookbridge::run(config, tokio_util::sync::CancellationToken::new()).await.unwrap();
    }

    pub fn responses(&self) -> Vec<Value> {
        read_lines(&self.path("responses.jsonl"))
    }

    pub fn dead_letters(&self) -> Vec<Value> {
        read_lines(&self.path("dead-letter.jsonl"))
    }
}

pub fn read_lines(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn lines(events: &[Value]) -> Vec<Vec<u8>> {
    events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect()
}
