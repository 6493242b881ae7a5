//! The one trait users implement, and the request it is given.

use std::io;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{SockRef, Socket};

use crate::Address;
use crate::ancillary::{Ancillary, Credentials};
use crate::handler_io::{Conn, ConnectionState, Reader, Writer};
use crate::stats::{Stats, StatsHandle};
use crate::transport::Kind;

/// Serves one request: Python's `BaseRequestHandler`, with `setup`, `handle`
/// and `finish`.
///
/// The handler never sees a socket. It reads the request from
/// [`Request::rfile`] and writes the answer to [`Request::wfile`], so the same
/// handler serves TCP, UDP and both kinds of Unix socket unchanged.
///
/// `finish` runs whenever `setup` succeeded, even when `handle` failed, as in
/// Python. An error from any of them reaches the server's `handle_error` hook
/// with the client's address; the server keeps serving.
///
/// # One handler, every request
///
/// A server holds one handler value and serves every request with it,
/// concurrently when requests run in threads or a pool (hence `Sync`);
/// that is unlike Python, which makes a handler instance per request. State
/// for one request lives in `handle`'s locals, or in a
/// [`PerRequestHandler`] made fresh for each request by [`PerRequest`];
/// state shared by all requests lives in the handler behind a `Mutex` or
/// atomics.
///
/// A closure `Fn(&mut Request) -> io::Result<()>` is a handler too:
///
/// ```
/// use std::io::{BufRead, Write};
/// use socketserver::{Request, RequestHandler};
///
/// fn shout() -> impl RequestHandler {
///     |req: &mut Request<'_>| {
///         let mut line = String::new();
///         req.rfile.read_line(&mut line)?;
///         req.wfile.write_all(line.to_uppercase().as_bytes())
///     }
/// }
/// # let _ = shout();
/// ```
pub trait RequestHandler: Send + Sync + 'static {
    /// Runs before [`handle`](Self::handle). If it fails, neither `handle` nor
    /// `finish` runs.
    ///
    /// # Errors
    ///
    /// An error ends the request before `handle`; it reaches `handle_error` with the client's address.
    fn setup(&self, _req: &mut Request<'_>) -> io::Result<()> {
        Ok(())
    }

    /// Serves the request.
    ///
    /// # Errors
    ///
    /// An error ends the request (after `finish`); it reaches `handle_error` with the client's address.
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()>;

    /// Runs after [`handle`](Self::handle), even when it failed. The writer is
    /// flushed (stream) or the reply sent (datagram) after this returns.
    ///
    /// # Errors
    ///
    /// An error reaches `handle_error` with the client's address.
    fn finish(&self, _req: &mut Request<'_>) -> io::Result<()> {
        Ok(())
    }
}

impl<F> RequestHandler for F
where
    F: Fn(&mut Request<'_>) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        self(req)
    }
}

/// A handler made fresh for each request, as Python makes a handler
/// instance per request: `setup` can fill fields that `handle` and `finish`
/// then use, through `&mut self`. Served through [`PerRequest`].
///
/// ```
/// use std::io::{self, BufRead, Write};
/// use socketserver::{PerRequest, PerRequestHandler, Request, TcpServer};
///
/// /// Numbers the lines of one connection.
/// #[derive(Default)]
/// struct Numbered {
///     seen: usize,
/// }
///
/// impl PerRequestHandler for Numbered {
///     fn handle(&mut self, req: &mut Request<'_>) -> io::Result<()> {
///         let mut line = String::new();
///         while req.rfile.read_line(&mut line)? > 0 {
///             self.seen += 1;
///             write!(req.wfile, "{} {line}", self.seen)?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
///
/// let server = TcpServer::bind("127.0.0.1:0", PerRequest(Numbered::default))?;
/// # Ok::<(), socketserver::Error>(())
/// ```
pub trait PerRequestHandler {
    /// Runs first. If it fails, neither `handle` nor `finish` runs.
    ///
    /// # Errors
    ///
    /// An error ends the request before `handle`; it reaches `handle_error` with the client's address.
    fn setup(&mut self, _req: &mut Request<'_>) -> io::Result<()> {
        Ok(())
    }

    /// Serves the request.
    ///
    /// # Errors
    ///
    /// An error ends the request (after `finish`); it reaches `handle_error` with the client's address.
    fn handle(&mut self, req: &mut Request<'_>) -> io::Result<()>;

    /// Runs after `handle`, even when it failed.
    ///
    /// # Errors
    ///
    /// An error reaches `handle_error` with the client's address.
    fn finish(&mut self, _req: &mut Request<'_>) -> io::Result<()> {
        Ok(())
    }
}

/// Serves each request with a fresh [`PerRequestHandler`] from `make`
/// (a `Default::default`, a closure, a constructor). The value lives on the
/// serving thread's stack for the request's duration: nothing is allocated
/// unless `make` allocates.
#[derive(Debug, Clone, Copy)]
pub struct PerRequest<F>(pub F);

impl<F, S> RequestHandler for PerRequest<F>
where
    F: Fn() -> S + Send + Sync + 'static,
    S: PerRequestHandler,
{
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        let mut handler = (self.0)();
        handler.setup(req)?;
        let handled = handler.handle(req);
        let finished = handler.finish(req);
        handled.and(finished)
    }
}

/// One request as the handler sees it: a reader, a writer and two addresses.
///
/// `rfile` and `wfile` are public fields, so both can be borrowed at once.
pub struct Request<'a> {
    /// The request's bytes: the connection (stream) or the packet (datagram).
    pub rfile: Reader<'a>,
    /// Where the answer goes: the connection (stream) or the reply datagram.
    pub wfile: Writer<'a>,
    client: &'a Address,
    server: &'a Address,
    stats: &'a StatsHandle,
    kind: Kind,
    extras: Extras<'a>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("client_address", self.client)
            .field("server_address", self.server)
            .field("kind", &self.kind)
            .field("rfile", &self.rfile)
            .field("wfile", &self.wfile)
            .finish_non_exhaustive()
    }
}

impl AsFd for Request<'_> {
    /// The fd of [`Request::socket`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.extras {
            Extras::Stream(conn, _) => conn.socket.as_fd(),
            Extras::Datagram(socket, ..) => socket.as_fd(),
        }
    }
}

impl AsRawFd for Request<'_> {
    /// The fd of [`Request::socket`] (Python's `request.fileno()`).
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// The socket behind a request, and where its Unix-socket extras come from.
pub(crate) enum Extras<'a> {
    /// A connection: fds arrive with the bytes read; credentials by
    /// SO_PEERCRED; and what lives as long as the connection.
    Stream(&'a Conn, &'a mut ConnectionState),
    /// A datagram on the server's socket (fds and credentials arrived with
    /// it), or a framed message of a connection, with the state that lives
    /// as long as the connection.
    Datagram(&'a Socket, &'a mut Ancillary, Option<Framed<'a>>),
}

/// The connection a framed message came on.
pub(crate) struct Framed<'a> {
    /// What lives as long as the connection.
    pub state: &'a mut ConnectionState,
    /// Which part of its message this is.
    pub piece: crate::Piece,
    /// What its TLS handshake settled.
    #[cfg(feature = "tls")]
    pub tls: Option<&'a crate::tls::TlsInfo>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(
        rfile: Reader<'a>,
        wfile: Writer<'a>,
        client: &'a Address,
        (server, stats): (&'a Address, &'a StatsHandle),
        kind: Kind,
        extras: Extras<'a>,
    ) -> Self {
        Request { rfile, wfile, client, server, stats, kind, extras }
    }

    /// The client's address (Python's `client_address`).
    pub fn client_address(&self) -> &'a Address {
        self.client
    }

    /// The address the server is bound to (Python's `server.server_address`).
    pub fn server_address(&self) -> &'a Address {
        self.server
    }

    /// The server's counters now, as [`Server::stats`](crate::Server::stats)
    /// gives them: for a `STATS` command, a health check, a log line.
    /// (In a forked child: as they were when the child was forked.)
    ///
    /// ```
    /// use socketserver::{Request, TcpServer};
    /// use std::io::Write;
    ///
    /// let handler = |req: &mut Request<'_>| {
    ///     let stats = req.stats();
    ///     writeln!(req.wfile, "served {} of {} accepted", stats.served, stats.accepted)
    /// };
    /// # let _ = TcpServer::bind("127.0.0.1:0", handler);
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    /// The whole datagram, for a datagram request (Python's
    /// `self.request[0]`), or the whole message, for a framed one: however
    /// much of it `rfile` has read. `None` for a stream request, whose bytes
    /// are read from `rfile` as they come.
    ///
    /// ```
    /// use socketserver::{Request, UdpServer};
    /// use std::io::Write;
    ///
    /// let handler = |req: &mut Request<'_>| {
    ///     let packet = req.packet().unwrap_or_default();
    ///     writeln!(req.wfile, "{} bytes", packet.len())
    /// };
    /// # let _ = UdpServer::bind("127.0.0.1:0", handler);
    /// ```
    pub fn packet(&self) -> Option<&'a [u8]> {
        self.rfile.packet()
    }

    /// Whether this request is a stream connection, one datagram, or one
    /// framed message of a connection.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Keeps a stream connection for its next request: when the handler
    /// returns `Ok`, the connection goes back to the serving loop instead
    /// of closing, with whatever the client sent that the handler did not
    /// read. The handler runs again, with a new `Request`, when the client
    /// sends more, at once if some of it is already in. Between requests
    /// the connection holds no worker, only its fd: a pool of 8 serves any
    /// number of keep-alive clients. While it waits, `idle_timeout` and
    /// `connection_timeout` apply, and a client that closes ends it
    /// without a request.
    ///
    /// This is [`framing`](crate::ServerBuilder::framing) for handlers that
    /// read the stream themselves. Returns whether the connection will go
    /// back: not for datagrams or framed messages (which go back anyway), or
    /// in a forked child, which cannot give the loop an fd. A handler that
    /// fails or panics has its connection closed, handed back or not.
    ///
    /// ```
    /// use socketserver::{Request, TcpServer, WorkerPool};
    /// use std::io::{BufRead, Write};
    ///
    /// // One line in, one line out; then the connection waits in the loop.
    /// let handler = |req: &mut Request<'_>| {
    ///     let mut line = String::new();
    ///     if req.rfile.read_line(&mut line)? > 0 {
    ///         req.wfile.write_all(line.as_bytes())?;
    ///         req.hand_back();
    ///     }
    ///     Ok(())
    /// };
    /// let server = TcpServer::builder(handler).dispatch(WorkerPool::new(8).into()).bind("127.0.0.1:0")?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn hand_back(&mut self) -> bool {
        match &self.extras {
            Extras::Stream(conn, _) => conn.hand_back(),
            Extras::Datagram(..) => false,
        }
    }

    /// State that lives as long as the connection: a session, a
    /// transaction, a count of requests. The first call on a connection
    /// makes a `T::default()`; its later requests get the same value
    /// (asking for another type starts that one afresh). It lives across
    /// framed messages ([`ServerBuilder::framing`](crate::ServerBuilder::framing))
    /// and across the requests of a stream connection whose handler hands
    /// it back ([`hand_back`](Self::hand_back)), however many workers serve
    /// them. `None` for datagrams, which have no connection.
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::{Framing, Request, TcpServer};
    ///
    /// let handler = |req: &mut Request<'_>| {
    ///     let asked = req.connection_state::<u64>().map_or(0, |n| {
    ///         *n += 1;
    ///         *n
    ///     });
    ///     writeln!(req.wfile, "message {asked} on this connection")
    /// };
    /// let server = TcpServer::builder(handler).framing(Framing::lines(1024)).bind("127.0.0.1:0")?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn connection_state<T: Default + Send + 'static>(&mut self) -> Option<&mut T> {
        let state = match &mut self.extras {
            Extras::Stream(_, state) | Extras::Datagram(_, _, Some(Framed { state, .. })) => state,
            Extras::Datagram(_, _, None) => return None,
        };
        if !state.as_ref().is_some_and(|held| held.is::<T>()) {
            **state = Some(Box::new(T::default()));
        }
        state.as_mut()?.downcast_mut()
    }

    /// Which part of its message a framed request is: [`Piece::Whole`],
    /// or, under [`Framing::in_pieces`], one piece of a message over the
    /// framing's maximum. `Whole` for every request that is not framed.
    ///
    /// [`Piece::Whole`]: crate::Piece::Whole
    /// [`Framing::in_pieces`]: crate::Framing::in_pieces
    pub fn piece(&self) -> crate::Piece {
        match &self.extras {
            Extras::Datagram(_, _, Some(Framed { piece, .. })) => *piece,
            _ => crate::Piece::Whole,
        }
    }

    /// Unix sockets on Linux: the peer process's pid, uid and gid. For a
    /// stream, those it had when it connected (SO_PEERCRED); for a datagram,
    /// those the kernel attached to it. `None` on inet sockets or elsewhere.
    pub fn peer_credentials(&self) -> Option<Credentials> {
        match &self.extras {
            Extras::Stream(conn, _) => conn.peer_credentials(),
            Extras::Datagram(_, ancillary, _) => ancillary.credentials,
        }
    }

    /// What the trusted load balancer in front said about this request
    /// (feature `proxy-protocol`): the original destination and v2 TLVs.
    /// `None` when the request came straight from its client. The client's
    /// own address is already [`client_address`](Self::client_address).
    ///
    /// ```
    /// # use socketserver::{Request, TcpServer};
    /// let handler = |req: &mut Request<'_>| {
    ///     if let Some(header) = req.proxy_header() {
    ///         log::info!("{} came through {} for {:?}", req.client_address(), header.proxy_address(), header.authority());
    ///     }
    ///     Ok(())
    /// };
    /// # let _ = TcpServer::bind("127.0.0.1:0", handler);
    /// ```
    #[cfg(feature = "proxy-protocol")]
    pub fn proxy_header(&self) -> Option<&crate::proxy::ProxyHeader> {
        match &self.extras {
            Extras::Stream(conn, _) => conn.proxy.as_deref(),
            Extras::Datagram(_, ancillary, _) => ancillary.proxy.as_deref(),
        }
    }

    /// What the connection's TLS handshake settled (feature `tls`): protocol
    /// version, cipher suite, SNI name, ALPN protocol, the client's
    /// certificates. `None` on a server without TLS, and for datagrams. A
    /// framed message sees its connection's.
    ///
    /// ```
    /// # use socketserver::{Request, TcpServer};
    /// let handler = |req: &mut Request<'_>| {
    ///     if let Some(tls) = req.tls() {
    ///         log::info!("{:?} for {:?}", tls.protocol_version(), tls.server_name());
    ///     }
    ///     Ok(())
    /// };
    /// # let _ = TcpServer::bind("127.0.0.1:0", handler);
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        match &self.extras {
            Extras::Stream(conn, _) => conn.tls.as_deref().map(crate::tls::Session::info),
            Extras::Datagram(_, _, framed) => framed.as_ref().and_then(|framed| framed.tls),
        }
    }

    /// Unix sockets on Linux: the file descriptors the client passed
    /// (SCM_RIGHTS) with the bytes read so far (stream) or with the datagram.
    /// Each call hands over those not taken yet; any left untaken are
    /// closed when the request ends, so none leaks.
    ///
    /// ```
    /// # use std::io::Write;
    /// # use socketserver::Request;
    /// // Writes a greeting into every fd a client passes (a pipe, say).
    /// let handler = |req: &mut Request<'_>| {
    ///     std::io::Read::read(&mut req.rfile, &mut [0u8; 1])?; // the fds come with a byte
    ///     for fd in req.take_fds() {
    ///         std::fs::File::from(fd).write_all(b"hello\n")?;
    ///     }
    ///     Ok(())
    /// };
    /// # let _ = socketserver::UnixStreamServer::bind(std::env::temp_dir().join("take-fds-doc.sock"), handler);
    /// ```
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        match &mut self.extras {
            Extras::Stream(conn, _) => conn.take_fds(),
            Extras::Datagram(_, ancillary, _) => std::mem::take(&mut ancillary.fds),
        }
    }

    /// The socket behind the request (Python's `self.request`, or
    /// `request.fileno()`): the connection for a stream request, the
    /// server's own socket for a datagram request. For per-connection
    /// options this crate does not set (`SO_PRIORITY`, keepalive, a
    /// different timeout):
    ///
    /// ```
    /// # use socketserver::{Request, TcpServer};
    /// let handler = |req: &mut Request<'_>| {
    ///     req.socket().set_keepalive(true)?;
    ///     Ok(())
    /// };
    /// # let _ = TcpServer::bind("127.0.0.1:0", handler);
    /// ```
    ///
    /// Reading or writing through it bypasses `rfile`'s buffer and
    /// `wfile`'s; shutting it down or changing its blocking mode disturbs
    /// the adapters. A datagram server's socket is shared by every request.
    pub fn socket(&self) -> SockRef<'_> {
        SockRef::from(self)
    }
}
