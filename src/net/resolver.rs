//! The DNS resolver the clients use: it resolves, then drops the addresses the policy refuses.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::policy::Policy;

/// A resolver that drops refused addresses, so a name cannot smuggle a request to a
/// forbidden range (including by rebinding between a check and the connection).
#[derive(Debug, Clone)]
pub(super) struct PolicyResolver {
    pub(super) policy: Policy,
    /// The configured proxy's host name: the operator chose it, and it commonly sits in a
    /// private range. Destinations never resolve through this exemption, because a
    /// destination on the proxy's host is always sent through the proxy (see
    /// [`ProxySettings::route`]) and checked there.
    pub(super) proxy_host: Option<String>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let exempt = self.proxy_host.as_deref().is_some_and(|h| same_host(h, name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if exempt {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
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

/// Whether two host names are the same (case and a trailing dot ignored).
pub(super) fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}
