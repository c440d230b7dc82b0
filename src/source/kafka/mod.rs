//! Kafka: the consumer-group source, the results and dead-letter producer, and the retry
//! topic that holds long retries.
//!
//! - [`client`] builds librdkafka settings (hookbridge's defaults, then the user's
//!   `properties`) and routes librdkafka's logs into `tracing`.
//! - [`topics`] is the subscription: names and regular expressions, checked at load.
//! - [`offsets`] knows, per partition, which offsets are final and how far the group may
//!   commit: the one place where a bug would lose events; [`commit`] commits those
//!   positions as they become final, at a bounded rate, with what is final past them
//!   ([`progress`]), so that a replica taking a partition over skips it.
//! - [`source`] is the consumer-group source; [`poller`] its consumer thread, which hands
//!   messages to the pipeline without ever blocking the poll loop, pauses partitions while
//!   the backlog is full, and settles and commits on shutdown; [`rebalance`] does the same
//!   when the group takes partitions away; [`poller::layout`] follows topics and partitions that
//!   appear while running.
//! - [`retry`] parks deliveries in the retry topic and hands them back when due;
//!   [`replay`] keeps retry records read again after a crash from being delivered twice;
//!   [`refetch`] reads a record again when lane parking kept only its reference.
//! - [`shared`] is the state the consumer thread, the rebalance callbacks, the forwarder
//!   and the acknowledgements share.
//!
//! The Kafka destination ([`crate::sink::kafka`]) uses [`client`] and [`KafkaError`].
//! - [`lag`] reports the lag of every owned partition.

pub(crate) mod client;
pub(crate) mod commit;
pub(crate) mod lag;
pub(crate) mod offsets;
pub(crate) mod poller;
pub(crate) mod progress;
pub(crate) mod rebalance;
pub(crate) mod refetch;
pub(crate) mod replay;
pub mod retry;
pub(crate) mod shared;
pub(crate) mod source;

use thiserror::Error;

/// What can go wrong with Kafka, with a short stable label for logs and metrics.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// librdkafka refused the settings (an unknown property, a bad value).
    #[error("invalid Kafka client settings: {0}")]
    Settings(#[source] rdkafka::error::KafkaError),
    /// The consumer failed for good (librdkafka reported a fatal error).
    #[error("the kafka consumer failed: {0}")]
    Consumer(#[source] rdkafka::error::KafkaError),
    /// A setting is missing or cannot work.
    #[error("{place}: {message}")]
    Setting {
        /// Where it belongs in the config.
        place: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Topic metadata could not be read.
    #[error("metadata of topic {topic}: {message}")]
    Metadata {
        /// The topic.
        topic: String,
        /// What the broker or client said.
        message: String,
    },
    /// The retry topic could not be created or grown.
    #[error("retry topic {topic}: {message}")]
    RetryTopic {
        /// The retry topic.
        topic: String,
        /// What failed.
        message: String,
    },
    /// A record was not acknowledged by the broker.
    #[error("producing to {topic}: {source}")]
    Produce {
        /// The topic written to.
        topic: String,
        /// The broker or client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A delivery cannot be parked in the retry topic.
    #[error("cannot park in the retry topic: {0}")]
    NotParkable(String),
}

impl KafkaError {
    /// Short stable label.
    pub fn label(&self) -> &'static str {
        match self {
            KafkaError::Settings(_) => "settings",
            KafkaError::Consumer(_) => "consumer",
            KafkaError::Setting { .. } => "setting",
            KafkaError::Metadata { .. } => "metadata",
            KafkaError::RetryTopic { .. } => "retry_topic",
            KafkaError::Produce { .. } => "produce",
            KafkaError::NotParkable(_) => "not_parkable",
        }
    }
}
