//! The HTTP receiver every suite uses: a real server on 127.0.0.1:0 that records each
//! request as it arrives and answers as its script says, optionally after a delay (an
//! endpoint under load). Requests with a `{"key", "seq"}` body (the ordering tests) have
//! those read out, with the `x-replica` header that names the sending replica.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The body's `key`, empty when absent.
    pub key: String,
    /// The body's `seq`, -1 when absent.
    pub seq: i64,
    /// The `x-replica` header, empty when absent.
    pub replica: String,
    /// The status answered; 0 for a request left hanging.
    pub status: u16,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Answered with a 2xx: a delivery.
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What the receiver answers.
pub enum Reply {
    /// A status, headers and a body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Never answers (for an hour): the sender's timeout decides.
    Hang,
}

impl Reply {
    /// 200 "ok".
    pub fn ok() -> Reply {
        Reply::Status(200, vec![], "ok".into())
    }

    /// `code` with a short body.
    pub fn status(code: u16) -> Reply {
        Reply::Status(code, vec![], "scripted answer".into())
    }

    /// 429 with `Retry-After` in seconds.
    pub fn too_many(secs: u64) -> Reply {
        Reply::Status(429, vec![("retry-after", secs.to_string())], "slow down".into())
    }

    fn code(&self) -> u16 {
        match self {
            Reply::Status(code, _, _) => *code,
            Reply::Hang => 0,
        }
    }
}

type Behaviour = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Milliseconds before each answer.
    delay: Arc<AtomicU64>,
    behaviour: Behaviour,
}

/// A real HTTP server on 127.0.0.1:0.
pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    delay: Arc<AtomicU64>,
}

impl Receiver {
    /// Starts a receiver whose answer to the n-th request (0-based) is `behaviour(n, request)`.
    pub async fn start(behaviour: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Receiver {
        Receiver::delayed(Duration::ZERO, behaviour).await
    }

    /// As [`Receiver::start`], each answer given after `delay`.
    pub async fn delayed(
        delay: Duration,
        behaviour: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let delay = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let state = ReceiverState { seen: seen.clone(), delay: delay.clone(), behaviour: Arc::new(behaviour) };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, seen, delay }
    }

    /// Answers 200 "ok" to everything.
    pub async fn ok() -> Receiver {
        Receiver::start(|_, _| Reply::ok()).await
    }

    /// Answers the n-th request (0-based) for the `{"key", "seq"}` body's object `key` and
    /// `seq` with `script(key, seq, n)`, after `delay`.
    pub async fn scripted(
        delay: Duration,
        script: impl Fn(&str, i64, usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::delayed(delay, move |n, seen| script(&seen.key, seen.seq, n)).await
    }

    /// Answers 200 "ok" to everything, after `delay`.
    pub async fn slow(delay: Duration) -> Receiver {
        Receiver::delayed(delay, |_, _| Reply::ok()).await
    }

    /// Answers after `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Distinct `(key, seq)` delivered (answered 2xx) so far.
    pub fn distinct_delivered(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|h| h.delivered()).map(|h| (&h.key, h.seq)).collect::<std::collections::HashSet<_>>().len()
    }
}

async fn handle(
    State(state): State<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut seen = Seen {
        method: method.to_string(),
        path: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
        key: json["key"].as_str().unwrap_or_default().to_string(),
        seq: json["seq"].as_i64().unwrap_or(-1),
        replica: headers.get("x-replica").and_then(|r| r.to_str().ok()).unwrap_or_default().to_string(),
        status: 0,
    };
    // The answer is chosen and the request noted in one step, so `n` is the arrival order.
    let reply = {
        let mut all = state.seen.lock().unwrap();
        let reply = (state.behaviour)(all.len(), &seen);
        seen.status = reply.code();
        all.push(seen);
        reply
    };
    let delay = state.delay.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match reply {
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
