//! The configuration file as written: serde structs that mirror `schemas/config.v1.json`.
//!
//! Nothing here is trusted yet: [`super::compile`] checks references, templates and
//! expressions and turns these into the typed values the hot path uses.

mod action;
mod connection;
mod source;
mod trigger;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{Duration, Size};

pub use action::{
    ActionConfig, ActionKind, ActionStatus, ActionType, AttributesFrom, CallbackWhen, ChatFields, GoogleChatFields,
    HttpMethod, ItopFields, OtherActions, PresentationLists, RocketchatFields, TeamsFields, TeamsFormat, WebhookFields,
};
pub use connection::{AuthConfig, ConnectionConfig, RateLimitConfig, TlsConfig};
pub use source::{
    default_nats_retry_stream, default_nats_retry_subject, DestinationConfig, NatsCredentials, SourceConfig,
};
pub use trigger::{TriggerConfig, TriggerOn};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where events come from; the file source on stdin when absent.
    #[serde(default)]
    pub source: SourceConfig,
    /// Where delivery results and callback updates go.
    #[serde(default)]
    pub responses: DestinationConfig,
    /// Where malformed events and deliveries that failed for good go.
    #[serde(default)]
    pub dead_letter: DestinationConfig,
    /// The operations endpoint.
    #[serde(default)]
    pub server: ServerConfig,
    /// Concurrency, timeouts, retries and safety limits.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Remote application connections, by name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Actions, in the order they are written.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// Triggers, in the order they are written.
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    /// Attribute lists per class for `attributes_from`.
    #[serde(default)]
    pub presentation: BTreeMap<String, PresentationLists>,
    /// `run` refuses a config without triggers unless this is true.
    #[serde(default)]
    pub allow_no_triggers: bool,
    /// How long `run` may stay not ready at start before it exits; `None`: no limit.
    #[serde(default)]
    pub startup_timeout: Option<Duration>,
}

/// The operations endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of /metrics, /healthz and /readyz; null disables the server.
    #[serde(default = "default_listen")]
    pub listen: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: default_listen() }
    }
}

/// Delivery settings shared by every action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Requests in flight, all actions together.
    pub concurrency: usize,
    /// Per attempt.
    pub timeout: Duration,
    /// URL + headers + body after rendering.
    pub max_request_bytes: Size,
    /// Backoff policy.
    pub retry: RetryConfig,
    /// Render and report, send nothing.
    pub dry_run: bool,
    /// Allow loopback and private destinations.
    pub allow_private_networks: bool,
    /// Drain deadline on SIGTERM.
    pub shutdown_timeout: Duration,
    /// Attempts made in process before a delivery is handed to the durable retry stage
    /// (a Kafka retry topic or a JetStream retry stream); sources without one retry in process.
    pub quick_attempts: u32,
    /// Most bytes of the original message a dead letter carries (after escaping).
    pub max_dead_letter_raw: Size,
    /// A forward proxy for every request; proxy variables of the environment are ignored.
    pub proxy: Option<ProxyConfig>,
    /// Mentioned contacts one event notifies at most, per mention trigger; the rest are
    /// reported as one skipped result.
    pub max_mentions: usize,
    /// Largest event a line of the file source may hold; a longer line is a dead letter.
    pub max_event_bytes: Size,
}

/// An explicit forward proxy: destinations are still resolved and checked here first.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `http://host:port` or `https://host:port`, credentials allowed.
    pub url: String,
    /// Hosts reached directly: domains (with their subdomains), IP addresses, CIDR networks.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the proxy's credentials.
        f.debug_struct("ProxyConfig")
            .field("url", &crate::mask::url(&self.url))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 256,
            timeout: Duration::from_secs(10),
            max_request_bytes: Size(64 * 1024 * 1024),
            retry: RetryConfig::default(),
            dry_run: false,
            allow_private_networks: false,
            shutdown_timeout: Duration::from_secs(30),
            quick_attempts: 3,
            max_dead_letter_raw: Size(256 * 1024),
            proxy: None,
            max_mentions: 100,
            max_event_bytes: Size(1024 * 1024),
        }
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth factor between delays.
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 8,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

fn default_group_id() -> String {
    "hookbridge".into()
}
fn default_stdio() -> String {
    "-".into()
}
fn default_listen() -> Option<String> {
    Some("0.0.0.0:9464".into())
}
fn default_burst() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
