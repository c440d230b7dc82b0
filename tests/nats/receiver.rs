//! A webhook receiver on port 0 that answers 200 after a delay, like a real endpoint under
//! load, and records `(key, seq)` of each request in arrival order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::Router;

/// One request: the object and its per-object sequence number, in arrival order.
#[derive(Debug, Clone)]
pub struct Hit {
    pub key: String,
    pub seq: i64,
}

#[derive(Clone)]
struct Shared {
    hits: Arc<Mutex<Vec<Hit>>>,
    delay: Duration,
}

pub struct SlowReceiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl SlowReceiver {
    pub async fn start(delay: Duration) -> SlowReceiver {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(answer).with_state(Shared { hits: hits.clone(), delay });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        SlowReceiver { addr, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn answer(State(s): State<Shared>, body: Bytes) -> &'static str {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let hit = Hit { key: v["key"].as_str().unwrap_or_default().to_string(), seq: v["seq"].as_i64().unwrap_or(-1) };
    s.hits.lock().unwrap().push(hit);
    tokio::time::sleep(s.delay).await;
    "ok"
}
