//! A receiver that takes its time: it notes each `{"key", "seq"}` request as it arrives,
//! then answers 200 after a delay, without blocking a thread (the shared receiver answers
//! at once).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::Router;

/// What arrived, in arrival order: (key, seq, when).
type Log = Arc<Mutex<Vec<(String, i64, Instant)>>>;

pub struct SlowReceiver {
    pub addr: SocketAddr,
    log: Log,
}

impl SlowReceiver {
    pub async fn start(delay: Duration) -> SlowReceiver {
        let log: Log = Arc::default();
        let app = Router::new()
            .fallback(move |State(log): State<Log>, body: Bytes| async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let key = v["key"].as_str().unwrap_or_default().to_string();
                log.lock().unwrap().push((key, v["seq"].as_i64().unwrap_or(-1), Instant::now()));
                tokio::time::sleep(delay).await;
                "ok"
            })
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        SlowReceiver { addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn log(&self) -> Vec<(String, i64, Instant)> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}
