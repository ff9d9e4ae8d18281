//! Outbound safety: which addresses a webhook may be sent to. Loopback, private, link-local
//! (cloud metadata included), shared (CGNAT), multicast, unspecified, documentation, benchmarking
//! and reserved addresses are refused, for IPv4 and IPv6 (IPv4-mapped, NAT64 and 6to4 addresses
//! are judged by the IPv4 address inside; Teredo is refused), unless an operator allows a range
//! explicitly.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::ParseError;

/// Why an address is refused: a stable name used in attempt errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Loopback,
    Private,
    LinkLocal,
    SharedAddressSpace,
    Multicast,
    Unspecified,
    Documentation,
    Benchmarking,
    Reserved,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local (cloud metadata included)",
            Self::SharedAddressSpace => "shared address space (CGNAT)",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Reserved => "reserved",
        }
    }
}

impl Refusal {
    /// "a loopback address", "an unspecified address".
    pub fn an_address(self) -> String {
        let reason = self.as_str();
        let article = if reason.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {reason} address")
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Refusal::Unspecified,
        (127, _, _) => Refusal::Loopback,
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Refusal::Private,
        (169, 254, _) => Refusal::LinkLocal,
        (100, 64..=127, _) => Refusal::SharedAddressSpace,
        (224..=239, _, _) => Refusal::Multicast,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Refusal::Documentation,
        (198, 18..=19, _) => Refusal::Benchmarking,
        // 192.88.99.0/24: the deprecated 6to4 relay anycast prefix (RFC 7526).
        (192, 0, 0) | (192, 88, 99) | (240..=255, _, _) => Refusal::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    // 6to4 (2002::/16) carries an IPv4 address in bits 16–47: refused when that one is.
    if s[0] == 0x2002 {
        return classify_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    Some(if ip.is_unspecified() {
        Refusal::Unspecified
    } else if ip.is_loopback() {
        Refusal::Loopback
    } else if ip.is_multicast() {
        Refusal::Multicast
    } else if s[0] & 0xffc0 == 0xfe80 {
        Refusal::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 {
        Refusal::Private
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Refusal::Documentation
    } else if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        // 2001:2::/48 (RFC 5180).
        Refusal::Benchmarking
    } else if s[0] == 0x2001 && s[1] == 0 {
        // Teredo (2001::/32) tunnels to an obfuscated IPv4 address that cannot be judged.
        Refusal::Reserved
    } else if s[0] & 0xe000 != 0x2000 {
        // Everything outside 2000::/3 (global unicast) is reserved or special.
        Refusal::Reserved
    } else {
        return None;
    })
}

/// Whether `ip` is refused by default, and why.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// An address range such as `10.0.0.0/8`, `127.0.0.1` (one address) or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            ParseError::Invalid(format!("{text:?} is not an IP address or CIDR range"))
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                ParseError::Invalid(format!("{text:?}: the prefix must be 0 to {max}"))
            })?,
        };
        Ok(Self { network, prefix })
    }
}

/// An address the policy refuses, and why: "10.0.0.1 is a private address".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedAddress {
    pub address: IpAddr,
    pub reason: Refusal,
}

impl fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.address, self.reason.an_address())
    }
}

/// Where webhooks may go: public addresses, plus the ranges an operator allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allowed: Vec<Cidr>,
}

impl DestinationPolicy {
    pub fn allowing(allowed: Vec<Cidr>) -> Self {
        Self { allowed }
    }

    /// Parses a comma-separated list of ranges (`DISPATCH_ALLOW_DESTINATIONS`).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let allowed = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(Self { allowed })
    }

    /// `Ok` when a webhook may be sent to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.allowed.iter().any(|range| range.contains(ip)) {
            return Ok(());
        }
        classify(ip).map_or(Ok(()), Err)
    }

    /// The first of `addresses` that may not be reached, if any: a host is refused when any
    /// address it resolves to is.
    pub fn first_refused(
        &self,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Option<RefusedAddress> {
        addresses.into_iter().find_map(|address| {
            self.check(address)
                .err()
                .map(|reason| RefusedAddress { address, reason })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn every_refused_class_is_refused_in_both_families() {
        for (address, why) in [
            ("127.0.0.1", Refusal::Loopback),
            ("::1", Refusal::Loopback),
            ("10.1.2.3", Refusal::Private),
            ("172.16.0.1", Refusal::Private),
            ("172.31.255.255", Refusal::Private),
            ("192.168.1.1", Refusal::Private),
            ("fd12:3456::1", Refusal::Private),
            ("169.254.169.254", Refusal::LinkLocal),
            ("fe80::1", Refusal::LinkLocal),
            ("100.64.0.1", Refusal::SharedAddressSpace),
            ("224.0.0.1", Refusal::Multicast),
            ("ff02::1", Refusal::Multicast),
            ("0.0.0.0", Refusal::Unspecified),
            ("::", Refusal::Unspecified),
            ("192.0.2.10", Refusal::Documentation),
            ("203.0.113.5", Refusal::Documentation),
            ("2001:db8::1", Refusal::Documentation),
            ("198.18.0.1", Refusal::Benchmarking),
            ("255.255.255.255", Refusal::Reserved),
            ("::ffff:127.0.0.1", Refusal::Loopback),
            ("::ffff:169.254.169.254", Refusal::LinkLocal),
            ("64:ff9b::a00:1", Refusal::Private),
            ("192.88.99.1", Refusal::Reserved),
            ("2002:7f00:1::1", Refusal::Loopback),
            ("2002:a00:1::", Refusal::Private),
            ("2002:a9fe:a9fe::1", Refusal::LinkLocal),
            ("2001::1", Refusal::Reserved),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Refusal::Reserved),
            ("2001:2::1", Refusal::Benchmarking),
        ] {
            assert_eq!(classify(ip(address)), Some(why), "{address}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "2001:2:1::1",
        ] {
            assert_eq!(classify(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn allowed_ranges_override_the_refusal() {
        let policy = DestinationPolicy::parse("127.0.0.0/8, 10.1.0.0/16,fd00::/8").expect("valid");
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(policy.check(ip("10.1.200.3")).is_ok());
        assert_eq!(policy.check(ip("10.2.0.1")), Err(Refusal::Private));
        assert!(policy.check(ip("fd99::1")).is_ok());
        assert_eq!(policy.check(ip("::1")), Err(Refusal::Loopback));
        assert!(DestinationPolicy::default().check(ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn the_first_refused_address_of_a_host_is_named() {
        let policy = DestinationPolicy::parse("127.0.0.0/8").expect("valid");
        let resolved = [ip("8.8.8.8"), ip("127.0.0.1"), ip("10.0.0.7"), ip("::1")];
        let refused = policy.first_refused(resolved).expect("10.0.0.7 is refused");
        assert_eq!(refused.address, ip("10.0.0.7"));
        assert_eq!(refused.reason, Refusal::Private);
        assert_eq!(refused.to_string(), "10.0.0.7 is a private address");
        assert_eq!(policy.first_refused([ip("8.8.8.8"), ip("127.0.0.2")]), None);
        assert_eq!(policy.first_refused([]), None);
        let unspecified = policy.first_refused([ip("0.0.0.0")]).expect("refused");
        assert_eq!(unspecified.to_string(), "0.0.0.0 is an unspecified address");
    }

    #[test]
    fn ranges_parse_or_say_why_not() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("::1".parse::<Cidr>().is_ok());
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .is_ok_and(|c| c.contains(ip("1.2.3.4")))
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
        assert!(DestinationPolicy::parse("10.0.0.0/8,nope").is_err());
    }
}
