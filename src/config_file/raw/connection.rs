//! `connections`: the HTTP endpoints actions send to, with their auth, TLS and rate limit.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::super::secret::SecretRef;
use super::super::units::Duration;
use super::{default_burst, default_true};

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
