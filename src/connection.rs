//! Remote application connections: endpoint URL template, authentication, default headers,
//! TLS, timeout, rate limit and signing secret — compiled once at load.

use std::time::Duration;

use base64::Engine as _;

use crate::config_file::raw::{AuthConfig, ConnectionConfig, RateLimitConfig, TlsConfig};
use crate::config_file::secret::Secret;
use crate::config_file::{check_duration, Problems};
use crate::template::Template;

/// The fastest rate limit `run` can honour: one request per nanosecond.
pub const MAX_RATE_PER_SECOND: f64 = 1e9;

/// Authentication, with secrets resolved.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Nothing added.
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer`.
    Bearer(Secret),
    /// A header of the user's choosing.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: Secret,
    },
    /// iTop's `Auth-Token` header.
    ItopToken(Secret),
}

impl Auth {
    /// The header this authentication adds, if any: (name, value).
    pub fn header(&self) -> Option<(String, String)> {
        match self {
            Auth::None => None,
            Auth::Basic { user, password } => Some((
                "authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()))
                ),
            )),
            Auth::Bearer(token) => Some(("authorization".into(), format!("Bearer {}", token.expose()))),
            Auth::Header { name, value } => Some((name.to_ascii_lowercase(), value.expose().to_string())),
            Auth::ItopToken(token) => Some(("auth-token".into(), token.expose().to_string())),
        }
    }
}

/// A Standard Webhooks signing key, decoded from `whsec_<base64>`.
#[derive(Clone)]
pub struct SigningKey(pub Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A compiled connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Name in the config.
    pub name: String,
    /// Endpoint URL.
    pub url: Template,
    /// How the URL is written: fixed, with placeholders, or a whole-URL placeholder.
    pub url_form: UrlForm,
    /// iTop REST API version.
    pub api_version: String,
    /// Authentication.
    pub auth: Auth,
    /// Headers added to every request.
    pub headers: Vec<(String, Template)>,
    /// Per-attempt timeout, when it overrides `delivery.timeout`.
    pub timeout: Option<Duration>,
    /// Token bucket.
    pub rate_limit: Option<RateLimitConfig>,
    /// In-flight cap.
    pub max_in_flight: Option<usize>,
    /// TLS options.
    pub tls: TlsConfig,
    /// Signing keys; several may be given space-separated, to rotate secrets.
    pub signing_keys: Vec<SigningKey>,
    /// The forward proxy requests go through (`delivery.proxy`).
    pub proxy: Option<crate::net::ProxySettings>,
    /// Loopback and private destinations are allowed for this connection.
    pub allow_private_network: bool,
    /// A chat action uses it (or its `application` is a chat service): its URL is the
    /// credential, and is shown as its host only.
    pub chat: bool,
}

impl Connection {
    /// The destination policy for this connection: the global one, opened to private
    /// ranges when the connection allows them.
    pub fn policy(&self, global: crate::net::Policy) -> crate::net::Policy {
        crate::net::Policy { allow_private: global.allow_private || self.allow_private_network }
    }
}

/// How a connection's URL is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlForm {
    /// No placeholder: checked once, at load.
    Fixed,
    /// Placeholders inside a written URL: their values are percent-encoded.
    Template,
    /// One placeholder yielding the whole URL (`$this->team_id->webhook_url$`): scheme,
    /// host and destination are checked on every request.
    FromObject,
}

impl UrlForm {
    /// The name `check` and `render` show.
    pub fn as_str(self) -> &'static str {
        match self {
            UrlForm::Fixed => "fixed",
            UrlForm::Template => "template",
            UrlForm::FromObject => "whole_url_from_placeholder",
        }
    }
}

/// Header names hookbridge sets itself and a connection may not override.
pub const RESERVED_HEADERS: [&str; 5] =
    ["webhook-id", "webhook-timestamp", "webhook-signature", "content-length", "host"];

/// Checks and compiles one connection; problems are recorded and `None` returned.
pub fn compile(name: &str, raw: &ConnectionConfig, problems: &mut Problems) -> Option<Connection> {
    let place = format!("connections.{name}");
    let before = problems.mark();
    let url = match Template::parse(&raw.url) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.add(format!("{place}.url"), e.to_string());
            None
        }
    };
    let static_url = url.as_ref().filter(|t| t.is_static()).map(|_| raw.url.as_str());
    let whole = url.as_ref().is_some_and(|t| t.single_placeholder().is_some());
    // Only a URL's placeholder-free prefix can be checked here; the rest is checked per request.
    let prefix = raw.url.split('$').next().unwrap_or("");
    if whole {
        // The whole URL comes from the object (`$this->team_id->webhook_url$`): its scheme,
        // host and destination are checked on every request.
    } else if !(prefix.starts_with("http://") || prefix.starts_with("https://")) {
        problems.add(format!("{place}.url"), "must start with http:// or https://");
    } else if let Some(u) = static_url {
        if let Err(e) = reqwest::Url::parse(u) {
            problems.add(format!("{place}.url"), format!("invalid URL: {e}"));
        }
    }
    let mut resolve = |field: &str, secret: &crate::config_file::secret::SecretRef| match secret.resolve() {
        Ok(s) => Some(s),
        Err(e) => {
            problems.add(format!("{place}.{field}"), e);
            None
        }
    };
    let auth = match &raw.auth {
        AuthConfig::None => Some(Auth::None),
        AuthConfig::Basic { user, password } => {
            resolve("auth.password", password).map(|password| Auth::Basic { user: user.clone(), password })
        }
        AuthConfig::Bearer { token } => resolve("auth.token", token).map(Auth::Bearer),
        AuthConfig::Header { name, value } => {
            resolve("auth.value", value).map(|value| Auth::Header { name: name.clone(), value })
        }
        AuthConfig::ItopToken { token } => resolve("auth.token", token).map(Auth::ItopToken),
    };
    let signing_secret = raw.signing_secret.as_ref().and_then(|s| resolve("signing_secret", s));
    let mut signing_keys = Vec::new();
    if let Some(secret) = &signing_secret {
        for part in secret.expose().split_whitespace() {
            match decode_signing_secret(part) {
                Ok(k) => signing_keys.push(SigningKey(k)),
                Err(e) => problems.add(format!("{place}.signing_secret"), e),
            }
        }
    }
    if let AuthConfig::Header { name: header, .. } = &raw.auth {
        check_header_name(&format!("{place}.auth.name"), header, problems);
    }
    let mut headers = Vec::new();
    for (k, v) in &raw.headers {
        check_header_name(&format!("{place}.headers.{k}"), k, problems);
        check_header_text(&format!("{place}.headers.{k}"), v, problems);
        match Template::parse(v) {
            Ok(t) => headers.push((k.to_ascii_lowercase(), t)),
            Err(e) => problems.add(format!("{place}.headers.{k}"), e.to_string()),
        }
    }
    if let Some(rl) = &raw.rate_limit {
        // The limiter needs a period of at least a nanosecond: 1e9 per second at most.
        if !(rl.per_second.is_finite() && rl.per_second > 0.0 && rl.per_second <= MAX_RATE_PER_SECOND) {
            problems.add(
                format!("{place}.rate_limit.per_second"),
                format!("must be greater than 0 and at most {MAX_RATE_PER_SECOND:e} (got {})", rl.per_second),
            );
        }
        if rl.burst == 0 {
            problems.add(format!("{place}.rate_limit.burst"), "must be at least 1");
        }
    }
    if let Some(t) = raw.timeout {
        check_duration(&format!("{place}.timeout"), t.0, problems);
    }
    if raw.max_in_flight == Some(0) {
        problems.add(format!("{place}.max_in_flight"), "must be at least 1");
    }
    for (field, path) in
        [("ca_file", &raw.tls.ca_file), ("client_cert", &raw.tls.client_cert), ("client_key", &raw.tls.client_key)]
    {
        if let Some(p) = path {
            if std::fs::metadata(p).is_err() {
                problems.add(format!("{place}.tls.{field}"), format!("cannot read {p}"));
            }
        }
    }
    if raw.tls.client_cert.is_some() != raw.tls.client_key.is_some() {
        problems.add(format!("{place}.tls"), "client_cert and client_key go together");
    }
    if problems.added_since(before) {
        return None;
    }
    Some(Connection {
        name: name.to_string(),
        url_form: match &url {
            Some(t) if t.is_static() => UrlForm::Fixed,
            Some(_) if whole => UrlForm::FromObject,
            _ => UrlForm::Template,
        },
        url: url?,
        api_version: raw.api_version.clone().unwrap_or_else(|| "1.3".into()),
        auth: auth?,
        headers,
        timeout: raw.timeout.map(|d| d.0),
        rate_limit: raw.rate_limit.clone(),
        max_in_flight: raw.max_in_flight,
        tls: raw.tls.clone(),
        signing_keys,
        proxy: None,
        allow_private_network: raw.allow_private_network,
        chat: matches!(
            raw.application.as_deref().map(str::to_ascii_lowercase).as_deref(),
            Some("slack" | "rocketchat" | "google_chat" | "teams" | "mattermost" | "discord")
        ),
    })
}

/// A header name must be a token and must not be one hookbridge sets itself.
pub fn check_header_name(place: &str, name: &str, problems: &mut Problems) {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        problems.add(place, format!("{name:?} is not a valid header name"));
    } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        problems.add(place, format!("{name} is set by hookbridge itself"));
    }
}

/// The written text of a header value must not hold control characters (tab aside): HTTP
/// cannot carry them, and a request holding one would fail at every attempt.
pub fn check_header_text(place: &str, text: &str, problems: &mut Problems) {
    if let Some(c) = text.chars().find(|c| crate::template::is_header_control(*c)) {
        problems.add(place, format!("holds the control character {:?}, which a header value cannot carry", c));
    }
}

/// `whsec_<base64>` (or bare base64) to key bytes.
pub fn decode_signing_secret(text: &str) -> Result<Vec<u8>, String> {
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("a signing secret is `whsec_` followed by base64: {e}"))?;
    if key.len() < 16 || key.len() > 64 {
        return Err(format!("a signing key must be 16 to 64 bytes, this one is {}", key.len()));
    }
    Ok(key)
}
