//! `ServerBuilder`: options and hooks, then bind.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::any::{AnyServer, Endpoint};
use crate::dispatch::Dispatch;
use crate::hooks::{ErrorHook, Hooks, log_errors};
use crate::options::Options;
use crate::server::Server;
use crate::serving::Parts;
use crate::transport::{
    self, AnyTransport, BindAddress, TcpTransport, Transport, UdpTransport, UnixDatagramTransport, UnixStreamTransport,
};
use crate::{Address, Error, RequestHandler, Result};

/// Configures a [`Server`] before it binds: Python's class attributes and
/// overridable methods, as builder calls.
///
/// ```
/// use std::time::Duration;
/// use socketserver::{Request, TcpServer};
///
/// let server = TcpServer::builder(|_: &mut Request<'_>| Ok(()))
///     .request_queue_size(1024)
///     .handler_timeout(Some(Duration::from_secs(30)))
///     .verify_request(|client| client.as_inet().is_some_and(|a| a.ip().is_loopback()))
///     .handle_error(|err| eprintln!("{err}"))
///     .bind("127.0.0.1:0")?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[must_use = "a builder does nothing until `bind` or `build` is called"]
pub struct ServerBuilder<T, H> {
    handler: H,
    pub(crate) options: Options,
    pub(crate) hooks: Hooks,
    /// `handle_error`, called from every thread that serves requests.
    on_error: ErrorHook,
    pub(crate) dispatch: Dispatch,
    transport: PhantomData<fn() -> T>,
}

impl<T: Transport, H: RequestHandler> ServerBuilder<T, H> {
    /// Binds to the first of `addr`'s addresses that accepts, then listens
    /// (Python's constructor with `bind_and_activate=True`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a setting that cannot work; [`Error::Resolve`]
    /// if `addr` names no address; otherwise the last address's
    /// [`Error::Bind`] (or [`Error::PathInUse`] for a Unix path that is
    /// taken), naming the address.
    pub fn bind(self, addr: impl BindAddress<T::Family>) -> Result<Server<T, H>> {
        self.check()?;
        let mut last_error = None;
        for candidate in addr.resolve()? {
            match transport::open_bound::<T>(&candidate, &self.options) {
                Ok((socket, file)) => return Server::from_parts(self.into_parts(), socket, file, candidate, true),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("resolve returns at least one address"))
    }

    /// Creates the socket without binding it (Python's
    /// `bind_and_activate=False`): set options on [`Server::socket`], then
    /// call [`Server::server_bind`] and [`Server::server_activate`].
    ///
    /// # Errors
    ///
    /// As for [`bind`](Self::bind), for creating the socket.
    pub fn build(self, addr: impl BindAddress<T::Family>) -> Result<Server<T, H>> {
        self.check()?;
        let candidate = addr.resolve()?.swap_remove(0);
        let socket = transport::open::<T>(&candidate, &self.options)?;
        Server::from_parts(self.into_parts(), socket, None, candidate, false)
    }

    /// Serves a socket the process did not create: one a supervisor, a
    /// socket-activating service manager or a restarting predecessor handed
    /// over, already bound (and, for streams, listening). Its type, address
    /// family and listening state are checked against the transport; the
    /// server address is read from it. A Unix socket file behind it is never
    /// removed, and clients still in its listen backlog at close are left
    /// there: the socket may be shared, and they are not the server's.
    ///
    /// ```
    /// # use socketserver::{Request, TcpServer};
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?; // handed over, say
    /// let server = TcpServer::builder(|_: &mut Request<'_>| Ok(())).from_fd(listener.into())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Inherited`] naming the fd when it is not a socket, is a
    /// datagram socket given to a stream server (or the reverse), belongs
    /// to the other address family, or is a stream socket that does not
    /// listen; [`Error::Config`] for a setting that cannot work.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Server<T, H>> {
        use std::os::fd::AsRawFd;
        self.check()?;
        let number = fd.as_raw_fd();
        let socket = socket2::Socket::from(fd);
        let address = transport::check_inherited::<T>(&socket, number)?;
        socket.set_nonblocking(true).map_err(|e| Error::Inherited { fd: number, problem: e.to_string() })?;
        Server::from_parts(self.into_parts(), socket, None, address, true).map(Server::inherited)
    }

    /// Settings that cannot work are refused before anything is bound.
    fn check(&self) -> Result<()> {
        self.options.check()?;
        #[cfg(feature = "tls")]
        if T::KIND == crate::Kind::Datagram && self.options.tls.is_some() {
            return Err(Error::Config {
                option: "tls",
                problem: "TLS needs a stream transport (TCP or Unix stream); a datagram server cannot use it",
            });
        }
        if self.options.framing.is_some() {
            let refused = |problem| Err(Error::Config { option: "framing", problem });
            if T::KIND == crate::Kind::Datagram {
                return refused("framing cuts messages from connections; a datagram is one already");
            }
            if self.dispatch.is_fork() {
                return refused("a forked child cannot hand a connection back to the loop; use threads or a pool");
            }
        }
        self.dispatch.check()
    }

    fn into_parts(self) -> Parts<H> {
        Parts {
            handler: Arc::new(self.handler),
            options: self.options,
            hooks: self.hooks,
            on_error: self.on_error,
            dispatch: self.dispatch,
        }
    }
}

impl<H: RequestHandler> ServerBuilder<AnyTransport, H> {
    /// Binds the transport and address `endpoint` names (see [`Endpoint`]),
    /// with this builder's settings.
    ///
    /// ```
    /// # use socketserver::{AnyServer, Request};
    /// let endpoint = "udp://127.0.0.1:0".parse()?;
    /// let server = AnyServer::builder(|_: &mut Request<'_>| Ok(())).max_packet_size(1500).bind(&endpoint)?;
    /// assert_eq!(server.kind(), socketserver::Kind::Datagram);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`ServerBuilder::bind`] on the chosen transport.
    pub fn bind(self, endpoint: &Endpoint) -> Result<AnyServer<H>> {
        Ok(match endpoint {
            Endpoint::Tcp(addr) => AnyServer::Tcp(self.retype::<TcpTransport>().bind(addr.as_str())?),
            Endpoint::Udp(addr) => AnyServer::Udp(self.retype::<UdpTransport>().bind(addr.as_str())?),
            Endpoint::UnixStream(addr) => {
                AnyServer::UnixStream(self.retype::<UnixStreamTransport>().bind(addr.clone())?)
            }
            Endpoint::UnixDatagram(addr) => {
                AnyServer::UnixDatagram(self.retype::<UnixDatagramTransport>().bind(addr.clone())?)
            }
        })
    }
}

impl<T, H: RequestHandler> ServerBuilder<T, H> {
    pub(crate) fn new(handler: H) -> Self {
        ServerBuilder {
            handler,
            options: Options::default(),
            hooks: Hooks::default(),
            on_error: log_errors(),
            dispatch: Dispatch::default(),
            transport: PhantomData,
        }
    }

    /// The same settings, for another transport.
    fn retype<U>(self) -> ServerBuilder<U, H> {
        let ServerBuilder { handler, options, hooks, on_error, dispatch, .. } = self;
        ServerBuilder { handler, options, hooks, on_error, dispatch, transport: PhantomData }
    }

    /// Reads a PROXY protocol header (v1 or v2) from the trusted peers
    /// `settings` lists (feature `proxy-protocol`; see [`crate::proxy`]).
    /// On a stream server the header is read in the serving loop, under its
    /// own deadline, before `verify_request` and before a worker is taken;
    /// on a datagram server each datagram may start with a v2 header.
    /// Refused at bind if `settings` trusts no peer.
    #[cfg(feature = "proxy-protocol")]
    pub fn proxy_protocol(mut self, settings: crate::proxy::ProxyProtocol) -> Self {
        self.options.proxy_protocol = Some(settings);
        self
    }

    /// Serves every connection over TLS with `config` (feature `tls`; see
    /// [`crate::tls`]): stream servers only, a datagram server refuses it at
    /// bind with [`Error::Config`]. The handshake runs in the serving loop
    /// under `idle_timeout` (else [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::tls::DEFAULT_HANDSHAKE_TIMEOUT))
    /// and `connection_timeout`, after `verify_request`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.options.tls = Some(config);
        self
    }

    /// Turns TLS clients away by who they are (feature `tls`): called in
    /// the serving loop with each client's address and finished handshake
    /// (its [`client_identity`](crate::tls::TlsInfo::client_identity),
    /// SNI name, ALPN protocol), before any handler runs. `Err(reason)`
    /// sends `close_notify` and closes the connection, reported to
    /// `handle_error` as [`Error::TlsRefused`] with the reason and counted
    /// in [`Stats::tls_refused`](crate::Stats::tls_refused): a refused
    /// client costs one handshake, never a worker or a handler call.
    ///
    /// ```
    /// # use socketserver::{Request, TcpServer};
    /// # fn serve(config: std::sync::Arc<rustls::ServerConfig>) -> socketserver::Result<()> {
    /// // Mutual TLS lets in any certificate the CA signed; this lets in two names.
    /// let server = TcpServer::builder(|req: &mut Request<'_>| Ok(()))
    ///     .tls(config)
    ///     .verify_tls(|_client, tls| {
    ///         match tls.client_identity().and_then(|id| id.common_name.as_deref()) {
    ///             Some("billing" | "reports") => Ok(()),
    ///             other => Err(format!("client certificate for {other:?}, not billing or reports")),
    ///         }
    ///     })
    ///     .bind("127.0.0.1:0")?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn verify_tls(
        mut self,
        verify: impl FnMut(&Address, &crate::tls::TlsInfo) -> Result<(), String> + Send + 'static,
    ) -> Self {
        self.hooks.verify_tls = Some(Box::new(verify));
        self
    }

    /// Sets SO_REUSEADDR. Default: on for stream servers, so a server can
    /// rebind at once after a restart despite TIME_WAIT; off for datagram
    /// servers, where it would let two servers share a port unawares.
    pub fn allow_reuse_address(mut self, on: bool) -> Self {
        self.options.allow_reuse_address = Some(on);
        self
    }

    /// Sets SO_REUSEPORT (inet only), so several servers can share one port
    /// and the kernel spreads the load. Default: off.
    pub fn allow_reuse_port(mut self, on: bool) -> Self {
        self.options.allow_reuse_port = on;
        self
    }

    /// The listen backlog. Default: the OS maximum (Python's is 5); the
    /// kernel clamps larger values to `net.core.somaxconn`.
    pub fn request_queue_size(mut self, size: u32) -> Self {
        self.options.request_queue_size = Some(size);
        self
    }

    /// The largest datagram that is served (default 8192, as Python's).
    /// Larger ones are reported to `handle_error` and dropped, never served
    /// truncated.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.options.max_packet_size = bytes;
        self
    }

    /// How long [`Server::handle_request`] waits before calling
    /// `handle_timeout` (Python's `timeout`). Default: no limit.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// Read and write timeout on every connection (Python's
    /// `StreamRequestHandler.timeout`). A handler blocked longer gets a
    /// `TimedOut`/`WouldBlock` error. Default: none.
    pub fn handler_timeout(self, timeout: Option<Duration>) -> Self {
        self.read_timeout(timeout).write_timeout(timeout)
    }

    /// Read timeout on every connection. Default: none.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.read_timeout = timeout;
        self
    }

    /// Write timeout on every connection. Default: none.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.write_timeout = timeout;
        self
    }

    /// Stream servers: how long a connection may stay silent in the serving
    /// loop: a new one before its first byte, a framed one between (or
    /// inside) messages, and one whose handler handed it back
    /// ([`Request::hand_back`](crate::Request::hand_back)) before its next
    /// request. While silent it waits in the loop's registry, not in a
    /// handler, so silent clients cannot tie up threads, workers or a
    /// sequential server; one silent past the limit is closed with a log
    /// line (counted in `Stats::idle_closed`). Don't set it for protocols
    /// where the server speaks first. Default: none (a new connection goes
    /// to a handler when accepted; a framed or handed-back one waits for as
    /// long as it takes, or its `connection_timeout`).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.idle_timeout = timeout;
        self
    }

    /// Stream servers: messages read in the serving loop and handed to the
    /// handler one at a time, as datagrams are (`rfile` is the message,
    /// `wfile` the reply, sent back on the connection), with the connection
    /// back in the loop between messages: a worker is held only while a
    /// message is handled, so a pool of N serves any number of keep-alive
    /// clients. Messages of one connection are answered one at a time, in
    /// order; its bytes are read only while none of its messages waits, so
    /// a client that sends without reading costs bounded memory. A message
    /// over the framing's maximum closes its connection with
    /// [`Error::MessageTooLong`], counted in [`Stats::too_long`](crate::Stats::too_long).
    /// With `idle_timeout`, a connection silent that long between messages
    /// (or inside one) is closed. Not with forking (refused at bind).
    /// Default: none (a connection goes to its handler whole).
    pub fn framing(mut self, framing: crate::Framing) -> Self {
        self.options.framing = Some(framing);
        self
    }

    /// Stream servers: how long a connection may last in all, however
    /// slowly it trickles (slow-loris clients). Each read and write waits at
    /// most the time left; after it, I/O fails with `TimedOut` and the
    /// connection is closed. Default: none.
    pub fn connection_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.connection_timeout = timeout;
        self
    }

    /// A bounded graceful close: [`Server::server_close`] (or drop; never
    /// [`serve_forever`](Server::serve_forever), which returns when asked
    /// to stop) answers what clients already sent and lets running requests
    /// finish for up to this long, then shuts down the connections still
    /// open (fork mode: kills the children), with a log line for each, and
    /// waits for their handlers to return. Queued pool requests are cut the
    /// same way, so every accepted request ends with an answer or a log
    /// line. With it, a framed message still arriving when the close begins
    /// is waited for within it; without, that connection is closed. Default:
    /// none (Python's `block_on_close`: wait as long as it takes, or not at
    /// all).
    pub fn drain_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.drain_timeout = timeout;
        self
    }

    /// Datagram servers in sequential mode, on Linux: receive up to `n`
    /// waiting datagrams with one `recvmmsg(2)` and send their replies with
    /// one `sendmmsg(2)`. Handler semantics do not change (one datagram, one
    /// request, one reply, in order); only the number of system calls does,
    /// and the replies to one batch leave together after its last handler,
    /// so a server whose handlers take long sets 1. A batch carries no
    /// passed fds or credentials. Elsewhere, and in other dispatch modes,
    /// datagrams are taken one at a time. Default: 32 for UDP, 1 for Unix
    /// datagram sockets.
    pub fn datagram_batch(mut self, n: usize) -> Self {
        self.options.datagram_batch = Some(n);
        self
    }

    /// Unix sockets bound to a path: set the socket file's permission bits
    /// (e.g. `0o660` to let one group connect) right after bind. Default:
    /// what the process umask gives.
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.options.socket_mode = Some(mode);
        self
    }

    /// Unix sockets bound to a path: give the socket file to this user and
    /// group right after bind (from [`privileges::lookup`](crate::privileges::lookup)),
    /// so the server can still remove it once it has dropped to them.
    /// Default: whoever binds it.
    pub fn socket_owner(mut self, ids: crate::privileges::Ids) -> Self {
        self.options.socket_owner = Some(ids);
        self
    }

    /// Sets TCP_NODELAY on accepted TCP connections. Default: on, unlike
    /// Python: the writer is already buffered and flushed per answer, so
    /// Nagle's algorithm would only add latency.
    pub fn disable_nagle_algorithm(mut self, on: bool) -> Self {
        self.options.disable_nagle_algorithm = on;
        self
    }

    /// Whether an IPv6 server on `[::]` also accepts IPv4 clients (as
    /// IPv4-mapped addresses). Set explicitly before bind on every OS.
    /// Default: on.
    pub fn dual_stack(mut self, on: bool) -> Self {
        self.options.dual_stack = on;
        self
    }

    /// How long `serve_forever` waits with nothing to do before it runs
    /// `service_actions` anyway (Python's `poll_interval`). Default: 0.5 s,
    /// as Python's. `None`: `service_actions` runs only after activity. This
    /// never delays a request or a shutdown: the loop is woken for those,
    /// and for a request that waited for room when a worker frees up
    /// (`with_no_poll_interval_every_framed_message_waiting_for_room_is_answered`).
    pub fn poll_interval(mut self, interval: Option<Duration>) -> Self {
        self.options.poll_interval = interval;
        self
    }

    /// Tells the service manager about this server (feature `systemd`,
    /// through `NOTIFY_SOCKET`; nothing without it): `READY=1` when
    /// `serve_forever` starts taking requests, `STATUS=` with the active requests as they change,
    /// `WATCHDOG=1` from the serving loop itself at half of `WATCHDOG_USEC`
    /// (the loop passes at least that often), and `STOPPING=1` when
    /// `serve_forever` is asked to stop.
    #[cfg(feature = "systemd")]
    pub fn systemd_notify(mut self) -> Self {
        let notifier = crate::systemd::Notifier::from_env();
        if let Some(interval) = notifier.watchdog_interval() {
            let current = self.options.poll_interval.unwrap_or(interval);
            self.options.poll_interval = Some(current.min(interval).max(std::time::Duration::from_millis(1)));
        }
        self.hooks.systemd = Some(notifier);
        self
    }

    /// Where requests run. Default: [`Dispatch::sequential`].
    pub fn dispatch(mut self, mode: Dispatch) -> Self {
        self.dispatch = mode;
        self
    }

    /// A thread per request, with Python's defaults (`ThreadingMixIn`).
    pub fn threading(self) -> Self {
        self.dispatch(Dispatch::threads())
    }

    /// A pool of `workers` threads with a queue of as many requests
    /// ([`Dispatch::pool`]).
    pub fn pool(self, workers: usize) -> Self {
        self.dispatch(Dispatch::pool(workers))
    }

    /// A child process per request, with Python's defaults (`ForkingMixIn`).
    pub fn forking(self) -> Self {
        self.dispatch(Dispatch::fork())
    }

    /// Stream servers: at most `n` connections open at once, in every
    /// dispatch mode. Past it the server stops accepting until a connection
    /// ends; clients wait in the kernel's backlog and none is dropped.
    /// Ignored by datagram servers.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.options.max_connections = Some(n);
        self
    }

    /// Limits what each client may hold and ask ([`PerClient`](crate::PerClient)):
    /// open connections, requests a second, so one address cannot take the
    /// server from everyone else. Checked in the serving loop, before
    /// `verify_request` (and after a trusted balancer's PROXY header, which
    /// names the client). The table of clients lives in this server: each
    /// server of a [`ServerGroup`](crate::ServerGroup) has its own (the
    /// limits are per process, or per server), and a restarted server's
    /// successor starts with an empty one. Refused settings give
    /// [`Error::Config`] naming the setting.
    pub fn per_client(mut self, limits: crate::PerClient) -> Self {
        self.options.per_client = Some(limits);
        self
    }

    /// Python's `verify_request`: called with each client's address before
    /// its request is served. `false` closes the connection (or drops the
    /// datagram) without calling the handler. Runs on the serving thread.
    pub fn verify_request(mut self, verify: impl FnMut(&Address) -> bool + Send + 'static) -> Self {
        self.hooks.verify_request = Some(Box::new(verify));
        self
    }

    /// Python's `handle_error`: called with every error that concerns one
    /// request (it carries the client address). The default logs it through
    /// the `log` crate at error level. The server keeps serving either way.
    pub fn handle_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_error = Arc::new(hook);
        self
    }

    /// Python's `handle_timeout`: called when [`Server::handle_request`]
    /// waited `timeout` without a request.
    pub fn handle_timeout(mut self, hook: impl FnMut() + Send + 'static) -> Self {
        self.hooks.handle_timeout = Some(Box::new(hook));
        self
    }

    /// Python's `service_actions`: called on the serving thread after every
    /// pass of `serve_forever`'s loop: once the requests a wake-up brought
    /// are dispatched (up to 64 at a time), and when
    /// [`poll_interval`](Self::poll_interval) passes with nothing to do. Not
    /// called by `handle_request`, as in Python.
    pub fn service_actions(mut self, hook: impl FnMut() + Send + 'static) -> Self {
        self.hooks.service_actions = Some(Box::new(hook));
        self
    }
}

impl<T, H> std::fmt::Debug for ServerBuilder<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder").field("options", &self.options).field("dispatch", &self.dispatch).finish()
    }
}
