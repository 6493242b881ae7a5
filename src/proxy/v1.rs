//! The PROXY protocol's v1 text header, parsed here rather than by `ppp`:
//! a header arrives over a stream in pieces, and every prefix of a valid
//! header must read as "need more" (ppp called `... 5555 ` malformed, an
//! empty port, when only the rest had not arrived). A prefix that no valid
//! header starts with is refused at once, so garbage is not waited for.
//!
//! ```text
//! PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n
//! PROXY TCP6 2001:db8::7 ::1 5555 80\r\n
//! PROXY UNKNOWN[ anything]\r\n
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The signature a v1 header starts with.
pub(super) const SIGNATURE: &[u8] = b"PROXY ";

/// The longest v1 header, CRLF included, as the specification bounds it.
pub(super) const MAX_LEN: usize = 107;

/// What the bytes at the head of a stream hold, as far as v1 goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum V1 {
    /// A valid header may still be arriving.
    NeedMore,
    /// A whole header of `len` bytes (CRLF included): the client and the
    /// address it connected to, or `None` for `UNKNOWN`.
    Header { len: usize, addresses: Option<(SocketAddr, SocketAddr)> },
    /// No valid header starts this way; the reason says where it broke.
    Malformed(String),
}

/// Parses the v1 header `bytes` start with (they start with [`SIGNATURE`]).
pub(super) fn parse(bytes: &[u8]) -> V1 {
    let line = &bytes[..bytes.len().min(MAX_LEN)];
    let Some(end) = line.iter().position(|&b| b == b'\r') else {
        if bytes.len() >= MAX_LEN {
            return V1::Malformed(format!("no CRLF within {MAX_LEN} bytes"));
        }
        return match check_fields(&line[SIGNATURE.len()..], false) {
            Ok(_) => V1::NeedMore,
            Err(reason) => V1::Malformed(reason),
        };
    };
    if end + 2 > MAX_LEN {
        return V1::Malformed(format!("no CRLF within {MAX_LEN} bytes"));
    }
    if bytes.get(end + 1).is_some_and(|&b| b != b'\n') {
        return V1::Malformed("CR not followed by LF".into());
    }
    let fields = match check_fields(&line[SIGNATURE.len()..end], true) {
        Ok(fields) => fields,
        Err(reason) => return V1::Malformed(reason),
    };
    if bytes.get(end + 1).is_none() {
        return V1::NeedMore;
    }
    V1::Header { len: end + 2, addresses: fields }
}

/// The protocols a v1 header names.
const PROTOCOLS: [&str; 3] = ["TCP4", "TCP6", "UNKNOWN"];

/// Checks the fields after `PROXY ` (`whole`: up to the CR; otherwise a
/// prefix, whose last field may be cut short). Returns the addresses of a
/// whole TCP header.
fn check_fields(text: &[u8], whole: bool) -> Result<Option<(SocketAddr, SocketAddr)>, String> {
    let fields: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
    // The field being typed when the bytes ran out, if any.
    let cut = if whole { None } else { fields.len().checked_sub(1) };
    let protocol = String::from_utf8_lossy(fields[0]);
    if cut == Some(0) {
        return match PROTOCOLS.iter().any(|p| p.as_bytes().starts_with(fields[0])) {
            true => Ok(None),
            false => Err(format!("unknown protocol {protocol:?}")),
        };
    }
    // UNKNOWN: whatever follows, up to the CRLF, is ignored.
    let v4 = match fields[0] {
        b"UNKNOWN" => return Ok(None),
        b"TCP4" => true,
        b"TCP6" => false,
        _ => return Err(format!("unknown protocol {protocol:?}")),
    };
    if fields.len() > 5 || (whole && fields.len() < 5) {
        return Err(format!("{protocol} needs 4 fields after it, found {}", fields.len() - 1));
    }
    let mut ips = [IpAddr::V4(Ipv4Addr::UNSPECIFIED); 2];
    let mut ports = [0u16; 2];
    for (i, field) in fields.iter().enumerate().skip(1) {
        let partial = cut == Some(i);
        let field = std::str::from_utf8(field).map_err(|_| "not ASCII".to_string())?;
        match i {
            1 | 2 => match ip(field, v4, partial)? {
                Some(ip) => ips[i - 1] = ip,
                None => return Ok(None),
            },
            _ => match port(field, partial)? {
                Some(port) => ports[i - 3] = port,
                None => return Ok(None),
            },
        }
    }
    if cut.is_some() {
        return Ok(None);
    }
    Ok(Some((SocketAddr::new(ips[0], ports[0]), SocketAddr::new(ips[1], ports[1]))))
}

/// An address of the header's family; `None` for a prefix of one that is
/// still arriving (`partial`).
fn ip(field: &str, v4: bool, partial: bool) -> Result<Option<IpAddr>, String> {
    let parsed = if v4 { field.parse::<Ipv4Addr>().map(IpAddr::from).ok() } else { v6(field) };
    match parsed {
        Some(ip) if !partial => Ok(Some(ip)),
        _ if partial && could_become_ip(field, v4) => Ok(None),
        _ => Err(format!("{field:?} is not an IPv{} address", if v4 { 4 } else { 6 })),
    }
}

fn v6(field: &str) -> Option<IpAddr> {
    field.parse::<Ipv6Addr>().map(IpAddr::from).ok()
}

/// Whether `prefix` may be the start of an address of the family: the
/// right characters, within the longest such address.
fn could_become_ip(prefix: &str, v4: bool) -> bool {
    if v4 {
        prefix.len() <= 15 && prefix.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    } else {
        prefix.len() <= 45 && prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    }
}

/// A port, decimal; `None` for a prefix of one still arriving (`partial`).
fn port(field: &str, partial: bool) -> Result<Option<u16>, String> {
    let digits = !field.is_empty() && field.len() <= 5 && field.bytes().all(|b| b.is_ascii_digit());
    match field.parse::<u16>() {
        Ok(port) if digits && !partial => Ok(Some(port)),
        Ok(_) if digits => Ok(None),
        _ if partial && field.is_empty() => Ok(None),
        _ => Err(format!("{field:?} is not a port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: [&str; 6] = [
        "PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n",
        "PROXY TCP6 2001:db8::7 ::1 5555 80\r\n",
        "PROXY TCP6 ::ffff:192.0.2.8 ::1 65535 0\r\n",
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        // Found by fuzzing: a split inside a character UNKNOWN ignores.
        "PROXY UNKNOWN :f...f\u{99}ff\r\n",
    ];

    #[test]
    fn every_prefix_of_a_valid_header_needs_more_then_it_parses_whole() {
        for header in VALID {
            for split in SIGNATURE.len()..header.len() {
                assert_eq!(parse(&header.as_bytes()[..split]), V1::NeedMore, "{:?}", &header[..split]);
            }
            let parsed = parse(format!("{header}7\n").as_bytes());
            assert!(matches!(parsed, V1::Header { len, .. } if len == header.len()), "{header:?}: {parsed:?}");
        }
    }

    #[test]
    fn the_split_after_the_source_port_from_the_report_needs_more() {
        assert_eq!(parse(b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 "), V1::NeedMore);
    }

    #[test]
    fn what_no_header_starts_with_is_refused_before_its_end() {
        for bytes in [
            &b"PROXY TCP9"[..],
            b"PROXY TCP4 192.0.2.9x",
            b"PROXY TCP4 ::1 ",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 ",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3",
            b"PROXY TCP4 1.2.3.4  ",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY \xff",
        ] {
            assert!(matches!(parse(bytes), V1::Malformed(_)), "{:?}", String::from_utf8_lossy(bytes));
        }
        let endless = [&b"PROXY UNKNOWN "[..], &[b'x'; 200]].concat();
        assert!(matches!(parse(&endless), V1::Malformed(_)));
    }
}
