//! Where requests may go and how: the destination policy (link-local and cloud-metadata
//! ranges always refused, private and loopback ones unless allowed), enforced after DNS
//! resolution by a resolver that filters addresses, and one pooled HTTP client per TLS
//! and proxy setting.
//!
//! Proxies: the clients never read `HTTP_PROXY`, `HTTPS_PROXY` or `ALL_PROXY`. Through a
//! proxy the destination's name is resolved by the proxy, not here, so the resolver above
//! would never see it and the policy would not run. A proxy is therefore only used when the
//! config names one (`delivery.proxy`), and then every destination it would carry is
//! resolved and checked here first ([`ProxyPolicyLayer`]), before the connection to the
//! proxy is opened.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use thiserror::Error;

use crate::config::raw::{ProxyConfig, TlsConfig};
use crate::connection::Connection;

/// A destination the policy refuses.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error(
    "destination {addr} refused: {why}{}{}",
    .via.map(|v| format!(" (reached through {v})")).unwrap_or_default(),
    if *.private { PRIVATE_HINT } else { "" }
)]
pub struct Refused {
    /// The address (the embedded IPv4 address when it was reached through an IPv6 form).
    pub addr: IpAddr,
    /// Which range it is in.
    pub why: &'static str,
    /// The IPv6 form that embedded it, if any: `NAT64 64:ff9b::/96` and the like.
    pub via: Option<&'static str>,
    /// Refused only because private networks are not allowed.
    pub private: bool,
}

/// Which destinations are allowed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Allow loopback and private ranges.
    pub allow_private: bool,
}

/// What the policy makes of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A public unicast address.
    Public,
    /// Loopback or a private range: refused unless `delivery.allow_private_networks`.
    Private(&'static str),
    /// Never a destination (metadata services, link-local, multicast, reserved).
    Never(&'static str),
}

const PRIVATE_HINT: &str =
    " (set delivery.allow_private_networks, or the connection's allow_private_network, to allow)";

impl Policy {
    /// Checks one address.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refused> {
        let (verdict, target, via) = classify(addr);
        match verdict {
            Verdict::Public => Ok(()),
            Verdict::Private(_) if self.allow_private => Ok(()),
            Verdict::Private(why) => Err(Refused { addr: target, why, via, private: true }),
            Verdict::Never(why) => Err(Refused { addr: target, why, via, private: false }),
        }
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

/// The verdict on an address, the address it really designates (the embedded IPv4 one for
/// IPv6 forms that carry one) and that form.
pub fn classify(addr: IpAddr) -> (Verdict, IpAddr, Option<&'static str>) {
    match addr {
        IpAddr::V4(v4) => (classify_v4(v4), addr, None),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some((v4, via)) => {
                let verdict = match (classify_v4(v4), via) {
                    // A local-use NAT64 prefix only exists inside a private network.
                    (Verdict::Public, LOCAL_NAT64) => Verdict::Private("local-use NAT64 range 64:ff9b:1::/48"),
                    (v, _) => v,
                };
                (verdict, IpAddr::V4(v4), Some(via))
            }
            None => (classify_v6(v6), addr, None),
        },
    }
}

fn classify_v4(v4: Ipv4Addr) -> Verdict {
    let [a, b, c, _] = v4.octets();
    // AWS/GCP/Azure/OpenStack 169.254.169.254, Alibaba 100.100.100.200, Azure wireserver 168.63.129.16.
    if matches!(v4.octets(), [169, 254, 169, 254] | [100, 100, 100, 200] | [168, 63, 129, 16]) {
        return Verdict::Never("cloud metadata service");
    }
    if a == 169 && b == 254 {
        return Verdict::Never("link-local range 169.254.0.0/16");
    }
    if a == 0 {
        return Verdict::Never("this-network range 0.0.0.0/8, not a destination");
    }
    if v4.is_broadcast() {
        return Verdict::Never("broadcast address");
    }
    if (224..240).contains(&a) {
        return Verdict::Never("multicast range 224.0.0.0/4");
    }
    if a >= 240 {
        return Verdict::Never("reserved range 240.0.0.0/4");
    }
    if a == 127 {
        return Verdict::Private("loopback range 127.0.0.0/8");
    }
    if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) {
        return Verdict::Private("private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)");
    }
    if a == 100 && (b & 0xc0) == 64 {
        return Verdict::Private("shared address space 100.64.0.0/10 (carrier-grade NAT)");
    }
    if a == 192 && b == 0 && c == 0 {
        return Verdict::Private("IETF protocol assignments 192.0.0.0/24");
    }
    if a == 198 && (b & 0xfe) == 18 {
        return Verdict::Private("benchmarking range 198.18.0.0/15");
    }
    Verdict::Public
}

fn classify_v6(v6: Ipv6Addr) -> Verdict {
    let s = v6.segments();
    if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Verdict::Never("cloud metadata service");
    }
    if v6.is_unspecified() {
        return Verdict::Never("unspecified address ::, not a destination");
    }
    if v6.is_loopback() {
        return Verdict::Private("loopback address ::1");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Verdict::Never("link-local range fe80::/10");
    }
    if s[0] >> 8 == 0xff {
        return Verdict::Never("multicast range ff00::/8");
    }
    if s[..4] == [0x100, 0, 0, 0] {
        return Verdict::Never("discard-only range 100::/64");
    }
    if (s[0] & 0xffc0) == 0xfec0 {
        return Verdict::Private("site-local range fec0::/10");
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Verdict::Private("unique local range fc00::/7");
    }
    Verdict::Public
}

const LOCAL_NAT64: &str = "local-use NAT64 64:ff9b:1::/48";

/// IPv6 forms that designate an IPv4 address: a connection to them reaches (or is
/// translated to) that address, so they are judged by it.
fn embedded_v4(v6: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some((low, "IPv4-mapped ::ffff:0:0/96"));
    }
    // `::` and `::1` are IPv6's own unspecified and loopback addresses.
    if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_unspecified() && !v6.is_loopback() {
        return Some((low, "IPv4-compatible ::/96"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some((low, "NAT64 64:ff9b::/96"));
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        // RFC 8215 leaves the prefix length open; the /96 layout (IPv4 last) is the usual one.
        return Some((low, LOCAL_NAT64));
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return Some((v4, "6to4 2002::/16"));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        // Teredo carries the client's IPv4 address inverted in its last 32 bits.
        return Some((Ipv4Addr::from(!u32::from(low)), "Teredo 2001::/32"));
    }
    None
}

/// A resolver that drops refused addresses, so a name cannot smuggle a request to a
/// forbidden range (including by rebinding between a check and the connection).
#[derive(Debug, Clone)]
struct PolicyResolver {
    policy: Policy,
    /// The configured proxy's host name: the operator chose it, and it commonly sits in a
    /// private range. Destinations never resolve through this exemption, because a
    /// destination on the proxy's host is always sent through the proxy (see
    /// [`ProxySettings::route`]) and checked there.
    proxy_host: Option<String>,
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

fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

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
    fn host_name(&self) -> Option<String> {
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

    fn cache_key(&self) -> String {
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
            let policy = c.policy(policy);
            let key = format!(
                "{}|{}|{}",
                tls_key(&c.tls),
                c.proxy.as_ref().map(ProxySettings::cache_key).unwrap_or_default(),
                policy.allow_private
            );
            let client = match cache.get(&key) {
                Some(client) => client.clone(),
                None => {
                    let client = build_client(&c.tls, c.proxy.as_ref(), policy)
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

fn build_client(tls: &TlsConfig, proxy: Option<&ProxySettings>, policy: Policy) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("hookbridge/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        // Proxy variables from the environment are ignored: through them the destination
        // would never be resolved here and the policy would not run.
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { policy, proxy_host: proxy.and_then(ProxySettings::host_name) }))
        .danger_accept_invalid_certs(!tls.verify);
    if let Some(settings) = proxy {
        let selector = settings.clone();
        let proxy_url = settings.url.clone();
        builder = builder
            .proxy(reqwest::Proxy::custom(move |dst| {
                selector.route(dst).then(|| {
                    PROXIED.with(|p| p.set(Some(dst.clone())));
                    proxy_url.clone()
                })
            }))
            .connector_layer(ProxyPolicyLayer { policy });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every range the policy refuses, and why: (address, refused even when private networks
    /// are allowed, words the reason holds).
    const REFUSED: &[(&str, bool, &str)] = &[
        // IPv4
        ("169.254.169.254", true, "cloud metadata"),
        ("100.100.100.200", true, "cloud metadata"),
        ("168.63.129.16", true, "cloud metadata"),
        ("169.254.1.1", true, "link-local range 169.254.0.0/16"),
        ("0.0.0.0", true, "this-network range 0.0.0.0/8"),
        ("0.1.2.3", true, "this-network range 0.0.0.0/8"),
        ("255.255.255.255", true, "broadcast"),
        ("224.0.0.1", true, "multicast range 224.0.0.0/4"),
        ("239.255.255.250", true, "multicast range 224.0.0.0/4"),
        ("240.0.0.1", true, "reserved range 240.0.0.0/4"),
        ("127.0.0.1", false, "loopback range 127.0.0.0/8"),
        ("127.255.0.9", false, "loopback range 127.0.0.0/8"),
        ("10.1.2.3", false, "private range"),
        ("172.16.0.1", false, "private range"),
        ("172.31.255.254", false, "private range"),
        ("192.168.1.1", false, "private range"),
        ("100.64.0.1", false, "shared address space 100.64.0.0/10"),
        ("100.127.255.254", false, "shared address space 100.64.0.0/10"),
        ("192.0.0.170", false, "IETF protocol assignments 192.0.0.0/24"),
        ("198.18.0.1", false, "benchmarking range 198.18.0.0/15"),
        ("198.19.255.254", false, "benchmarking range 198.18.0.0/15"),
        // IPv6
        ("fd00:ec2::254", true, "cloud metadata"),
        ("::", true, "unspecified"),
        ("fe80::1", true, "link-local range fe80::/10"),
        ("febf::1", true, "link-local range fe80::/10"),
        ("ff02::1", true, "multicast range ff00::/8"),
        ("100::1", true, "discard-only range 100::/64"),
        ("::1", false, "loopback address ::1"),
        ("fec0::1", false, "site-local range fec0::/10"),
        ("fc00::1", false, "unique local range fc00::/7"),
        ("fd12:3456::1", false, "unique local range fc00::/7"),
        // IPv6 forms that embed an IPv4 address are judged by it.
        ("::ffff:169.254.169.254", true, "cloud metadata service (reached through IPv4-mapped"),
        ("::ffff:127.0.0.1", false, "loopback range 127.0.0.0/8 (reached through IPv4-mapped"),
        ("::169.254.169.254", true, "cloud metadata service (reached through IPv4-compatible ::/96)"),
        ("::127.0.0.1", false, "loopback range 127.0.0.0/8 (reached through IPv4-compatible"),
        (
            "::10.0.0.1",
            false,
            "private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) (reached through IPv4-compatible",
        ),
        ("::0.0.0.2", true, "this-network range"),
        ("64:ff9b::169.254.169.254", true, "cloud metadata service (reached through NAT64 64:ff9b::/96)"),
        ("64:ff9b::a9fe:a9fe", true, "cloud metadata service (reached through NAT64"),
        ("64:ff9b::127.0.0.1", false, "loopback range 127.0.0.0/8 (reached through NAT64"),
        ("64:ff9b::192.168.0.1", false, "private range"),
        ("64:ff9b:1::169.254.169.254", true, "cloud metadata service (reached through local-use NAT64"),
        ("64:ff9b:1:abcd::10.0.0.1", false, "private range"),
        ("64:ff9b:1::203.0.113.10", false, "local-use NAT64 range 64:ff9b:1::/48"),
        ("2002:a9fe:a9fe::1", true, "cloud metadata service (reached through 6to4 2002::/16)"),
        ("2002:7f00:1::1", false, "loopback range 127.0.0.0/8 (reached through 6to4"),
        ("2001:0:4136:e378:8000:63bf:5601:5601", true, "cloud metadata service (reached through Teredo"),
    ];

    #[test]
    fn every_refused_range_and_why() {
        let strict = Policy { allow_private: false };
        let open = Policy { allow_private: true };
        for (text, always, why) in REFUSED {
            let ip: IpAddr = text.parse().unwrap();
            let refused = strict.check(ip).expect_err(text).to_string();
            assert!(refused.contains(why), "{text}: {refused:?} does not say {why:?}");
            assert_eq!(open.check(ip).is_err(), *always, "{text} with private networks allowed");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "203.0.113.10",
            "2606:4700::1111",
            "64:ff9b::8.8.8.8",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(strict.check(ip), Ok(()), "{public}");
        }
    }

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
