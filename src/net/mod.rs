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

mod clients;
mod policy;
mod proxy;
mod resolver;

pub use clients::{ClientError, Clients, Endpoint};
pub use policy::{refused_in, Policy};
pub use proxy::{ProxyError, ProxySettings};
