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

/// Bounds how long the process may stay not ready at start: when `ready` is still false
/// after `limit`, cancels `shutdown` and yields `true` (the caller then exits with an
/// error, so that an orchestrator restarts it or someone looks). Yields `false` once ready
/// or when shut down first. A source that connects later and loses its broker again is
/// not affected: that is an outage, not a failed start.
pub fn watch_startup(
    ready: Arc<AtomicBool>,
    limit: std::time::Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + limit;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tick.tick() => {}
            }
            if ready.load(Ordering::SeqCst) {
                return false;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::error!(
                    startup_timeout_ms = limit.as_millis() as u64,
                    "not ready within startup_timeout: stopping"
                );
                shutdown.cancel();
                return true;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn startup_ends_when_not_ready_in_time() {
        let shutdown = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let watch = watch_startup(ready, std::time::Duration::from_secs(30), shutdown.clone());
        tokio::time::sleep(std::time::Duration::from_secs(29)).await;
        assert!(!shutdown.is_cancelled());
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        assert!(watch.await.unwrap());
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_source_is_never_stopped_later() {
        let shutdown = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let watch = watch_startup(ready.clone(), std::time::Duration::from_secs(30), shutdown.clone());
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        ready.store(true, Ordering::SeqCst);
        assert!(!watch.await.unwrap());
        // Ready, then lost: an outage, which startup_timeout does not end.
        ready.store(false, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        assert!(!shutdown.is_cancelled());
    }
}
