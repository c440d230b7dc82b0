//! The operations endpoint: `/metrics`, `/healthz` (process alive) and `/readyz` (config
//! loaded, source connected, not draining).
//!
//! The server outlives the drain: from SIGTERM on `/readyz` answers 503 (the pod leaves the
//! Service), while `/metrics` and `/healthz` keep answering until the process is about to
//! exit, so that a stopping replica's last counts are scraped and its liveness probe does
//! not kill it in the middle of its drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// What the endpoints read.
#[derive(Clone)]
struct Health {
    /// Set by the source while it is connected.
    ready: Arc<AtomicBool>,
    /// Cancelled when the drain starts.
    draining: CancellationToken,
}

impl Health {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.is_cancelled()
    }
}

/// Binds `listen` and serves until `stop`; `/readyz` answers 503 once `draining` is
/// cancelled. Returns the bound address.
pub async fn serve(
    listen: &str,
    ready: Arc<AtomicBool>,
    draining: CancellationToken,
    stop: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Health { ready, draining });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
    });
    Ok(addr)
}

async fn metrics_text(State(health): State<Health>) -> impl IntoResponse {
    let m = metrics::get();
    m.ready.set(i64::from(health.is_ready()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render())
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "source not connected\n")
    }
}
