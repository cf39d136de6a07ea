//! Who may transfer the zone: source networks and TSIG keys.
//!
//! An entry of `[transfer] allow` matches a request when its source
//! address is inside the entry's network and, if the entry names a key,
//! the request is signed with that key. No entry, no transfer: the default
//! is that nobody may transfer the zone.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::tsig::Key;

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network's address (host bits as written; they are ignored).
    pub address: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or a network such as 10.0.0.0/8"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { address, prefix })
    }

    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 source
    /// (`::ffff:10.0.0.1`, from a dual-stack socket) counts as its IPv4
    /// address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
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

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// Who may ask what, by source address (`[access]`): zone answers for
/// sources in `allow_query`, forwarding for sources in `allow_recursion`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAccess {
    /// Networks whose queries are answered at all.
    pub allow_query: Vec<Cidr>,
    /// Networks whose queries for names outside the zone are forwarded.
    pub allow_recursion: Vec<Cidr>,
}

impl QueryAccess {
    /// Loopback and the private ranges (RFC 1918, RFC 6598 shared space,
    /// IPv6 unique local): an internal zone is never served to the
    /// internet by accident.
    pub fn default_query() -> Vec<Cidr> {
        [
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
        ]
        .iter()
        .filter_map(|c| Cidr::parse(c).ok())
        .collect()
    }

    /// Loopback only: fleetdns is no open resolver.
    pub fn default_recursion() -> Vec<Cidr> {
        ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|c| Cidr::parse(c).ok())
            .collect()
    }

    /// Whether `source` may be answered at all.
    pub fn may_query(&self, source: IpAddr) -> bool {
        self.allow_query.iter().any(|n| n.contains(source))
    }

    /// Whether `source`'s queries outside the zone may be forwarded.
    pub fn may_recurse(&self, source: IpAddr) -> bool {
        self.allow_recursion.iter().any(|n| n.contains(source))
    }
}

impl Default for QueryAccess {
    fn default() -> Self {
        QueryAccess {
            allow_query: Self::default_query(),
            allow_recursion: Self::default_recursion(),
        }
    }
}

/// One `allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Where requests may come from.
    pub from: Cidr,
    /// The key they must be signed with, if any.
    pub key: Option<Arc<Key>>,
}

/// Whether a request from `source`, signed with `key` (if it was), may
/// transfer the zone under `allow`.
pub fn allowed(allow: &[Allow], source: IpAddr, key: Option<&Key>) -> bool {
    allow.iter().any(|entry| {
        entry.from.contains(source)
            && match &entry.key {
                None => true,
                Some(wanted) => key.is_some_and(|k| k.name == wanted.name),
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_what_their_prefix_says() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.1.2".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(host.prefix, 32);
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "", "/8", "::/129", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
