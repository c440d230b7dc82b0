//! Where requests may go and how: the destination policy (link-local and cloud-metadata
//! ranges always refused, private and loopback ones unless allowed), enforced after DNS
//! resolution by a resolver that filters addresses, and one pooled HTTP client per TLS
//! setting.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use thiserror::Error;

use crate::config::raw::TlsConfig;
use crate::connection::Connection;

/// A destination the policy refuses.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("destination {addr} refused: {why}")]
pub struct Refused {
    /// The address.
    pub addr: IpAddr,
    /// Which range it is in.
    pub why: &'static str,
}

/// Which destinations are allowed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Allow loopback and private ranges.
    pub allow_private: bool,
}

impl Policy {
    /// Checks one address.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refused> {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        let refuse = |why| Err(Refused { addr, why });
        match addr {
            IpAddr::V4(v4) => {
                if is_metadata_v4(v4) {
                    return refuse("cloud metadata service");
                }
                if v4.is_link_local() {
                    return refuse("link-local range");
                }
                if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.octets()[0] == 0 {
                    return refuse("not a unicast destination");
                }
                if !self.allow_private && (v4.is_loopback() || v4.is_private() || is_shared_v4(v4)) {
                    return refuse("private or loopback range (set delivery.allow_private_networks to allow)");
                }
            }
            IpAddr::V6(v6) => {
                if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                    return refuse("cloud metadata service");
                }
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    return refuse("link-local range");
                }
                if v6.is_unspecified() || v6.is_multicast() {
                    return refuse("not a unicast destination");
                }
                if !self.allow_private && (v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00) {
                    return refuse("private or loopback range (set delivery.allow_private_networks to allow)");
                }
            }
        }
        Ok(())
    }

    /// Checks a URL whose host is an IP literal (the resolver is not consulted for those).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check(IpAddr::V6(v6)),
            _ => Ok(()),
        }
    }
}

fn is_metadata_v4(v4: Ipv4Addr) -> bool {
    // AWS/GCP/Azure/OpenStack 169.254.169.254, Alibaba 100.100.100.200, Azure wireserver 168.63.129.16.
    matches!(v4.octets(), [169, 254, 169, 254] | [100, 100, 100, 200] | [168, 63, 129, 16])
}

fn is_shared_v4(v4: Ipv4Addr) -> bool {
    // 100.64.0.0/10, carrier-grade NAT: private in practice.
    v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
}

/// A resolver that drops refused addresses, so a name cannot smuggle a request to a
/// forbidden range (including by rebinding between a check and the connection).
#[derive(Debug, Clone)]
struct PolicyResolver {
    policy: Policy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        first_refusal.get_or_insert(r);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                if let Some(r) = first_refusal {
                    return Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Finds a [`Refused`] in an error's source chain.
pub fn refused_in(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cur = e.source();
    }
    None
}

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

/// One pooled client per distinct TLS setting; connections share them.
pub struct Clients {
    by_connection: Vec<reqwest::Client>,
}

impl Clients {
    /// Builds the clients for every connection.
    pub fn build(connections: &[Connection], policy: Policy) -> Result<Clients, ClientError> {
        let mut cache: HashMap<String, reqwest::Client> = HashMap::new();
        let mut by_connection = Vec::with_capacity(connections.len());
        for c in connections {
            let key = tls_key(&c.tls);
            let client = match cache.get(&key) {
                Some(client) => client.clone(),
                None => {
                    let client = build_client(&c.tls, policy)
                        .map_err(|message| ClientError::Tls { connection: c.name.clone(), message })?;
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

fn build_client(tls: &TlsConfig, policy: Policy) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("hookbridge/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .danger_accept_invalid_certs(!tls.verify);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let strict = Policy { allow_private: false };
        let open = Policy { allow_private: true };
        for refused in
            ["169.254.169.254", "169.254.1.1", "fe80::1", "100.100.100.200", "0.0.0.0", "::ffff:169.254.169.254"]
        {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(strict.check(ip).is_err() && open.check(ip).is_err(), "{refused}");
        }
        for private in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "::1", "fd12::1", "100.64.0.1"] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(strict.check(ip).is_err(), "{private}");
            assert!(open.check(ip).is_ok(), "{private}");
        }
        assert!(strict.check("93.184.216.34".parse().unwrap()).is_ok());
    }
}
