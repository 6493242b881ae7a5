//! Per-client limits ([`ServerBuilder::per_client`]): at most so many open
//! connections, and at most so many requests a second, for each client, so
//! one address cannot take a server from everyone else. A server that is
//! its own edge (no proxy in front, or a PROXY header naming the real
//! client) needs them, as nginx's `limit_conn`/`limit_req`, HAProxy's stick
//! tables and Envoy's local rate limit give them to the servers behind.
//!
//! The settings are here; the keys a client is known by are in `key`; the
//! fixed-size table of clients is in `table`; `limiter` is what the serving
//! loop and the workers ask.
//!
//! [`ServerBuilder::per_client`]: crate::ServerBuilder::per_client

mod key;
mod limiter;
mod table;

use std::net::IpAddr;

pub(crate) use key::Key;
pub(crate) use limiter::{Client, Limiter};

/// Per-client limits for [`ServerBuilder::per_client`]: what one client
/// may hold and ask, and how many clients are remembered.
///
/// A client is its IPv4 address, its IPv6 address's first
/// [`ipv6_prefix`](Self::ipv6_prefix) bits (a /64 by default, as one
/// subscriber's hosts share one), an IPv4-mapped IPv6 address as the IPv4
/// address it maps, the PROXY header's source when a trusted balancer sent
/// one, and a Unix peer by its uid. Addresses and uids made
/// [`exempt`](Self::exempt) are never limited (health checks, the balancer
/// itself).
///
/// ```
/// use socketserver::{PerClient, Request, TcpServer};
/// use std::io::Write;
///
/// // Each client: 16 connections at most, 100 requests a second with bursts of 200.
/// let server = TcpServer::builder(|req: &mut Request<'_>| req.wfile.write_all(b"ok\n"))
///     .per_client(PerClient::new().connections(16).rate(100.0, 200))
///     .bind("127.0.0.1:0")?;
/// # Ok::<(), socketserver::Error>(())
/// ```
///
/// [`ServerBuilder::per_client`]: crate::ServerBuilder::per_client
#[derive(Debug, Clone)]
pub struct PerClient {
    pub(crate) connections: Option<u32>,
    pub(crate) rate: Option<(f64, u32)>,
    pub(crate) ipv6_prefix: u8,
    pub(crate) exempt: Vec<(IpAddr, u8)>,
    pub(crate) exempt_uids: Vec<u32>,
    pub(crate) capacity: usize,
    pub(crate) when_full: WhenFull,
}

/// What a full table of clients does with a client it has no entry for
/// ([`PerClient::when_full`]). Either way, first it forgets a client that
/// holds no connection and owes no requests (its entry says nothing a new
/// one would not), the least recently seen of the oldest few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Forget the least recently seen client, whatever it holds (fail
    /// open): it starts afresh if it comes back, and its open connections
    /// are no longer counted. The default: a flood of new addresses cannot
    /// lock everyone out.
    ForgetOldest,
    /// Refuse the new client (fail closed): its connection is closed, its
    /// datagram dropped, counted in `Stats::client_table_full`, until a
    /// remembered client can be forgotten.
    RefuseNew,
}

/// The most a table may be asked to remember: 16 Mi clients, about 1.5 GiB.
const MAX_CLIENTS: usize = 1 << 24;

impl Default for PerClient {
    fn default() -> Self {
        PerClient::new()
    }
}

impl PerClient {
    /// No limit yet; remembers up to [`DEFAULT_CLIENTS`](Self::DEFAULT_CLIENTS) clients, IPv6
    /// clients by their /64.
    pub fn new() -> Self {
        PerClient {
            connections: None,
            rate: None,
            ipv6_prefix: 64,
            exempt: Vec::new(),
            exempt_uids: Vec::new(),
            capacity: PerClient::DEFAULT_CLIENTS,
            when_full: WhenFull::ForgetOldest,
        }
    }

    /// Stream servers: at most `n` open connections per client, counted
    /// from accept (or from its PROXY header, which names the client) to
    /// close. Past it a new connection is closed at once, before
    /// `verify_request`, any TLS handshake or a handler, counted in
    /// `Stats::over_client_connections`.
    pub fn connections(mut self, n: u32) -> Self {
        self.connections = Some(n);
        self
    }

    /// At most `per_second` requests a second per client, with bursts of
    /// `burst` (a token bucket: `burst` tokens, refilled at `per_second`).
    /// A request is a datagram, a stream connection, or a framed message.
    /// Over it, a datagram is dropped without a reply (no amplification), a
    /// new connection is closed at once, and a framed message waits, its
    /// connection unread, until the client has a token again (so a
    /// pipelining client is slowed to its rate, and nothing it sent is
    /// lost); each counted in `Stats::over_client_rate`.
    pub fn rate(mut self, per_second: f64, burst: u32) -> Self {
        self.rate = Some((per_second, burst));
        self
    }

    /// How many leading bits of an IPv6 address make one client (1 to
    /// 128; default 64).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits;
        self
    }

    /// Never limits clients in `network/prefix_len` (an address, or an IPv4
    /// or IPv6 network): health checkers, or the balancer itself when it
    /// sends no PROXY header. IPv4-mapped IPv6 clients match IPv4 networks.
    pub fn exempt(mut self, network: IpAddr, prefix_len: u8) -> Self {
        self.exempt.push((network, prefix_len));
        self
    }

    /// Never limits Unix peers running as `uid`.
    pub fn exempt_uid(mut self, uid: u32) -> Self {
        self.exempt_uids.push(uid);
        self
    }

    /// How many clients the table remembers (default [`DEFAULT_CLIENTS`](Self::DEFAULT_CLIENTS)):
    /// its memory is fixed when the server is built, about
    /// [`BYTES_PER_CLIENT`](Self::BYTES_PER_CLIENT) each, and nothing is
    /// allocated per request.
    pub fn capacity(mut self, clients: usize) -> Self {
        self.capacity = clients;
        self
    }

    /// What a full table does with a new client (default
    /// [`WhenFull::ForgetOldest`]).
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// How many clients a table remembers by default.
    pub const DEFAULT_CLIENTS: usize = 10_000;

    /// The most a remembered client costs: its entry and its place in the
    /// index (`per_client_table_memory_is_as_stated` measures it).
    pub const BYTES_PER_CLIENT: usize = 72;

    /// What is wrong with these settings, by the setting's name.
    pub(crate) fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.connections.is_none() && self.rate.is_none() {
            return Some(("per_client", "no limit set: give connections(n), rate(per_second, burst) or both"));
        }
        if self.connections == Some(0) {
            return Some(("per_client.connections", "0 would refuse every connection"));
        }
        if let Some((per_second, burst)) = self.rate {
            if !(per_second.is_finite() && per_second > 0.0 && per_second <= 1e9) {
                return Some(("per_client.rate", "requests a second must be above 0 and at most 1e9"));
            }
            if burst == 0 {
                return Some(("per_client.burst", "0 would refuse every request"));
            }
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Some(("per_client.ipv6_prefix", "an IPv6 prefix is 1 to 128 bits"));
        }
        let too_long = |(ip, len): &(IpAddr, u8)| *len > if ip.is_ipv4() { 32 } else { 128 };
        if self.exempt.iter().any(too_long) {
            return Some(("per_client.exempt", "a prefix longer than its address (32 bits for IPv4, 128 for IPv6)"));
        }
        if !(1..=MAX_CLIENTS).contains(&self.capacity) {
            return Some(("per_client.capacity", "the table remembers 1 to 16,777,216 clients"));
        }
        None
    }
}
