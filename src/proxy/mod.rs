//! The PROXY protocol (feature `proxy-protocol`): the real client's address
//! when the server sits behind a load balancer such as HAProxy or nginx.
//!
//! A balancer that speaks the protocol sends a short header before the
//! client's bytes (v1 text or v2 binary, on each connection; v2 at the head
//! of each datagram). The server reads it before `verify_request` and before
//! a worker is taken, so [`Request::client_address`](crate::Request::client_address),
//! `verify_request`, `handle_error` and the logs all see the client, not the
//! balancer. [`Request::proxy_header`](crate::Request::proxy_header) gives
//! the rest: the address the client connected to, and v2's TLVs.
//!
//! Only peers in the trusted list are read for a header; anyone else is
//! served as a direct client, with the socket's peer address, and whatever
//! it sends reaches the handler as data, so a forged header is never
//! believed.
//!
//! ```
//! use socketserver::proxy::ProxyProtocol;
//! use socketserver::{Request, TcpServer};
//!
//! let handler = |req: &mut Request<'_>| {
//!     // The client behind the balancer, not the balancer.
//!     log::info!("request from {}", req.client_address());
//!     Ok(())
//! };
//! let server = TcpServer::builder(handler)
//!     .proxy_protocol(ProxyProtocol::required().trust("10.0.0.0/8".parse()?).trust("127.0.0.1/32".parse()?))
//!     .bind("127.0.0.1:0")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod header;
mod v1;

pub use header::{ProxyHeader, tlv};
pub use ipnet::IpNet;

use std::time::Duration;

use crate::{Address, Error};
pub(crate) use header::{MAX_HEADER, Parsed, parse_datagram, parse_stream};

/// How long a trusted peer may take to send its whole header by default.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// PROXY protocol settings for [`ServerBuilder::proxy_protocol`](crate::ServerBuilder::proxy_protocol):
/// whether a header is required, which upstreams are trusted to send one,
/// and how long one may take.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    required: bool,
    trusted: Vec<IpNet>,
    trust_unix: bool,
    header_timeout: Duration,
}

impl ProxyProtocol {
    /// Every connection (or datagram) from a trusted peer must start with a
    /// header; one without is closed (dropped) with an error naming the
    /// peer. The usual setting behind a balancer that always sends one.
    pub fn required() -> Self {
        ProxyProtocol { required: true, trusted: Vec::new(), trust_unix: false, header_timeout: DEFAULT_HEADER_TIMEOUT }
    }

    /// A trusted peer may send a header; without one it is served with the
    /// socket's peer address. For a migration, while some balancers send
    /// headers and others do not yet.
    pub fn optional() -> Self {
        ProxyProtocol { required: false, ..Self::required() }
    }

    /// Trusts peers in `net` (an address with a prefix length, such as
    /// `"10.0.0.0/8"`, `"127.0.0.1/32"` or `"::1/128"`) to send a header.
    /// IPv4 networks also match IPv4-mapped IPv6 peers (a dual-stack socket).
    pub fn trust(mut self, net: IpNet) -> Self {
        self.trusted.push(net);
        self
    }

    /// Trusts every peer of a Unix stream or datagram socket: a balancer on
    /// the same host, guarded by the socket file's permissions.
    pub fn trust_unix_peers(mut self, on: bool) -> Self {
        self.trust_unix = on;
        self
    }

    /// How long a trusted peer may take from connecting to the end of its
    /// header (default 5 s). Waiting costs no worker; when it passes, the
    /// connection is closed (with an optional header and nothing sent at
    /// all, it is served as a direct client instead).
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    pub(crate) fn is_required(&self) -> bool {
        self.required
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.header_timeout
    }

    /// Whether a header from `peer` is believed.
    pub(crate) fn trusts(&self, peer: &Address) -> bool {
        match peer {
            Address::Inet(addr) => {
                let ip = addr.ip().to_canonical();
                self.trusted.iter().any(|net| net.contains(&ip))
            }
            _ => self.trust_unix,
        }
    }

    /// Settings that cannot work, said at build time.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.trusted.is_empty() && !self.trust_unix {
            return Some("proxy_protocol trusts no peer: add one with trust(...) or trust_unix_peers(true)");
        }
        self.header_timeout.is_zero().then_some("proxy_protocol header_timeout must be above zero")
    }
}

/// Who a datagram from `peer` is served as, the byte its request starts at,
/// and what its header said: a trusted sender's v2 header names the client
/// and is cut off; anyone else's datagram is all request.
///
/// # Errors
///
/// [`Error::ProxyHeader`] if a trusted sender's header is malformed, or
/// missing where one is required: the datagram is dropped.
pub(crate) fn datagram_client(
    settings: Option<&ProxyProtocol>,
    peer: Address,
    packet: &[u8],
) -> Result<(Address, usize, Option<Box<ProxyHeader>>), Error> {
    let Some(settings) = settings.filter(|s| s.trusts(&peer)) else { return Ok((peer, 0, None)) };
    let reason = match parse_datagram(packet, &peer) {
        Parsed::Header { len, header } => return Ok((header.client(), len, Some(Box::new(header)))),
        Parsed::Absent if !settings.is_required() => return Ok((peer, 0, None)),
        Parsed::Absent => "no PROXY v2 header, and one is required from this peer".to_owned(),
        Parsed::NeedMore => "the datagram ends inside its PROXY v2 header".to_owned(),
        Parsed::Malformed(reason) => reason,
    };
    Err(Error::ProxyHeader { peer, reason })
}
