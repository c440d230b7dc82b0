//! Destinations of the output messages: one [`Sink`] per transport, side by side with the
//! sources in [`crate::source`] — [`file`] (JSON Lines, `-` = stdout), [`kafka`] (an
//! idempotent producer) and [`nats`] (JetStream publishes). `publish` returns only once the
//! message is durable, because source positions wait on it; [`crate::publish`] adds the
//! retries and the dead-letter shrinking on top.
//!
//! A sink may use its broker's client code in `source/<broker>/` (settings, connections,
//! error types); `source/` never uses `sink/`.

pub(crate) mod file;
pub(crate) mod kafka;
pub mod nats;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::config::{Input, Output};
use crate::source::kafka::KafkaError;
use crate::source::nats::NatsError;

pub use file::FileSink;

/// Why a sink did not take a message.
#[derive(Debug, Error)]
pub enum PublishError {
    /// Writing a file failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The message is larger than the destination accepts.
    #[error("the message ({size} bytes) is larger than the destination accepts: {source}")]
    TooLarge {
        /// Serialized size.
        size: usize,
        /// What the broker said.
        #[source]
        source: BrokerError,
    },
    /// The destination refuses this message for good (not authorised, no such topic or stream).
    #[error("refused: {0}")]
    Refused(#[source] BrokerError),
    /// The destination is away or did not acknowledge in time; worth trying again.
    #[error("unavailable: {0}")]
    Unavailable(#[source] BrokerError),
}

/// What a broker said when it did not take a message: its client's own error, kept typed.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// librdkafka's answer.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The JetStream client's answer.
    #[error("{}", crate::source::nats::connect::error_chain(.0))]
    Nats(#[from] async_nats::jetstream::context::PublishError),
    /// What the sink saw itself (a reconnection before the acknowledgement, say).
    #[error("{0}")]
    Other(String),
}

impl From<&str> for BrokerError {
    fn from(text: &str) -> BrokerError {
        BrokerError::Other(text.to_string())
    }
}

impl PublishError {
    /// Whether trying the same message again cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            // A full disk or a read-only remount may pass; a closed descriptor will not.
            PublishError::Io(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::QuotaExceeded
                    | std::io::ErrorKind::ResourceBusy
            ),
            PublishError::TooLarge { .. } | PublishError::Refused(_) => true,
            PublishError::Unavailable(_) => false,
        }
    }

    /// Short stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            PublishError::Io(_) => "io",
            PublishError::TooLarge { .. } => "too_large",
            PublishError::Refused(_) => "refused",
            PublishError::Unavailable(_) => "unavailable",
        }
    }
}

/// A destination for output messages. `publish` returns only once the message is durable
/// (written and flushed, or acknowledged by the broker): source positions depend on it.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Publishes one serialized message under `key` (`class::key`).
    async fn publish(&self, key: &str, payload: &[u8]) -> Result<(), PublishError>;
}

/// Why a destination could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The file could not be opened for appending.
    #[error("cannot open {path}: {source}")]
    File {
        /// The configured path.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The Kafka producer could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The NATS destination could not be set up (after waiting out passing failures).
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// Opens one destination. Kafka and NATS settings it does not give are the source's; a NATS
/// server that cannot be reached yet is waited for (see [`crate::source::nats::retry_start`]).
pub(crate) async fn open(dest: &Output, source: &Input) -> Result<Arc<dyn Sink>, OpenError> {
    match dest {
        Output::File { path } => match FileSink::open(path) {
            Ok(sink) => Ok(Arc::new(sink)),
            Err(source) => Err(OpenError::File { path: path.clone(), source }),
        },
        Output::Kafka(kafka) => Ok(Arc::new(kafka::KafkaSink::open(kafka)?)),
        Output::Nats(nats) => {
            let sink = crate::source::nats::retry_start("destination", || nats::NatsSink::open(nats, source)).await?;
            Ok(Arc::new(sink))
        }
    }
}
