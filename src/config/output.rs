//! `responses` and `dead_letter`, compiled: what a destination takes from a source on the
//! same kind of broker (Kafka brokers and properties, a NATS URL and credentials) is resolved
//! at load, so a destination that names no broker and has none to take one from is a
//! `check` error with its place, not a failure at start.

use std::collections::BTreeMap;

use crate::config_file::raw::{DestinationConfig, NatsCredentials, SourceConfig};

/// Where results and callback updates, or dead letters, go.
#[derive(Debug, Clone)]
pub enum Output {
    /// JSON Lines to a file; `-` is stdout.
    File {
        /// The path.
        path: String,
    },
    /// A Kafka topic.
    Kafka(KafkaOutput),
    /// A subject captured by a JetStream stream.
    Nats(NatsOutput),
}

/// A Kafka destination.
#[derive(Debug, Clone)]
pub struct KafkaOutput {
    /// The topic.
    pub topic: String,
    /// Bootstrap servers: the destination's, or the Kafka source's.
    pub brokers: Vec<String>,
    /// librdkafka properties: the destination's own, or (when it gives none) those of the
    /// Kafka source's that are not the consumer's alone.
    pub properties: BTreeMap<String, String>,
}

/// A NATS destination.
#[derive(Debug, Clone)]
pub struct NatsOutput {
    /// The subject published to.
    pub subject: String,
    /// Server URL(s): the destination's, or the NATS source's.
    pub url: String,
    /// The destination's credentials, else a NATS source's (even for another URL, as the
    /// same user usually publishes there), else none.
    pub credentials: NatsCredentials,
}

impl Output {
    /// Compiles the destination at `place`, given the source it may take settings from.
    pub(super) fn compile(
        place: &str,
        raw: &DestinationConfig,
        source: &SourceConfig,
    ) -> Result<Output, (String, String)> {
        Ok(match raw {
            DestinationConfig::File { path } => Output::File { path: path.clone() },
            DestinationConfig::Kafka { topic, brokers, properties } => {
                let from_source = match source {
                    SourceConfig::Kafka { brokers, properties, .. } => Some((brokers, properties)),
                    _ => None,
                };
                let brokers = match (brokers, from_source) {
                    (Some(own), _) => own.clone(),
                    (None, Some((theirs, _))) => theirs.clone(),
                    (None, None) => {
                        return Err((
                            format!("{place}.brokers"),
                            "required: the source is not Kafka, so there are no brokers to take".into(),
                        ))
                    }
                };
                let properties = match from_source {
                    Some((_, theirs)) if properties.is_empty() => super::kafka_properties::for_producers(theirs),
                    _ => properties.clone(),
                };
                Output::Kafka(KafkaOutput { topic: topic.clone(), brokers, properties })
            }
            DestinationConfig::Nats { subject, url, credentials } => {
                let (source_url, source_credentials) = match source {
                    SourceConfig::Nats { url, credentials, .. } => (Some(url), Some(credentials)),
                    _ => (None, None),
                };
                let url = url.as_ref().or(source_url).cloned().ok_or_else(|| {
                    (
                        format!("{place}.url"),
                        "required: the source is not NATS, so there is no server to take".to_string(),
                    )
                })?;
                let credentials = credentials.as_ref().or(source_credentials).cloned().unwrap_or_default();
                Output::Nats(NatsOutput { subject: subject.clone(), url, credentials })
            }
        })
    }
}
