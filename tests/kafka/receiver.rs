//! A webhook receiver on port 0 for `{"key", "seq"}` requests, which answers as its script
//! says (after a delay, like an endpoint under load) and notes each request as it arrives:
//! object, sequence number, which replica sent it (`x-replica` header), the status it got.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One request.
#[derive(Debug, Clone)]
pub struct Hit {
    pub key: String,
    pub seq: i64,
    /// The `x-replica` header, empty when absent.
    pub replica: String,
    /// The status answered; 0 for a request left hanging.
    pub status: u16,
    pub at: Instant,
}

impl Hit {
    /// Answered with a 2xx: a delivery.
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    TooMany(u64),
    /// No answer for an hour: the sender's timeout decides.
    Hang,
}

type Script = Arc<dyn Fn(&str, i64, usize) -> Answer + Send + Sync>;

#[derive(Clone)]
struct Shared {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Milliseconds before each answer.
    delay: Arc<AtomicU64>,
    script: Script,
}

pub struct ScriptedReceiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    delay: Arc<AtomicU64>,
}

impl ScriptedReceiver {
    /// Answers 200 after `delay`, always.
    pub async fn slow(delay: Duration) -> ScriptedReceiver {
        ScriptedReceiver::start(delay, |_, _, _| Answer::Ok).await
    }

    /// Answers the n-th request (0-based), for object `key` and `seq`, with `script(key, seq,
    /// n)` after `delay`.
    pub async fn start(
        delay: Duration,
        script: impl Fn(&str, i64, usize) -> Answer + Send + Sync + 'static,
    ) -> ScriptedReceiver {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let delay = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let shared = Shared { hits: hits.clone(), delay: delay.clone(), script: Arc::new(script) };
        let app = Router::new().fallback(answer).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ScriptedReceiver { addr, hits, delay }
    }

    /// Answers after `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Distinct events delivered (answered 2xx) so far.
    pub fn distinct_delivered(&self) -> usize {
        let hits = self.hits.lock().unwrap();
        hits.iter().filter(|h| h.delivered()).map(|h| (&h.key, h.seq)).collect::<std::collections::HashSet<_>>().len()
    }
}

async fn answer(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = v["key"].as_str().unwrap_or_default().to_string();
    let seq = v["seq"].as_i64().unwrap_or(-1);
    let replica = headers.get("x-replica").and_then(|r| r.to_str().ok()).unwrap_or_default().to_string();
    let at = Instant::now();
    let answer = {
        let mut hits = s.hits.lock().unwrap();
        let n = hits.len();
        let answer = (s.script)(&key, seq, n);
        let status = match answer {
            Answer::Ok => 200,
            Answer::Status(code) => code,
            Answer::TooMany(_) => 429,
            Answer::Hang => 0,
        };
        hits.push(Hit { key, seq, replica, status, at });
        answer
    };
    tokio::time::sleep(Duration::from_millis(s.delay.load(Ordering::SeqCst))).await;
    match answer {
        Answer::Ok => "ok".into_response(),
        Answer::Status(code) => (StatusCode::from_u16(code).unwrap(), "scripted failure").into_response(),
        Answer::TooMany(secs) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", secs.to_string())], "slow down").into_response()
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "too late".into_response()
        }
    }
}
