//! NATS JetStream: the durable pull-consumer source and the results and dead-letter
//! publisher.
//!
//! - [`connect`]: one client per role, with credentials, TLS and endless reconnection.
//! - [`source`]: binds (or creates) the durable consumer on the user's stream and the one on
//!   the retry stream, and pulls batches from both no larger than the replica's room.
//! - [`retry`]: the retry stream, the durable retry stage: one record per delivery that waits
//!   for a long retry, so an event's other actions are never sent again.
//! - [`keeper`]: holds every fetched message with in-progress acks until the pipeline
//!   settles it, then confirms the `+ACK` (or `-NAK`; with a delay for a retry record not
//!   yet due).
//! - [`sink`]: JetStream publishes that wait for the stream's acknowledgement.
//!
//! Ordering and deployment notes are in the README (section "NATS JetStream").

pub mod connect;
pub mod error;
pub mod keeper;
pub mod retry;
pub mod sink;
pub mod source;

use std::sync::Arc;

pub use error::NatsError;

use crate::config::{Config, DestinationConfig, SourceConfig};
use crate::publish::Sink;
use crate::source::Source;

/// Opens the JetStream source of `config`, waiting (not ready) while the server cannot be
/// reached.
pub async fn open_source(config: &Config) -> Result<Box<dyn Source>, String> {
    let settings = source::Settings::from_config(config).ok_or("the source is not nats")?;
    let source =
        retry_start("source", || source::NatsSource::open(settings.clone())).await.map_err(|e| e.to_string())?;
    Ok(Box::new(source))
}

/// Opens a NATS destination; the URL defaults to the NATS source's. Waits while the server
/// cannot be reached.
pub async fn open_sink(dest: &DestinationConfig, source: &SourceConfig) -> Result<Arc<dyn Sink>, String> {
    let DestinationConfig::Nats { subject, url, credentials } = dest else {
        return Err("the destination is not nats".into());
    };
    let sink =
        retry_start("destination", || sink::NatsSink::open(subject, url.as_deref(), credentials.as_ref(), source))
            .await
            .map_err(|e| e.to_string())?;
    Ok(Arc::new(sink))
}

/// First delay between start-up attempts; it doubles up to [`START_RETRY_MAX`].
const START_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest delay between start-up attempts.
const START_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `open` until it succeeds or fails for good. A server down at start is the same
/// outage as a server lost later: the process stays up and not ready (the caller bounds
/// the wait with `startup_timeout` and the shutdown signal), rather than exiting into a
/// crash loop.
async fn retry_start<T, F, Fut>(what: &str, mut open: F) -> Result<T, NatsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, NatsError>>,
{
    let mut delay = START_RETRY_INITIAL;
    let mut attempt = 1u32;
    loop {
        match open().await {
            Ok(v) => {
                if attempt > 1 {
                    tracing::info!(attempt, "nats: {what} opened");
                }
                return Ok(v);
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "nats: {what} cannot start yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(START_RETRY_MAX);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
