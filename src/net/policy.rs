//! The destination policy: which addresses a request may reach, and why one is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

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
}
