//! NATS JetStream: the durable pull-consumer source and the results and dead-letter
//! publisher.
//!
//! - [`connect`]: one client per role, with credentials, TLS and endless reconnection.
//! - [`source`]: the source: pulls batches from the consumer on the user's stream and the
//!   one on the retry stream, no larger than the replica's room; `settings.rs` describes
//!   both consumers, `consumer.rs` binds (or creates) them, `feed.rs` hands what is fetched
//!   to the keeper and the pipeline.
//! - [`retry`]: the retry stream, the durable retry stage: one record per delivery that waits
//!   for a long retry, so an event's other actions are never sent again.
//! - [`keeper`]: holds every fetched message with in-progress acks until the pipeline
//!   settles it, then confirms the `+ACK` (or `-NAK`; with a delay for a retry record not
//!   yet due).
//! - [`subject`]: subject syntax and wildcard matching.
//!
//! The JetStream destination ([`crate::sink::nats`]) uses [`connect`] and [`NatsError`].
//!
//! Ordering and deployment notes are in the README (section "NATS JetStream").

pub(crate) mod connect;
mod consumer;
pub(crate) mod error;
mod feed;
pub(crate) mod keeper;
pub(crate) mod retry;
mod settings;
pub(crate) mod source;

pub use error::NatsError;

use crate::config::NatsInput;

/// Opens the JetStream source `input`, holding at most `max_hold` messages and draining for
/// at most `drain` at shutdown, waiting (not ready) while the server cannot be reached.
pub(crate) async fn open_source(
    input: &NatsInput,
    max_hold: usize,
    drain: std::time::Duration,
) -> Result<source::NatsSource, NatsError> {
    let settings = settings::Settings { input: input.clone(), max_hold, drain };
    retry_start("source", || source::NatsSource::open(settings.clone())).await
}

/// First delay between start-up attempts; it doubles up to [`START_RETRY_MAX`].
const START_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest delay between start-up attempts.
const START_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `open` until it succeeds or fails for good. A server down at start is the same
/// outage as a server lost later: the process stays up and not ready (the caller bounds
/// the wait with `startup_timeout` and the shutdown signal), rather than exiting into a
/// crash loop.
pub(crate) async fn retry_start<T, F, Fut>(what: &str, mut open: F) -> Result<T, NatsError>
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
