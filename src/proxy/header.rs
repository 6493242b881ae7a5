//! What a PROXY protocol header says, and parsing it from the head of a
//! connection or a datagram: v1 in [`super::v1`], v2 through `ppp` once all
//! of its bytes are in (its length is in its fixed part).

use std::net::SocketAddr;
use std::path::PathBuf;

use ppp::v2::{self, Command};

use super::v1::{self, V1};
use crate::Address;

/// The longest header read from a connection or a datagram. HAProxy and
/// nginx send well under this (tens of bytes, a few hundred with TLVs); a
/// peer that sends more is refused rather than buffered.
pub(crate) const MAX_HEADER: usize = 4096;

/// A v2 header's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;

/// Kinds of the v2 TLVs a balancer may attach ([`ProxyHeader::tlv`]), as
/// the protocol's specification and the cloud vendors number them.
pub mod tlv {
    /// The application protocol the client negotiated (ALPN), e.g. `h2`.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI or HTTP authority).
    pub const AUTHORITY: u8 = 0x02;
    /// A CRC32c checksum of the header.
    pub const CRC32C: u8 = 0x03;
    /// Padding, to be ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque id the balancer gave the connection (HAProxy's `unique-id`).
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS details of the client's connection to the balancer (with sub-TLVs).
    pub const SSL: u8 = 0x20;
    /// The network namespace the connection came from.
    pub const NETNS: u8 = 0x30;
    /// Google Cloud: the Private Service Connect id.
    pub const GCP: u8 = 0xE0;
    /// AWS: the VPC endpoint id (first byte 0x01, then the id).
    pub const AWS: u8 = 0xEA;
    /// Azure: the Private Link service id (first byte 0x01, then the id).
    pub const AZURE: u8 = 0xEE;
}

/// What a trusted balancer said about a connection or a datagram, from
/// [`Request::proxy_header`](crate::Request::proxy_header).
///
/// The client's address is already [`Request::client_address`](crate::Request::client_address);
/// this adds the balancer's own address, the address the client connected
/// to, and v2's TLVs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    version: u8,
    proxy: Address,
    source: Option<Address>,
    destination: Option<Address>,
    tlvs: Vec<(u8, Box<[u8]>)>,
}

impl ProxyHeader {
    /// The protocol version the balancer spoke: 1 (text) or 2 (binary).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The balancer: the socket's own peer.
    pub fn proxy_address(&self) -> &Address {
        &self.proxy
    }

    /// The client as the header names it. `None` when the header carries no
    /// address (v2 `LOCAL`, as in health checks, or v1 `UNKNOWN`): then the
    /// request's client address is the balancer's.
    pub fn source_address(&self) -> Option<&Address> {
        self.source.as_ref()
    }

    /// The address the client connected to, on the balancer (the original
    /// destination), when the header carries one.
    pub fn destination_address(&self) -> Option<&Address> {
        self.destination.as_ref()
    }

    /// Every v2 TLV, in the order sent: kind (see [`tlv`]) and value.
    pub fn tlvs(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.tlvs.iter().map(|(kind, value)| (*kind, &**value))
    }

    /// The value of the first TLV of `kind` (see [`tlv`]).
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs().find(|(k, _)| *k == kind).map(|(_, value)| value)
    }

    /// The client's negotiated application protocol ([`tlv::ALPN`]).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tlv(tlv::ALPN)
    }

    /// The host name the client asked for ([`tlv::AUTHORITY`]), if UTF-8.
    pub fn authority(&self) -> Option<&str> {
        self.tlv(tlv::AUTHORITY).and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The id the balancer gave the connection ([`tlv::UNIQUE_ID`]).
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(tlv::UNIQUE_ID)
    }

    /// The address the request is served as coming from.
    pub(crate) fn client(&self) -> Address {
        self.source.clone().unwrap_or_else(|| self.proxy.clone())
    }
}

/// What the bytes at the head of a connection or datagram are.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A header may be starting; more bytes are needed to tell.
    NeedMore,
    /// Not a header: the bytes are the client's own.
    Absent,
    /// A whole header of `len` bytes.
    Header { len: usize, header: ProxyHeader },
    /// A header that is broken or too long; the reason says how.
    Malformed(String),
}

/// Parses a v1 or v2 header at the head of a connection's bytes, sent by
/// `proxy`.
pub(crate) fn parse_stream(bytes: &[u8], proxy: &Address) -> Parsed {
    if starts_with_or_within(bytes, v2::PROTOCOL_PREFIX) {
        return parse_v2(bytes, proxy);
    }
    if !bytes.starts_with(v1::SIGNATURE) {
        return if v1::SIGNATURE.starts_with(bytes) { Parsed::NeedMore } else { Parsed::Absent };
    }
    match v1::parse(bytes) {
        V1::NeedMore => Parsed::NeedMore,
        V1::Header { len, addresses } => Parsed::Header { len, header: from_v1(addresses, proxy) },
        V1::Malformed(reason) => Parsed::Malformed(format!("bad PROXY v1 header: {reason}")),
    }
}

/// Parses a v2 header at the head of a datagram from `proxy`: the whole
/// header must be in it (v1 is for streams only).
pub(crate) fn parse_datagram(packet: &[u8], proxy: &Address) -> Parsed {
    if !packet.starts_with(v2::PROTOCOL_PREFIX) {
        return Parsed::Absent;
    }
    match parse_v2(packet, proxy) {
        Parsed::NeedMore => Parsed::Malformed("the datagram ends inside its PROXY v2 header".into()),
        parsed => parsed,
    }
}

/// Whether `bytes` begin with `signature`, or are the start of it.
fn starts_with_or_within(bytes: &[u8], signature: &[u8]) -> bool {
    bytes.starts_with(signature) || signature.starts_with(bytes)
}

/// A v2 header is parsed only once all of it is in: until then any split
/// point reads as "need more", whatever a parser makes of a cut header.
fn parse_v2(bytes: &[u8], proxy: &Address) -> Parsed {
    let Some(length) = bytes.get(14..V2_FIXED) else {
        return if v2::PROTOCOL_PREFIX.iter().zip(bytes).all(|(a, b)| a == b) {
            Parsed::NeedMore
        } else {
            Parsed::Malformed("bad PROXY v2 signature".into())
        };
    };
    let total = V2_FIXED + usize::from(u16::from_be_bytes([length[0], length[1]]));
    if total > MAX_HEADER {
        return Parsed::Malformed(format!("PROXY v2 header of {total} bytes is over the {MAX_HEADER}-byte limit"));
    }
    let Some(whole) = bytes.get(..total) else { return Parsed::NeedMore };
    match v2::Header::try_from(whole) {
        Ok(header) => match from_v2(&header, proxy) {
            Ok(parsed) => Parsed::Header { len: total, header: parsed },
            Err(reason) => Parsed::Malformed(reason),
        },
        Err(e) => Parsed::Malformed(format!("bad PROXY v2 header: {e}")),
    }
}

fn from_v1(addresses: Option<(SocketAddr, SocketAddr)>, proxy: &Address) -> ProxyHeader {
    let (source, destination) = match addresses {
        Some((source, destination)) => {
            (Some(inet(source.ip(), source.port())), Some(inet(destination.ip(), destination.port())))
        }
        None => (None, None),
    };
    ProxyHeader { version: 1, proxy: proxy.clone(), source, destination, tlvs: Vec::new() }
}

/// What a whole v2 header says; a TLV that runs past the header's end is
/// refused, not dropped (what else the balancer meant cannot be known).
fn from_v2(header: &v2::Header<'_>, proxy: &Address) -> Result<ProxyHeader, String> {
    let (source, destination) = match (header.command, header.addresses) {
        // LOCAL: the balancer speaking for itself (a health check).
        (Command::Local, _) | (_, v2::Addresses::Unspecified) => (None, None),
        (Command::Proxy, v2::Addresses::IPv4(a)) => (
            Some(inet(a.source_address.into(), a.source_port)),
            Some(inet(a.destination_address.into(), a.destination_port)),
        ),
        (Command::Proxy, v2::Addresses::IPv6(a)) => (
            Some(inet(a.source_address.into(), a.source_port)),
            Some(inet(a.destination_address.into(), a.destination_port)),
        ),
        (Command::Proxy, v2::Addresses::Unix(a)) => (Some(unix(&a.source)), Some(unix(&a.destination))),
    };
    let tlvs = header
        .tlvs()
        .map(|tlv| tlv.map(|t| (t.kind, Box::from(&*t.value))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PROXY v2 header: a TLV runs past its end ({e})"))?;
    Ok(ProxyHeader { version: 2, proxy: proxy.clone(), source, destination, tlvs })
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.8`) is shown as the IPv4
/// address it is, as the trust check already reads it.
fn inet(ip: std::net::IpAddr, port: u16) -> Address {
    Address::Inet(SocketAddr::new(ip.to_canonical(), port))
}

/// A v2 Unix address: a NUL-padded path, or (leading NUL) an abstract name.
fn unix(raw: &[u8; 108]) -> Address {
    use std::os::unix::ffi::OsStrExt;
    match raw.split_first() {
        Some((0, name)) => {
            let end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end == 0 { Address::Unnamed } else { Address::Abstract(name[..end].to_vec()) }
        }
        _ => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Address::Path(PathBuf::from(std::ffi::OsStr::from_bytes(&raw[..end])))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer() -> Address {
        Address::Inet("127.0.0.1:40000".parse().unwrap())
    }

    #[test]
    fn v1_gives_both_addresses_and_its_length() {
        let bytes = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 8080\r\n42\n";
        let Parsed::Header { len, header } = parse_stream(bytes, &balancer()) else { panic!("not a header") };
        assert_eq!(len, bytes.len() - 3);
        assert_eq!(header.client().to_string(), "192.0.2.7:5555");
        assert_eq!(header.destination_address().unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(header.version(), 1);
    }

    #[test]
    fn a_prefix_of_either_signature_needs_more_and_other_bytes_are_absent() {
        for bytes in [&b"P"[..], b"PROXY", b"PROXY TCP4 1.2.3.4", b"\r\n\r\n\0\r\nQ", b"\r\n"] {
            assert!(matches!(parse_stream(bytes, &balancer()), Parsed::NeedMore), "{bytes:?}");
        }
        for bytes in [&b"42\n"[..], b"PROXYZ", b"GET / HTTP/1.0\r\n"] {
            assert!(matches!(parse_stream(bytes, &balancer()), Parsed::Absent), "{bytes:?}");
        }
    }

    #[test]
    fn broken_and_oversized_headers_are_malformed() {
        let long_v1 = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        let mut huge_v2 = v2::PROTOCOL_PREFIX.to_vec();
        huge_v2.extend([0x21, 0x11, 0xff, 0xff]);
        for bytes in [&b"PROXY TCP9 a b c d\r\n"[..], &long_v1, &huge_v2] {
            assert!(matches!(parse_stream(bytes, &balancer()), Parsed::Malformed(_)), "{bytes:?}");
        }
    }

    #[test]
    fn v2_local_keeps_the_balancer_as_client_and_tlvs_are_kept() {
        let addresses = v2::Addresses::from((
            "192.0.2.7:5555".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:80".parse::<SocketAddr>().unwrap(),
        ));
        let header = v2::Builder::with_addresses(0x20, v2::Protocol::Stream, addresses)
            .write_tlv(tlv::AUTHORITY, b"example.org")
            .unwrap()
            .build()
            .unwrap();
        let Parsed::Header { len, header } = parse_stream(&header, &balancer()) else { panic!("not a header") };
        assert_eq!(len, 16 + 12 + 3 + 11);
        assert_eq!(header.source_address(), None);
        assert_eq!(header.client(), balancer());
        assert_eq!(header.authority(), Some("example.org"));
    }

    #[test]
    fn a_datagram_must_hold_its_whole_v2_header() {
        let addresses = v2::Addresses::from((
            "192.0.2.7:5555".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:53".parse::<SocketAddr>().unwrap(),
        ));
        let header = v2::Builder::with_addresses(0x21, v2::Protocol::Datagram, addresses).build().unwrap();
        assert!(matches!(parse_datagram(&header[..20], &balancer()), Parsed::Malformed(_)));
        assert!(matches!(parse_datagram(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n", &balancer()), Parsed::Absent));
        let Parsed::Header { header, .. } = parse_datagram(&[&header[..], b"7\n"].concat(), &balancer()) else {
            panic!("not a header")
        };
        assert_eq!(header.client().to_string(), "192.0.2.7:5555");
    }

    /// A v1 header for `source` and `destination`, of one family.
    fn v1_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        let (s, d) = (source.ip(), destination.ip());
        format!("PROXY {family} {s} {d} {} {}\r\n", source.port(), destination.port()).into_bytes()
    }

    fn v2_header(source: SocketAddr, destination: SocketAddr, proxy: bool, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let command = if proxy { 0x21 } else { 0x20 };
        let mut builder =
            v2::Builder::with_addresses(command, v2::Protocol::Stream, v2::Addresses::from((source, destination)));
        for (kind, value) in tlvs {
            builder = builder.write_tlv(*kind, value).unwrap();
        }
        builder.build().unwrap()
    }

    fn addresses() -> impl proptest::strategy::Strategy<Value = (SocketAddr, SocketAddr)> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p, b, q)| (
                SocketAddr::new(std::net::Ipv4Addr::from(a).into(), p),
                SocketAddr::new(std::net::Ipv4Addr::from(b).into(), q)
            )),
            (any::<[u8; 16]>(), any::<u16>(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p, b, q)| (
                SocketAddr::new(std::net::Ipv6Addr::from(a).into(), p),
                SocketAddr::new(std::net::Ipv6Addr::from(b).into(), q)
            )),
        ]
    }

    /// Every split point of a whole header reads as "need more"; the whole
    /// parses, to the addresses it was made of.
    fn splits_need_more(header: &[u8], source: Option<SocketAddr>) {
        for split in 0..header.len() {
            let parsed = parse_stream(&header[..split], &balancer());
            assert!(matches!(parsed, Parsed::NeedMore), "split at {split} of {header:?}: {parsed:?}");
        }
        let with_request = [header, b"7\n"].concat();
        let Parsed::Header { len, header: parsed } = parse_stream(&with_request, &balancer()) else {
            panic!("whole header refused: {header:?}")
        };
        assert_eq!(len, header.len());
        let canonical = source.map(|s| Address::Inet(SocketAddr::new(s.ip().to_canonical(), s.port())));
        assert_eq!(parsed.source_address(), canonical.as_ref());
    }

    proptest::proptest! {
        #[test]
        fn every_split_of_a_v1_header_needs_more((source, destination) in addresses()) {
            splits_need_more(&v1_header(source, destination), Some(source));
        }

        #[test]
        fn every_split_of_a_v2_header_needs_more(
            (source, destination) in addresses(),
            proxy in proptest::bool::ANY,
            tlvs in proptest::collection::vec((0u8..=255, proptest::collection::vec(0u8..=255, 0..40)), 0..4),
        ) {
            let header = v2_header(source, destination, proxy, &tlvs);
            splits_need_more(&header, proxy.then_some(source));
            let Parsed::Header { header: parsed, .. } = parse_stream(&header, &balancer()) else { panic!() };
            let kept: Vec<(u8, Vec<u8>)> = parsed.tlvs().map(|(k, v)| (k, v.to_vec())).collect();
            proptest::prop_assert_eq!(kept, tlvs);
        }
    }

    #[test]
    fn an_ipv4_mapped_client_is_shown_as_ipv4() {
        let bytes = b"PROXY TCP6 ::ffff:192.0.2.8 ::1 5555 80\r\n";
        let Parsed::Header { header, .. } = parse_stream(bytes, &balancer()) else { panic!("not a header") };
        assert_eq!(header.client().to_string(), "192.0.2.8:5555");
    }

    #[test]
    fn a_v2_tlv_running_past_the_header_is_refused() {
        let source: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let mut header = v2_header(source, "127.0.0.1:80".parse().unwrap(), true, &[(tlv::AUTHORITY, b"ab".to_vec())]);
        // The TLV says 9 bytes follow; the header ends after 2.
        let at = header.len() - 4;
        header[at + 1..at + 3].copy_from_slice(&9u16.to_be_bytes());
        let parsed = parse_stream(&header, &balancer());
        assert!(matches!(&parsed, Parsed::Malformed(reason) if reason.contains("TLV")), "{parsed:?}");
    }
}
