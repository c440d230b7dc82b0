//! The harness every suite includes: the HTTP receiver ([`Receiver`], real, on port 0, records
//! what arrived and answers as told), event builders, and helpers to run the bridge over a
//! JSON Lines file, a bridge process's output and the ops address it reports ([`Output`]),
//! a port nothing listens on ([`ClosedPort`]), and a child's stop ([`sigterm`], [`exit_within`]).
#![allow(dead_code)]

mod child;
mod receiver;

use std::sync::Arc;

use serde_json::Value;

// Each suite uses a part of the harness.
#[allow(unused_imports)]
pub use child::{exit_within, ops_addr_in, sigterm, ClosedPort, Output};
#[allow(unused_imports)]
pub use receiver::{Receiver, Reply, Seen};

/// A minimal valid event for `class::key`.
pub fn event(id: &str, key: &str, extra: Value) -> Value {
    let mut e = serde_json::json!({
        "id": id, "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": key, "object": {"ref": format!("R-{key}"), "title": "t"},
        "source": {"name": "iTop", "url": "https://itop.example.com/"}
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
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

    /// The config header every test shares: file source, file outputs, private networks allowed.
    pub fn header(&self, delivery: &str) -> String {
        format!(
            "source: {{type: file, path: {events}}}\nresponses: {{type: file, path: {out}}}\ndead_letter: {{type: file, path: {dl}}}\nserver: {{listen: null}}\ndelivery: {{allow_private_networks: true, {delivery}}}\n",
            events = self.path("events.jsonl"),
            out = self.path("responses.jsonl"),
            dl = self.path("dead-letter.jsonl"),
        )
    }

    /// A whole config built as a value, never spliced together as text: the header above
    /// (file source and outputs, no ops server, private networks allowed), with `delivery`'s
    /// keys set in its `delivery` and `rest`'s (connections, actions, triggers…) beside it.
    /// JSON is YAML, so the result is given to [`Run::run`] as it is.
    pub fn config(&self, delivery: Value, rest: Value) -> String {
        let mut config = serde_json::json!({
            "source": {"type": "file", "path": self.path("events.jsonl")},
            "responses": {"type": "file", "path": self.path("responses.jsonl")},
            "dead_letter": {"type": "file", "path": self.path("dead-letter.jsonl")},
            "server": {"listen": null},
            "delivery": {"allow_private_networks": true},
        });
        for (key, value) in delivery.as_object().into_iter().flatten() {
            config["delivery"][key] = value.clone();
        }
        for (key, value) in rest.as_object().into_iter().flatten() {
            config[key] = value.clone();
        }
        config.to_string()
    }

    /// Runs the bridge to the end of the events file.
    pub async fn run(&self, yaml: &str) {
        let config = Arc::new(hookbridge::Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")));
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
