//! Server options: Python's class attributes, with defaults fit for production.

use std::time::Duration;

use crate::Error;

/// Python's `serve_forever(poll_interval=0.5)`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Datagrams a sequential UDP server takes per `recvmmsg` on Linux unless
/// told otherwise: fewer system calls than one at a time, and the same
/// one-request-per-datagram semantics.
pub(crate) const DEFAULT_UDP_BATCH: usize = 32;

/// Python's `max_packet_size`: the largest datagram served whole.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 8192;

/// Every setting a server is built with. Set through [`ServerBuilder`](crate::ServerBuilder).
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: on for stream servers (rebinding right after a close must work
    /// despite TIME_WAIT), off for datagram servers (where SO_REUSEADDR would
    /// let a second server silently share the port).
    pub allow_reuse_address: Option<bool>,
    pub allow_reuse_port: bool,
    /// `None`: the OS maximum (the kernel clamps the value to SOMAXCONN).
    pub request_queue_size: Option<u32>,
    pub max_packet_size: usize,
    pub timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub disable_nagle_algorithm: bool,
    pub dual_stack: bool,
    /// Stream servers only: open connections at most; `None`: no limit.
    pub max_connections: Option<usize>,
    /// Stream servers only: how long a new connection may stay silent; it
    /// waits in the loop's registry, not in a handler, until it speaks.
    pub idle_timeout: Option<Duration>,
    /// Stream servers only: how long a connection may last in all.
    pub connection_timeout: Option<Duration>,
    /// On close: how long running requests may go on before they are cut.
    pub drain_timeout: Option<Duration>,
    /// Unix sockets bound to a path: the socket file's permission bits.
    pub socket_mode: Option<u32>,
    /// Unix sockets bound to a path: the socket file's owner and group.
    pub socket_owner: Option<crate::privileges::Ids>,
    /// Sequential datagram servers on Linux: datagrams per recvmmsg/sendmmsg;
    /// `None`: [`DEFAULT_UDP_BATCH`] for UDP, 1 for Unix datagram sockets.
    pub datagram_batch: Option<usize>,
    /// The longest `serve_forever` waits before a pass with nothing to do
    /// (then `service_actions` runs); `None`: until something happens.
    pub poll_interval: Option<Duration>,
    /// Stream servers: messages cut from connections in the loop.
    pub framing: Option<crate::framing::Framing>,
    /// Limits for each client.
    pub per_client: Option<crate::limits::PerClient>,
    /// Read a PROXY protocol header from trusted peers.
    #[cfg(feature = "proxy-protocol")]
    pub proxy_protocol: Option<crate::proxy::ProxyProtocol>,
    /// Stream servers: TLS on every connection.
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_reuse_address: None,
            allow_reuse_port: false,
            request_queue_size: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            timeout: None,
            read_timeout: None,
            write_timeout: None,
            disable_nagle_algorithm: true,
            dual_stack: true,
            max_connections: None,
            idle_timeout: None,
            connection_timeout: None,
            drain_timeout: None,
            socket_mode: None,
            socket_owner: None,
            datagram_batch: None,
            poll_interval: Some(DEFAULT_POLL_INTERVAL),
            framing: None,
            per_client: None,
            #[cfg(feature = "proxy-protocol")]
            proxy_protocol: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Options {
    /// How many datagrams a sequential server on `addr` takes per batch.
    /// Unix datagram sockets take one at a time by default: a batch carries
    /// no passed fds or credentials.
    pub(crate) fn datagram_batch_for(&self, addr: &crate::Address) -> usize {
        self.datagram_batch.unwrap_or(if addr.is_unix() { 1 } else { DEFAULT_UDP_BATCH })
    }

    /// Refuses settings that cannot work, before anything is bound.
    pub fn check(&self) -> Result<(), Error> {
        let problem = |option, problem| Err(Error::Config { option, problem });
        let zero = Some(Duration::ZERO);
        if self.read_timeout == zero || self.write_timeout == zero {
            return problem("handler timeout", "a zero socket timeout means none at all; pass None for no timeout");
        }
        if self.idle_timeout == zero || self.connection_timeout == zero {
            return problem("connection timeout", "0 would close every connection before it is served");
        }
        if self.poll_interval == zero {
            return problem("poll_interval", "0 would spin the serving loop; pass None to wait for activity");
        }
        if self.max_connections == Some(0) {
            return problem("max_connections", "0 would never accept a connection");
        }
        if self.max_packet_size == 0 {
            return problem("max_packet_size", "0 would drop every datagram");
        }
        if self.framing.as_ref().is_some_and(|f| f.max() == 0) {
            return problem("framing", "a maximum of 0 bytes would refuse every message");
        }
        if self.datagram_batch == Some(0) {
            return problem("datagram_batch", "0 would never receive a datagram");
        }
        if let Some((option, problem_found)) = self.per_client.as_ref().and_then(|p| p.problem()) {
            return problem(option, problem_found);
        }
        #[cfg(feature = "proxy-protocol")]
        if let Some(problem_found) = self.proxy_protocol.as_ref().and_then(|p| p.problem()) {
            return problem("proxy_protocol", problem_found);
        }
        Ok(())
    }

    pub fn backlog(&self) -> i32 {
        self.request_queue_size.map_or(i32::MAX, |n| n.min(i32::MAX as u32) as i32)
    }
}
