//! The configuration file as written: serde structs that mirror `schemas/config.v1.json`.
//!
//! Nothing here is trusted yet: [`super::compile`] checks references, templates and
//! expressions and turns these into the typed values the hot path uses.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::secret::SecretRef;
use super::units::{Duration, Size};

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

/// A remote application connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Informational application type.
    #[serde(default)]
    pub application: Option<String>,
    /// Informational environment: accepted (iTop's connection form has it), never used.
    #[serde(default)]
    #[allow(dead_code)]
    pub environment: Option<String>,
    /// Endpoint URL; may hold placeholders.
    pub url: String,
    /// iTop REST API version (itop connections).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Headers added to every request; values may hold placeholders.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout, overriding `delivery.timeout`.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Requests per second towards this connection.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Requests in flight towards this connection.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Standard Webhooks signing secret (`whsec_…`).
    #[serde(default)]
    pub signing_secret: Option<SecretRef>,
    /// Allow loopback and private destinations for this connection only.
    #[serde(default)]
    pub allow_private_network: bool,
}

/// How requests authenticate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: SecretRef,
    },
    /// `Authorization: Bearer …`.
    Bearer {
        /// The token.
        token: SecretRef,
    },
    /// Any header.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: SecretRef,
    },
    /// iTop's `Auth-Token` header (iTop 3 application tokens).
    ItopToken {
        /// The token.
        token: SecretRef,
    },
}

/// A token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate.
    pub per_second: f64,
    /// Requests allowed at once above the rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

/// TLS options of a connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Verify the server certificate.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Extra CA certificate (PEM).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub client_key: Option<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { verify: true, ca_file: None, client_cert: None, client_key: None }
    }
}

/// One action, every type's fields together; [`super::compile`] checks which belong.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ActionKind,
    #[serde(default)]
    pub status: ActionStatus,
    // Informational (iTop's action form has them): accepted, never used.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub language: Option<String>,
    pub connection: String,
    #[serde(default)]
    pub test_connection: Option<String>,
    /// Replaces `delivery.retry` for this action.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    // webhook
    #[serde(default)]
    pub method: Option<HttpMethod>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
    // itop
    #[serde(default)]
    pub json_data: Option<Value>,
    // chat
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub attributes_from: Option<AttributesFrom>,
    #[serde(default)]
    pub user_info: Option<bool>,
    #[serde(default)]
    pub modify_button: Option<bool>,
    #[serde(default)]
    pub delete_button: Option<bool>,
    #[serde(default)]
    pub other_actions: Option<OtherActions>,
    #[serde(default)]
    pub other_actions_codes: Option<Vec<String>>,
    // rocketchat
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub emoji: Option<String>,
    // google chat
    #[serde(default)]
    pub thread_key: Option<String>,
    // teams
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub highlight_color: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub format: Option<TeamsFormat>,
}

/// How an answer becomes attribute updates for the triggering object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// `success` or `any_response`.
    #[serde(default)]
    pub when: CallbackWhen,
    /// Attribute code -> CEL expression over `response`, `event`, `object`, `previous`.
    pub fields: BTreeMap<String, String>,
}

/// One trigger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub name: String,
    pub on: TriggerOn,
    pub class: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub context: Vec<String>,
    pub actions: Vec<String>,
}

/// Attribute lists of one class.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentationLists {
    #[serde(default)]
    pub list: Vec<String>,
    #[serde(default)]
    pub slack: Vec<String>,
    #[serde(default)]
    pub msteams: Vec<String>,
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

/// The action types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Webhook,
    Itop,
    Slack,
    Rocketchat,
    GoogleChat,
    Teams,
}

impl ActionKind {
    /// The name used in config and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Webhook => "webhook",
            ActionKind::Itop => "itop",
            ActionKind::Slack => "slack",
            ActionKind::Rocketchat => "rocketchat",
            ActionKind::GoogleChat => "google_chat",
            ActionKind::Teams => "teams",
        }
    }

    /// Slack, Rocket.Chat, Google Chat and Teams: services whose webhook URL is the credential.
    pub fn is_chat(self) -> bool {
        matches!(self, ActionKind::Slack | ActionKind::Rocketchat | ActionKind::GoogleChat | ActionKind::Teams)
    }
}

/// Whether an action sends, sends to its test connection, or does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    #[default]
    Enabled,
    Disabled,
    Test,
}

/// HTTP methods a webhook action may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl HttpMethod {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Head => "HEAD",
        }
    }
}

/// Which presentation list a chat action shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributesFrom {
    #[default]
    None,
    List,
    Slack,
    Msteams,
}

/// Which transition buttons a chat action shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherActions {
    #[default]
    No,
    Yes,
    Specify,
}

/// The Teams payload format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamsFormat {
    /// Adaptive card for Workflows (Power Automate) webhooks.
    #[default]
    AdaptiveCard,
    /// Legacy Office 365 connector card.
    MessageCard,
}

/// When a callback mapping runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackWhen {
    /// 2xx (and iTop code 0).
    #[default]
    Success,
    /// Any HTTP answer.
    AnyResponse,
}

/// What a trigger fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOn {
    Create,
    Update,
    Delete,
    StateEnter,
    StateLeave,
    Mention,
    LogUpdate,
}

impl TriggerOn {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerOn::Create => "create",
            TriggerOn::Update => "update",
            TriggerOn::Delete => "delete",
            TriggerOn::StateEnter => "state_enter",
            TriggerOn::StateLeave => "state_leave",
            TriggerOn::Mention => "mention",
            TriggerOn::LogUpdate => "log_update",
        }
    }
}
