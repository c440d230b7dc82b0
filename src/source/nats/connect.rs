//! One NATS connection: authentication (creds file, NKey, token, user/password), TLS, and a
//! reconnect counter that the fetch loop and the ack keeper watch, because a server restart
//! silently drops pending pull requests and wants in-hand messages touched again at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tokio::sync::watch;

use super::error::NatsError;
use crate::config_file::raw::NatsCredentials;

/// How often the client pings the server: a half-open TCP connection is found within two
/// of these, instead of the library's default minute.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long the first connection may take before startup fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// JetStream API requests (consumer info, publish acks) give up after this.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected client, its JetStream context, and the number of (re)connections so far.
#[derive(Clone)]
pub struct NatsClient {
    /// The core client.
    pub client: Client,
    /// JetStream on that client.
    pub jetstream: async_nats::jetstream::Context,
    /// Bumped on every successful (re)connection.
    pub connections: watch::Receiver<u64>,
}

/// Connects to `url` (comma-separated server URLs) with `credentials`; `name` shows in the
/// server's connection list. Fails at once when no server answers: startup errors must be
/// visible, while later disconnections are retried forever.
pub async fn connect(url: &str, credentials: &NatsCredentials, name: &str) -> Result<NatsClient, NatsError> {
    let servers = parse_servers(url)?;
    let (count_tx, count_rx) = watch::channel(0u64);
    let options = options(credentials).await?.name(name).event_callback(move |event| {
        let count_tx = count_tx.clone();
        async move {
            match event {
                Event::Connected => {
                    count_tx.send_modify(|n| *n += 1);
                    tracing::info!("nats: connected");
                }
                Event::Disconnected => tracing::warn!("nats: disconnected; reconnecting"),
                Event::Closed => tracing::warn!("nats: connection closed"),
                Event::LameDuckMode => tracing::warn!("nats: server entering lame duck mode"),
                Event::SlowConsumer(sid) => tracing::warn!(sid, "nats: slow consumer"),
                Event::ServerError(e) => tracing::warn!(error = %e, "nats: server error"),
                Event::ClientError(e) => tracing::warn!(error = %e, "nats: client error"),
                Event::Draining => tracing::debug!("nats: draining"),
            }
        }
    });
    let client = options.connect(servers).await.map_err(|e| {
        use async_nats::ConnectErrorKind as K;
        let (url, detail) = (url.to_string(), error_chain(&e));
        // A refused TLS handshake comes as an I/O error carrying the TLS alert.
        let tls_refused = ["fatal alert", "certificate", "Certificate"].iter().any(|m| detail.contains(m));
        match e.kind() {
            K::Authentication | K::AuthorizationViolation | K::Tls => NatsError::Rejected { url, detail },
            K::Io if tls_refused => NatsError::Rejected { url, detail },
            _ => NatsError::Connect { url, detail },
        }
    })?;
    let mut jetstream = async_nats::jetstream::new(client.clone());
    jetstream.set_timeout(JETSTREAM_TIMEOUT);
    Ok(NatsClient { client, jetstream, connections: count_rx })
}

/// The server list of a comma-separated URL string.
fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, NatsError> {
    let servers: Vec<ServerAddr> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| NatsError::Connect { url: s.to_string(), detail: format!("invalid server URL: {e}") })
        })
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err(NatsError::Connect { url: url.to_string(), detail: "no server URL".into() });
    }
    Ok(servers)
}

/// Connection options from the configured credentials. Exactly one authentication method
/// may be given, and files are checked here so a typo is reported by name, not as a TLS
/// handshake failure.
async fn options(c: &NatsCredentials) -> Result<ConnectOptions, NatsError> {
    let methods =
        [c.creds_file.is_some(), c.nkey.is_some(), c.token.is_some(), c.user.is_some() || c.password.is_some()];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(NatsError::Credentials(
            "use one authentication method: creds_file, nkey, token, or user and password".into(),
        ));
    }
    let mut options = ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        // Never give up reconnecting: the source holds messages whose acks must get through.
        .max_reconnects(None);
    if let Some(path) = &c.creds_file {
        existing("creds_file", path)?;
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| NatsError::Credentials(format!("creds_file {path}: {e}")))?;
    }
    if let Some(seed) = &c.nkey {
        let seed = seed.resolve().map_err(|e| NatsError::Credentials(format!("nkey: {e}")))?;
        options = options.nkey(seed.expose().to_string());
    }
    if let Some(token) = &c.token {
        let token = token.resolve().map_err(|e| NatsError::Credentials(format!("token: {e}")))?;
        options = options.token(token.expose().to_string());
    }
    match (&c.user, &c.password) {
        (Some(user), Some(password)) => {
            let password = password.resolve().map_err(|e| NatsError::Credentials(format!("password: {e}")))?;
            options = options.user_and_password(user.clone(), password.expose().to_string());
        }
        (Some(_), None) => return Err(NatsError::Credentials("user is set without password".into())),
        (None, Some(_)) => return Err(NatsError::Credentials("password is set without user".into())),
        (None, None) => {}
    }
    if let Some(ca) = &c.ca_file {
        options = options.add_root_certificates(existing("ca_file", ca)?);
    }
    match (&c.client_cert, &c.client_key) {
        (Some(cert), Some(key)) => {
            options = options.add_client_certificate(existing("client_cert", cert)?, existing("client_key", key)?);
        }
        (Some(_), None) => return Err(NatsError::Credentials("client_cert is set without client_key".into())),
        (None, Some(_)) => return Err(NatsError::Credentials("client_key is set without client_cert".into())),
        (None, None) => {}
    }
    // A CA or client certificate only makes sense over TLS: require it rather than let a
    // plain-text server accept the connection and ignore them.
    if c.tls_required || c.ca_file.is_some() || c.client_cert.is_some() {
        options = options.require_tls(true);
    }
    Ok(options)
}

fn existing(field: &str, path: &str) -> Result<PathBuf, NatsError> {
    let p = Path::new(path);
    if p.is_file() {
        Ok(p.to_path_buf())
    } else {
        Err(NatsError::Credentials(format!("{field}: {path} is not a readable file")))
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::secret::SecretRef;

    #[test]
    fn comma_separated_servers() {
        let servers = parse_servers("nats://a:4222, nats://b:4222,").unwrap();
        assert_eq!(servers.len(), 2);
        assert!(parse_servers(" , ").is_err());
    }

    #[tokio::test]
    async fn one_authentication_method_only() {
        let c = NatsCredentials {
            token: Some(SecretRef::Literal("t".into())),
            user: Some("u".into()),
            password: Some(SecretRef::Literal("p".into())),
            ..Default::default()
        };
        let err = options(&c).await.err().unwrap().to_string();
        assert!(err.contains("one authentication method"), "{err}");
        let c = NatsCredentials { user: Some("u".into()), ..Default::default() };
        assert!(options(&c).await.err().unwrap().to_string().contains("without password"));
        let c = NatsCredentials {
            client_cert: Some("/nonexistent.pem".into()),
            client_key: Some("/k".into()),
            ..Default::default()
        };
        assert!(options(&c).await.err().unwrap().to_string().contains("client_cert: /nonexistent.pem"));
    }
}
