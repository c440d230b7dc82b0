//! One pooled HTTP client per TLS and proxy setting, shared by the connections that use it.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use super::policy::Policy;
use super::proxy::ProxySettings;
use super::resolver::PolicyResolver;
use crate::config_file::raw::TlsConfig;

/// Why an HTTP client cannot be built.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A TLS file cannot be read or parsed.
    #[error("connection {connection}: {message}")]
    Tls {
        /// Connection name.
        connection: String,
        /// What failed.
        message: String,
    },
}

/// What a client is built for: one connection's name (for errors), TLS and proxy settings,
/// and destination policy.
pub struct Endpoint<'a> {
    /// The connection's name.
    pub name: &'a str,
    /// Its TLS settings.
    pub tls: &'a TlsConfig,
    /// Its proxy, if any.
    pub proxy: Option<&'a ProxySettings>,
    /// Where its requests may go.
    pub policy: Policy,
}

/// One pooled client per distinct TLS setting; connections share them.
pub struct Clients {
    by_connection: Vec<reqwest::Client>,
}

impl Clients {
    /// Builds the clients for every connection, in order; each keeps up to
    /// `max_idle_per_host` idle connections to a host (`delivery.concurrency`: no more can be
    /// busy at once, so no more are worth keeping; fewer would close and reopen connections
    /// under full load).
    pub fn build<'a>(
        endpoints: impl IntoIterator<Item = Endpoint<'a>>,
        max_idle_per_host: usize,
    ) -> Result<Clients, ClientError> {
        let mut cache: HashMap<String, reqwest::Client> = HashMap::new();
        let mut by_connection = Vec::new();
        for c in endpoints {
            let policy = c.policy;
            let key = format!(
                "{}|{}|{}",
                tls_key(c.tls),
                c.proxy.map(ProxySettings::cache_key).unwrap_or_default(),
                policy.allow_private
            );
            let client = match cache.get(&key) {
                Some(client) => client.clone(),
                None => {
                    let client = build_client(c.tls, c.proxy, policy, max_idle_per_host)
                        .map_err(|message| ClientError::Tls { connection: c.name.to_string(), message })?;
                    cache.insert(key, client.clone());
                    client
                }
            };
            by_connection.push(client);
        }
        Ok(Clients { by_connection })
    }

    /// The client of the connection at `index`.
    pub fn get(&self, index: usize) -> &reqwest::Client {
        &self.by_connection[index]
    }
}

fn tls_key(tls: &TlsConfig) -> String {
    format!("{}|{:?}|{:?}|{:?}", tls.verify, tls.ca_file, tls.client_cert, tls.client_key)
}

fn build_client(
    tls: &TlsConfig,
    proxy: Option<&ProxySettings>,
    policy: Policy,
    max_idle_per_host: usize,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("hookbridge/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(max_idle_per_host)
        // Proxy variables from the environment are ignored: through them the destination
        // would never be resolved here and the policy would not run.
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { policy, proxy_host: proxy.and_then(ProxySettings::host_name) }))
        .danger_accept_invalid_certs(!tls.verify);
    if let Some(settings) = proxy {
        builder = settings.install(builder, policy);
    }
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {ca}: {e}"))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{ca}: {e}"))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = std::fs::read(cert).map_err(|e| format!("cannot read {cert}: {e}"))?;
        pem.extend(std::fs::read(key).map_err(|e| format!("cannot read {key}: {e}"))?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(|e| format!("client identity: {e}"))?);
    }
    builder.build().map_err(|e| e.to_string())
}
