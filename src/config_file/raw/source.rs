//! Where events come from (`source`) and where results and dead letters go (`responses`,
//! `dead_letter`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::super::secret::SecretRef;
use super::{default_group_id, default_stdio};

/// Exactly one event source.
// One value per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A Kafka consumer group.
    Kafka {
        /// Bootstrap servers.
        brokers: Vec<String>,
        /// Consumer group shared by every replica.
        #[serde(default = "default_group_id")]
        group_id: String,
        /// Topics to consume; an entry starting with `^` is a regular expression.
        topics: Vec<String>,
        /// Passed to librdkafka as they are.
        #[serde(default)]
        properties: BTreeMap<String, String>,
        /// Topic that holds deliveries waiting for a long retry.
        #[serde(default)]
        retry_topic: Option<String>,
        /// Static group membership (`group.instance.id`): a stable id per replica, such as
        /// the pod name of a StatefulSet; empty means none.
        #[serde(default)]
        group_instance_id: Option<String>,
    },
    /// A NATS JetStream durable pull consumer.
    Nats {
        /// Server URL(s), comma separated.
        url: String,
        /// Stream to consume.
        stream: String,
        /// Subjects to filter on.
        #[serde(default)]
        subjects: Vec<String>,
        /// Durable consumer name shared by every replica.
        #[serde(default = "default_group_id")]
        consumer: String,
        /// Stream holding deliveries that wait for a long retry (work-queue retention),
        /// created when missing; default `<stream>_RETRY`.
        #[serde(default)]
        retry_stream: Option<String>,
        /// Subject the retry records are published on; default `hookbridge.retry.<consumer>`.
        #[serde(default)]
        retry_subject: Option<String>,
        /// Credentials and TLS.
        #[serde(default)]
        credentials: NatsCredentials,
    },
    /// JSON Lines from a file or stdin.
    File {
        /// Path, or `-` for stdin.
        #[serde(default = "default_stdio")]
        path: String,
        /// Tail the file instead of stopping at its end.
        #[serde(default)]
        follow: bool,
    },
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::File { path: default_stdio(), follow: false }
    }
}

/// NATS authentication and TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsCredentials {
    /// A `.creds` file (JWT + NKey seed).
    #[serde(default)]
    pub creds_file: Option<String>,
    /// An NKey seed.
    #[serde(default)]
    pub nkey: Option<SecretRef>,
    /// A token.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// User name for user/password authentication.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for user/password authentication.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// CA certificate file for TLS.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate file for mutual TLS.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// Client key file for mutual TLS.
    #[serde(default)]
    pub client_key: Option<String>,
    /// Require TLS.
    #[serde(default)]
    pub tls_required: bool,
}

/// A destination for results or dead letters.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationConfig {
    /// A Kafka topic; brokers and properties default to the Kafka source's.
    Kafka {
        /// Topic name.
        topic: String,
        /// Bootstrap servers, when not the source's.
        #[serde(default)]
        brokers: Option<Vec<String>>,
        /// Producer properties passed to librdkafka.
        #[serde(default)]
        properties: BTreeMap<String, String>,
    },
    /// A NATS subject published with JetStream acks; the URL defaults to the source's.
    Nats {
        /// Subject name.
        subject: String,
        /// Server URL, when not the source's.
        #[serde(default)]
        url: Option<String>,
        /// Credentials and TLS, when not the NATS source's.
        #[serde(default)]
        credentials: Option<NatsCredentials>,
    },
    /// JSON Lines appended to a file, or `-` for stdout.
    File {
        /// Path, or `-` for stdout.
        #[serde(default = "default_stdio")]
        path: String,
    },
}

impl Default for DestinationConfig {
    fn default() -> Self {
        DestinationConfig::File { path: default_stdio() }
    }
}

/// The retry stream of a NATS source on `stream` when `retry_stream` is not set.
pub fn default_nats_retry_stream(stream: &str) -> String {
    format!("{stream}_RETRY")
}

/// The retry subject of a NATS source with durable `consumer` when `retry_subject` is not set:
/// one per consumer, so deployments on different consumers can share one retry stream.
pub fn default_nats_retry_subject(consumer: &str) -> String {
    format!("hookbridge.retry.{consumer}")
}
