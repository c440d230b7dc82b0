//! Test harness: real HTTP receivers on port 0 that record what arrived and answer as told,
//! and helpers to run the bridge over a JSON Lines file.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the receiver answers.
pub enum Reply {
    Status(u16, Vec<(&'static str, String)>, String),
    /// Never answers.
    Hang,
}

type Behaviour = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Behaviour,
}

/// A real HTTP server on 127.0.0.1:0.
pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    /// Starts a receiver whose answer to the n-th request (0-based) is `behaviour(n, request)`.
    pub async fn start(behaviour: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Receiver {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState { seen: seen.clone(), behaviour: Arc::new(behaviour) };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, seen }
    }

    /// Answers 200 "ok" to everything.
    pub async fn ok() -> Receiver {
        Receiver::start(|_, _| Reply::Status(200, vec![], "ok".into())).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(state): State<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    let n = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    match (state.behaviour)(n, &seen) {
        Reply::Status(code, headers, body) => {
            let mut resp = (StatusCode::from_u16(code).unwrap(), body).into_response();
            for (k, v) in headers {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

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
