//! Entry points for the fuzz targets in `fuzz/`: the parsers a remote peer
//! reaches, reachable from outside the crate without widening its API.
//! Hidden from the docs and not covered by semver.

/// How a PROXY header parser read the head of a connection or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyParse {
    /// A header may be arriving; more bytes are needed.
    NeedMore,
    /// Not a header: the peer's own bytes.
    Absent,
    /// A whole header of this many bytes.
    Header(usize),
    /// Refused.
    Malformed,
}

#[cfg(feature = "proxy-protocol")]
impl From<crate::proxy::Parsed> for ProxyParse {
    fn from(parsed: crate::proxy::Parsed) -> Self {
        use crate::proxy::Parsed;
        match parsed {
            Parsed::NeedMore => ProxyParse::NeedMore,
            Parsed::Absent => ProxyParse::Absent,
            Parsed::Header { len, .. } => ProxyParse::Header(len),
            Parsed::Malformed(_) => ProxyParse::Malformed,
        }
    }
}

/// The PROXY header stage on a stream's first bytes, as sent by a trusted peer.
#[cfg(feature = "proxy-protocol")]
pub fn proxy_stream(bytes: &[u8]) -> ProxyParse {
    crate::proxy::parse_stream(bytes, &crate::Address::Unnamed).into()
}

/// The PROXY header stage on one datagram from a trusted peer.
#[cfg(feature = "proxy-protocol")]
pub fn proxy_datagram(packet: &[u8]) -> ProxyParse {
    crate::proxy::parse_datagram(packet, &crate::Address::Unnamed).into()
}

/// The messages `framing` cuts from `stream` when it arrives in the pieces
/// `splits` make (then ends), or why the stream was refused: the loop's
/// own inbox, as a framed connection fills it.
pub fn framed_messages(framing: &crate::Framing, stream: &[u8], splits: &[usize]) -> Result<Vec<Vec<u8>>, String> {
    let mut inbox = crate::framing::Inbox::default();
    let mut messages = Vec::new();
    let mut from = 0;
    for &at in splits.iter().chain([&stream.len()]) {
        let at = at.clamp(from, stream.len());
        inbox.push(&stream[from..at]);
        from = at;
        while let Some(message) = inbox.next(framing, false).map_err(|e| format!("{e:?}"))? {
            messages.push(message.bytes);
        }
    }
    while let Some(message) = inbox.next(framing, true).map_err(|e| format!("{e:?}"))? {
        messages.push(message.bytes);
    }
    Ok(messages)
}

/// Who a client certificate names, read from DER a client sent: the
/// subject's common name and its subject alternative names.
#[cfg(feature = "tls")]
pub fn client_identity(der: &[u8]) -> Option<crate::tls::Identity> {
    crate::tls::Identity::of(der)
}
