//! What a client is known by: its IPv4 address, its IPv6 prefix, or its
//! Unix uid. Fixed-size, so the table allocates nothing per client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::PerClient;
use crate::Address;

/// One client, as the table counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    V4(Ipv4Addr),
    /// The address with the bits past the prefix cleared.
    V6(Ipv6Addr, u8),
    Uid(u32),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::V4(ip) => write!(f, "{ip}"),
            Key::V6(ip, 128) => write!(f, "{ip}"),
            Key::V6(ip, bits) => write!(f, "{ip}/{bits}"),
            Key::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}

impl Key {
    /// The client `peer` is (`uid`: a Unix peer's, when known), or `None`
    /// when it is exempt or cannot be told apart (a Unix peer of unknown
    /// uid).
    pub(crate) fn of(peer: &Address, uid: Option<u32>, settings: &PerClient) -> Option<Key> {
        let key = match peer {
            Address::Inet(addr) => match addr.ip() {
                IpAddr::V4(ip) => Key::V4(ip),
                IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                    Some(ip) => Key::V4(ip),
                    None => Key::V6(masked(ip, settings.ipv6_prefix), settings.ipv6_prefix),
                },
            },
            _ => Key::Uid(uid?),
        };
        (!key.is_exempt(settings)).then_some(key)
    }

    fn is_exempt(&self, settings: &PerClient) -> bool {
        match *self {
            Key::Uid(uid) => settings.exempt_uids.contains(&uid),
            Key::V4(ip) => settings.exempt.iter().any(|&(net, len)| match net {
                IpAddr::V4(net) => prefix(&ip.octets(), &net.octets(), len),
                IpAddr::V6(net) => {
                    net.to_ipv4_mapped().is_some_and(|net| prefix(&ip.octets(), &net.octets(), len.saturating_sub(96)))
                }
            }),
            // A client keyed by its prefix is exempt when its whole prefix is.
            Key::V6(ip, bits) => settings.exempt.iter().any(|&(net, len)| match net {
                IpAddr::V6(net) => len <= bits && prefix(&ip.octets(), &net.octets(), len),
                IpAddr::V4(_) => false,
            }),
        }
    }
}

/// `ip` with the bits past the first `bits` cleared.
fn masked(ip: Ipv6Addr, bits: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}

/// Whether `a` and `b` agree in their first `bits` bits.
fn prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str, settings: &PerClient) -> Option<Key> {
        Key::of(&Address::Inet(addr.parse().unwrap()), None, settings)
    }

    #[test]
    fn ipv4_is_its_address_ipv6_its_prefix_and_mapped_ipv6_its_ipv4() {
        let settings = PerClient::new().connections(1);
        assert_eq!(key("192.0.2.7:1", &settings), Some(Key::V4("192.0.2.7".parse().unwrap())));
        assert_eq!(key("[::ffff:192.0.2.7]:1", &settings), key("192.0.2.7:9", &settings));
        let a = key("[2001:db8:1:2:aaaa::1]:1", &settings).unwrap();
        assert_eq!(a, key("[2001:db8:1:2:bbbb::9]:1", &settings).unwrap());
        assert_ne!(a, key("[2001:db8:1:3::1]:1", &settings).unwrap());
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let whole = PerClient::new().connections(1).ipv6_prefix(128);
        assert_ne!(key("[2001:db8::1]:1", &whole), key("[2001:db8::2]:1", &whole));
        let uid = Key::of(&Address::Path("/run/x.sock".into()), Some(1000), &settings);
        assert_eq!(uid.map(|k| k.to_string()).as_deref(), Some("uid 1000"));
        assert_eq!(Key::of(&Address::Unnamed, None, &settings), None, "a Unix peer of unknown uid is not limited");
    }

    #[test]
    fn exempt_networks_and_uids_are_not_limited() {
        let settings = PerClient::new()
            .connections(1)
            .exempt("10.1.0.0".parse().unwrap(), 16)
            .exempt("2001:db8::".parse().unwrap(), 32)
            .exempt("::ffff:192.0.2.0".parse().unwrap(), 120)
            .exempt_uid(0);
        assert_eq!(key("10.1.200.3:1", &settings), None);
        assert!(key("10.2.0.1:1", &settings).is_some());
        assert_eq!(key("[::ffff:10.1.0.1]:1", &settings), None, "mapped, as IPv4");
        assert_eq!(key("192.0.2.99:1", &settings), None, "an IPv4 network given mapped");
        assert_eq!(key("[2001:db8:5::1]:1", &settings), None);
        assert!(key("[2001:db9::1]:1", &settings).is_some());
        assert_eq!(Key::of(&Address::Path("/x".into()), Some(0), &settings), None);
        assert!(Key::of(&Address::Path("/x".into()), Some(1), &settings).is_some());
    }
}
