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

/// Opens the JetStream source of `config`.
pub async fn open_source(config: &Config) -> Result<Box<dyn Source>, String> {
    let settings = source::Settings::from_config(config).ok_or("the source is not nats")?;
    let source = source::NatsSource::open(settings).await.map_err(|e| e.to_string())?;
    Ok(Box::new(source))
}

/// Opens a NATS destination; the URL defaults to the NATS source's.
pub async fn open_sink(dest: &DestinationConfig, source: &SourceConfig) -> Result<Arc<dyn Sink>, String> {
    let DestinationConfig::Nats { subject, url, credentials } = dest else {
        return Err("the destination is not nats".into());
    };
    let sink =
        sink::NatsSink::open(subject, url.as_deref(), credentials.as_ref(), source).await.map_err(|e| e.to_string())?;
    Ok(Arc::new(sink))
}
