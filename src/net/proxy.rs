//! `delivery.proxy`: which hosts go through the proxy, and the connector layer that checks a
//! destination against the policy before the proxy is asked to reach it.

use std::cell::Cell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use reqwest::Url;
use thiserror::Error;

use super::policy::{Policy, Refused};
use super::resolver::same_host;
use crate::config_file::raw::ProxyConfig;

/// A destination sent through the proxy whose name does not resolve here: it cannot be
/// checked, so it is not sent (retried like any network error).
#[derive(Debug, Error)]
#[error("destination {host} cannot be resolved to check it before it is sent through the proxy: {source}")]
pub struct Unresolved {
    /// The destination host.
    pub host: String,
    /// The resolver's error.
    #[source]
    pub source: std::io::Error,
}

/// A `delivery.proxy` entry that cannot be used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProxyError {
    /// The proxy URL.
    #[error("{0}")]
    Url(String),
    /// One `no_proxy` entry.
    #[error("no_proxy[{index}]: {message}")]
    NoProxy {
        /// Index in the list.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Hosts that bypass the proxy: a domain (itself and its subdomains), an IP address, a
/// network in CIDR form, or `*` for every host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyRule {
    All,
    Domain(String),
    Net(IpAddr, u8),
}

impl NoProxyRule {
    fn parse(text: &str) -> Result<NoProxyRule, String> {
        let t = text.trim();
        if t == "*" {
            return Ok(NoProxyRule::All);
        }
        if let Some((addr, bits)) = t.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| format!("{t:?} is not a network such as 10.0.0.0/8"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits: u8 =
                bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| format!("{t:?}: bad prefix length"))?;
            return Ok(NoProxyRule::Net(addr, bits));
        }
        let bare = t.trim_start_matches('[').trim_end_matches(']');
        if let Ok(addr) = bare.parse::<IpAddr>() {
            return Ok(NoProxyRule::Net(addr, if addr.is_ipv4() { 32 } else { 128 }));
        }
        let domain = t.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || !domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(format!("{t:?} is not a host name, an IP address, a CIDR network or *"));
        }
        Ok(NoProxyRule::Domain(domain))
    }

    fn matches(&self, host: &url::Host<&str>) -> bool {
        match (self, host) {
            (NoProxyRule::All, _) => true,
            (NoProxyRule::Domain(d), url::Host::Domain(h)) => {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                h == *d || h.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.'))
            }
            (NoProxyRule::Net(net, bits), url::Host::Ipv4(ip)) => in_net(*net, *bits, IpAddr::V4(*ip)),
            (NoProxyRule::Net(net, bits), url::Host::Ipv6(ip)) => in_net(*net, *bits, IpAddr::V6(*ip)),
            _ => false,
        }
    }
}

fn in_net(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// `delivery.proxy`, checked: the proxy every request goes through, except to the hosts of
/// its `no_proxy` list.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySettings {
    url: Url,
    no_proxy: Vec<NoProxyRule>,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the proxy's credentials.
        f.debug_struct("ProxySettings")
            .field("url", &crate::mask::url(self.url.as_str()))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxySettings {
    /// Checks `delivery.proxy`. Messages never show the URL's credentials.
    pub fn parse(raw: &ProxyConfig) -> Result<ProxySettings, Vec<ProxyError>> {
        let mut errors = Vec::new();
        let url = match Url::parse(raw.url.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                errors.push(ProxyError::Url("a proxy URL is http://host:port or https://host:port".into()));
                None
            }
            Err(e) => {
                errors.push(ProxyError::Url(format!("invalid URL: {e}")));
                None
            }
        };
        if url.as_ref().is_some_and(|u| !matches!(u.path(), "" | "/") || u.query().is_some()) {
            errors.push(ProxyError::Url("a proxy URL has no path or query".into()));
        }
        let mut no_proxy = Vec::new();
        for (index, entry) in raw.no_proxy.iter().enumerate() {
            match NoProxyRule::parse(entry) {
                Ok(rule) => no_proxy.push(rule),
                Err(message) => errors.push(ProxyError::NoProxy { index, message }),
            }
        }
        match url {
            Some(url) if errors.is_empty() => Ok(ProxySettings { url, no_proxy }),
            _ => Err(errors),
        }
    }

    /// The proxy's host name, when it is a name rather than an address.
    pub(super) fn host_name(&self) -> Option<String> {
        match self.url.host() {
            Some(url::Host::Domain(d)) => Some(d.to_string()),
            _ => None,
        }
    }

    /// Whether a request to `dst` goes through the proxy.
    pub fn route(&self, dst: &Url) -> bool {
        let Some(host) = dst.host() else { return true };
        if let (url::Host::Domain(d), Some(proxy)) = (&host, self.host_name()) {
            // Never a direct connection to the proxy's own host: the resolver lets that name
            // through unchecked.
            if same_host(d, &proxy) {
                return true;
            }
        }
        !self.no_proxy.iter().any(|rule| rule.matches(&host))
    }

    /// Sends `builder`'s requests through this proxy, except to the `no_proxy` hosts, with
    /// every destination checked against `policy` before the proxy is asked to reach it.
    pub(super) fn install(&self, builder: reqwest::ClientBuilder, policy: Policy) -> reqwest::ClientBuilder {
        let selector = self.clone();
        let proxy_url = self.url.clone();
        builder
            .proxy(reqwest::Proxy::custom(move |dst| {
                selector.route(dst).then(|| {
                    PROXIED.with(|p| p.set(Some(dst.clone())));
                    proxy_url.clone()
                })
            }))
            .connector_layer(ProxyPolicyLayer { policy })
    }

    /// What tells two proxy settings apart, for sharing clients.
    pub(super) fn cache_key(&self) -> String {
        format!("{}|{:?}", self.url, self.no_proxy)
    }
}

thread_local! {
    /// The destination the proxy selector just sent through the proxy, on this thread.
    /// reqwest calls the selector synchronously inside the connector's `call`, so
    /// [`ProxyPolicy::call`] finds it here right after calling its inner service, before
    /// anything else can run on the thread.
    static PROXIED: Cell<Option<Url>> = const { Cell::new(None) };
}

/// Wraps reqwest's connector: when a new connection is about to go through the proxy, the
/// destination host is resolved and checked against the policy first, and the connection
/// is never opened when any of its addresses is refused (the proxy resolves the name again
/// on its own, and may pick any of them).
#[derive(Debug, Clone, Copy)]
struct ProxyPolicyLayer {
    policy: Policy,
}

impl<S> tower_layer::Layer<S> for ProxyPolicyLayer {
    type Service = ProxyPolicy<S>;

    fn layer(&self, inner: S) -> ProxyPolicy<S> {
        ProxyPolicy { inner, policy: self.policy }
    }
}

/// The service [`ProxyPolicyLayer`] builds.
#[derive(Debug, Clone)]
struct ProxyPolicy<S> {
    inner: S,
    policy: Policy,
}

impl<S, R> tower_service::Service<R> for ProxyPolicy<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: From<Refused> + From<Unresolved> + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        PROXIED.with(|p| p.take());
        // Only prepares the connection: reqwest's connect future does nothing until polled,
        // so nothing reaches the proxy before the check below has passed.
        let connecting = self.inner.call(request);
        let proxied = PROXIED.with(|p| p.take());
        let policy = self.policy;
        Box::pin(async move {
            if let Some(dst) = proxied {
                match check_destination(policy, &dst).await {
                    Ok(()) => {}
                    Err(CheckError::Refused(r)) => return Err(r.into()),
                    Err(CheckError::Unresolved(u)) => return Err(u.into()),
                }
            }
            connecting.await
        })
    }
}

/// Why a destination is not handed to the proxy.
enum CheckError {
    Refused(Refused),
    Unresolved(Unresolved),
}

impl From<Refused> for CheckError {
    fn from(r: Refused) -> Self {
        CheckError::Refused(r)
    }
}

impl From<Unresolved> for CheckError {
    fn from(u: Unresolved) -> Self {
        CheckError::Unresolved(u)
    }
}

/// Resolves a destination's host and checks every address it has.
async fn check_destination(policy: Policy, dst: &Url) -> Result<(), CheckError> {
    let port = dst.port_or_known_default().unwrap_or(443);
    match dst.host() {
        Some(url::Host::Ipv4(v4)) => policy.check(IpAddr::V4(v4))?,
        Some(url::Host::Ipv6(v6)) => policy.check(IpAddr::V6(v6))?,
        Some(url::Host::Domain(name)) => {
            let unresolved = |source| Unresolved { host: name.to_string(), source };
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port)).await.map_err(unresolved)?.collect();
            if addrs.is_empty() {
                return Err(unresolved(std::io::Error::other("no address")).into());
            }
            for a in addrs {
                policy.check(a.ip())?;
            }
        }
        None => return Err(Unresolved { host: String::new(), source: std::io::Error::other("no host") }.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_rules_choose_direct_hosts() {
        let settings = ProxySettings::parse(&ProxyConfig {
            url: "http://proxy.internal:3128".into(),
            no_proxy: vec![".svc.cluster.local".into(), "10.0.0.0/8".into(), "Example.ORG".into(), "[::1]".into()],
        })
        .unwrap();
        let proxied = |u: &str| settings.route(&Url::parse(u).unwrap());
        assert!(!proxied("http://api.ns.svc.cluster.local/x"));
        assert!(!proxied("http://svc.cluster.local./x"));
        assert!(!proxied("http://10.20.30.40:8080/"));
        assert!(!proxied("https://www.example.org/"));
        assert!(!proxied("http://[::1]:80/"));
        assert!(proxied("https://notexample.org/"));
        assert!(proxied("http://11.0.0.1/"));
        assert!(proxied("https://hooks.slack.com/services/x"));
        // The proxy's own host is never reached directly, whatever the list says.
        let own =
            ProxySettings::parse(&ProxyConfig { url: "http://proxy.internal:3128".into(), no_proxy: vec!["*".into()] })
                .unwrap();
        assert!(own.route(&Url::parse("http://PROXY.internal/").unwrap()));
        assert!(!own.route(&Url::parse("http://other.internal/").unwrap()));
        assert!(!format!(
            "{:?}",
            ProxySettings::parse(&ProxyConfig { url: "http://u:hunter2@p:1".into(), no_proxy: vec![] }).unwrap()
        )
        .contains("hunter2"));
    }
}
