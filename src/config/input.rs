//! `source`, compiled: the Kafka subscription parsed and the retry topic named, the NATS
//! retry stream and subject given their defaults; once, at load, after the checks passed.

use std::collections::BTreeMap;

use super::kafka_topics::{retry_topic, Subscription};
use crate::config_file::raw::{default_nats_retry_stream, default_nats_retry_subject, NatsCredentials, SourceConfig};

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// JSON Lines from a file or stdin.
    File {
        /// The path; `-` is stdin.
        path: String,
        /// Wait for more lines at the end instead of stopping.
        follow: bool,
    },
    /// A Kafka consumer group.
    Kafka(KafkaInput),
    /// A JetStream durable pull consumer.
    Nats(NatsInput),
}

/// A Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaInput {
    /// Bootstrap servers.
    pub brokers: Vec<String>,
    /// Consumer group.
    pub group_id: String,
    /// The topics, by name and by expression.
    pub subscription: Subscription,
    /// librdkafka properties, as given.
    pub properties: BTreeMap<String, String>,
    /// Where deliveries wait between long retries (the configured one, or its default).
    pub retry_topic: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
}

/// A NATS JetStream source.
#[derive(Debug, Clone)]
pub struct NatsInput {
    /// Server URL(s).
    pub url: String,
    /// The stream events are read from.
    pub stream: String,
    /// Subject filters of the consumer; empty: the whole stream.
    pub subjects: Vec<String>,
    /// Durable consumer name.
    pub consumer: String,
    /// The stream deliveries wait in between long retries.
    pub retry_stream: String,
    /// The subject of this consumer's retry records.
    pub retry_subject: String,
    /// How to authenticate.
    pub credentials: NatsCredentials,
}

impl Input {
    /// Compiles a source the checks accepted; the error is the one problem left (a Kafka
    /// expression that does not compile, which the checks report first).
    pub(super) fn compile(raw: &SourceConfig) -> Result<Input, (String, String)> {
        Ok(match raw {
            SourceConfig::File { path, follow } => Input::File { path: path.clone(), follow: *follow },
            SourceConfig::Kafka {
                brokers,
                group_id,
                topics,
                properties,
                retry_topic: configured,
                group_instance_id,
            } => {
                let subscription =
                    Subscription::parse(topics).map_err(|(i, message)| (format!("source.topics[{i}]"), message))?;
                Input::Kafka(KafkaInput {
                    brokers: brokers.clone(),
                    group_id: group_id.clone(),
                    subscription,
                    properties: properties.clone(),
                    retry_topic: retry_topic(topics, group_id, configured.as_deref()),
                    group_instance_id: group_instance_id.clone(),
                })
            }
            SourceConfig::Nats { url, stream, subjects, consumer, retry_stream, retry_subject, credentials } => {
                Input::Nats(NatsInput {
                    url: url.clone(),
                    stream: stream.clone(),
                    subjects: subjects.clone(),
                    consumer: consumer.clone(),
                    retry_stream: retry_stream.clone().unwrap_or_else(|| default_nats_retry_stream(stream)),
                    retry_subject: retry_subject.clone().unwrap_or_else(|| default_nats_retry_subject(consumer)),
                    credentials: credentials.clone(),
                })
            }
        })
    }

    /// The source type, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::File { .. } => "file",
            Input::Kafka(_) => "kafka",
            Input::Nats(_) => "nats",
        }
    }
}
