//! `Server<T, H>`: Python's face. Binding, `serve_forever`, `handle_request`,
//! the other lifecycle methods, and closing; each turn of the loop they
//! run is in `serving/`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use socket2::Socket;

use crate::builder::ServerBuilder;
use crate::deadline::deadline_after;
use crate::dispatch::Dispatch;
use crate::handler_io::close_unserved;
use crate::serving::{Loop, Parts, READY_BUDGET};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Stats, StatsHandle};
use crate::transport::{self, BindAddress, Kind, SocketFile, Transport};
use crate::{Address, Error, RequestHandler, Result};

/// At most this many clients are taken from the backlog to be closed with a
/// log line when the server closes, so a flood cannot hold the close up.
const BACKLOG_CLOSE_LIMIT: usize = 65_536;

/// A socket server: one transport `T`, one handler `H`.
///
/// Use the aliases [`TcpServer`](crate::TcpServer), [`UdpServer`](crate::UdpServer),
/// [`UnixStreamServer`](crate::UnixStreamServer) and
/// [`UnixDatagramServer`](crate::UnixDatagramServer). Dropping the server
/// closes it (Python's `server_close`).
pub struct Server<T: Transport, H: RequestHandler> {
    // Drop order matters: the loop goes first (its socket closes, then its
    // dispatcher waits for running requests), then the socket file.
    pub(crate) serving: Loop<T, H>,
    pub(crate) socket_file: Option<SocketFile>,
    pub(crate) activated: bool,
    /// False for a socket handed over (`from_fd`), which may be shared.
    pub(crate) owns_socket: bool,
}

impl<T: Transport, H: RequestHandler> Server<T, H> {
    /// Binds `addr` and starts listening, with default options.
    ///
    /// ```
    /// # use socketserver::{TcpServer, Request};
    /// let server = TcpServer::bind("127.0.0.1:0", |_: &mut Request<'_>| Ok(()))?;
    /// assert_ne!(server.server_address().as_inet().unwrap().port(), 0);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`ServerBuilder::bind`].
    pub fn bind(addr: impl BindAddress<T::Family>, handler: H) -> Result<Self> {
        Self::builder(handler).bind(addr)
    }

    /// Starts configuring a server for `handler`.
    pub fn builder(handler: H) -> ServerBuilder<T, H> {
        ServerBuilder::new(handler)
    }

    /// Binds `addr` with a thread per request (Python's `ThreadingTCPServer`
    /// and friends: `TcpServer::threading(addr, handler)`).
    ///
    /// # Errors
    ///
    /// As for [`ServerBuilder::bind`].
    pub fn threading(addr: impl BindAddress<T::Family>, handler: H) -> Result<Self> {
        Self::builder(handler).dispatch(Dispatch::threads()).bind(addr)
    }

    /// Binds `addr` with a child process per request (Python's
    /// `ForkingTCPServer` and friends: `TcpServer::forking(addr, handler)`).
    ///
    /// # Errors
    ///
    /// As for [`ServerBuilder::bind`].
    pub fn forking(addr: impl BindAddress<T::Family>, handler: H) -> Result<Self> {
        Self::builder(handler).dispatch(Dispatch::fork()).bind(addr)
    }

    pub(crate) fn from_parts(
        parts: Parts<H>,
        socket: Socket,
        socket_file: Option<SocketFile>,
        requested: Address,
        activated: bool,
    ) -> Result<Self> {
        let shutdown = ShutdownHandle::new().map_err(|source| Error::Bind {
            action: "create a wake-up socket for",
            addr: requested.clone(),
            source,
        })?;
        let serving = Loop::new(parts, socket, requested, shutdown)?;
        let mut server = Server { serving, socket_file, activated, owns_socket: true };
        if activated {
            server.refresh_address()?;
        }
        Ok(server)
    }

    /// Marks the socket as handed over rather than made here.
    pub(crate) fn inherited(mut self) -> Self {
        self.owns_socket = false;
        self
    }

    /// Binds the socket (Python's `server_bind`), for a server made with
    /// [`ServerBuilder::build`].
    ///
    /// # Errors
    ///
    /// `Error::Bind` or `Error::PathInUse`, naming the address.
    pub fn server_bind(&mut self) -> Result<()> {
        self.socket_file =
            transport::bind::<T>(self.serving.socket(), self.serving.server_address(), self.serving.options())?;
        self.refresh_address()
    }

    /// Starts listening (Python's `server_activate`), after [`server_bind`](Self::server_bind).
    ///
    /// # Errors
    ///
    /// `Error::Bind` naming the address if listening fails.
    pub fn server_activate(&mut self) -> Result<()> {
        transport::activate(self.serving.socket(), T::KIND, self.serving.options())
            .map_err(|source| self.bind_error("listen on", source))?;
        self.activated = true;
        Ok(())
    }

    /// Reads the bound address back from the socket, so port 0 becomes the real port.
    fn refresh_address(&mut self) -> Result<()> {
        let local =
            self.serving.socket().local_addr().map_err(|source| self.bind_error("read the address of", source))?;
        let resolved = match Address::from_sock_addr(&local) {
            // A Unix socket's name is what it was bound with; keep the caller's spelling.
            Address::Unnamed => (**self.serving.server_address()).clone(),
            address => address,
        };
        self.serving.set_server_address(resolved);
        Ok(())
    }

    fn bind_error(&self, action: &'static str, source: io::Error) -> Error {
        Error::Bind { action, addr: self.server_address().clone(), source }
    }

    /// The address the server is bound to, read from the socket (Python's
    /// `server_address`): binding port 0 gives the port the OS chose.
    pub fn server_address(&self) -> &Address {
        self.serving.server_address()
    }

    /// Where the server listens, as an [`Endpoint`](crate::Endpoint):
    /// `tcp://127.0.0.1:PORT`, `unix:/run/app.sock`; its text parses back.
    ///
    /// ```
    /// # use socketserver::{TcpServer, Request};
    /// let server = TcpServer::bind("127.0.0.1:0", |_: &mut Request<'_>| Ok(()))?;
    /// let port = server.server_address().as_inet().unwrap().port();
    /// assert_eq!(server.endpoint().to_string(), format!("tcp://127.0.0.1:{port}"));
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn endpoint(&self) -> crate::Endpoint {
        crate::Endpoint::of(T::KIND, self.server_address())
    }

    /// The server's socket, for options this crate does not wrap.
    pub fn socket(&self) -> &Socket {
        self.serving.socket()
    }

    /// The raw fd of the server's socket (Python's `fileno()`).
    pub fn fileno(&self) -> RawFd {
        self.serving.socket().as_raw_fd()
    }

    /// Requests in flight (Python's `len(active_children)` or live threads):
    /// handlers still running in threads, pool jobs queued or running, or
    /// child processes not yet reaped.
    pub fn active_count(&self) -> usize {
        self.serving.active()
    }

    /// What the server has done so far: requests accepted, served, refused,
    /// failed, cut, and running now.
    pub fn stats(&self) -> Stats {
        self.serving.stats().get()
    }

    /// Reads [`stats`](Self::stats) from another thread while this one
    /// serves.
    pub fn stats_handle(&self) -> StatsHandle {
        self.serving.stats().clone()
    }

    /// A copy of the listening socket for a restart's
    /// [`Successor`](crate::systemd::Successor) (feature `systemd`), kept
    /// while this server serves on.
    ///
    /// # Errors
    ///
    /// [`Error::Restart`] if the socket cannot be copied.
    #[cfg(feature = "systemd")]
    pub fn listener_copy(&self) -> Result<crate::systemd::ListenerCopy> {
        crate::systemd::ListenerCopy::new(self.serving.socket())
    }

    /// A handle that stops [`serve_forever`](Self::serve_forever) from any
    /// thread, or from a handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.serving.shutdown().clone()
    }

    /// Closes the server (Python's `server_close`), and returns when that
    /// is over, with the counts as they end: the drain happens here, not in
    /// [`serve_forever`](Self::serve_forever), which returns as soon as it
    /// is asked to stop.
    ///
    /// What clients already sent is answered first: requests queued or
    /// running, messages pipelined behind one being answered, requests
    /// unread in a kept connection's socket, and (with a
    /// [`drain_timeout`](ServerBuilder::drain_timeout)) a framed message
    /// still arriving; connections between requests are closed. Then the
    /// socket is closed and a Unix socket file it created is removed. With
    /// a `drain_timeout`, all of it ends by that deadline: what still runs
    /// is cut, each with a log line (counted in `cut_at_drain`). So once
    /// this returns, every request the server accepted has been answered,
    /// or failed or was cut as the returned [`Stats`] count: the moment to
    /// save what handlers changed. Dropping the server does the same.
    ///
    /// ```
    /// # use socketserver::{TcpServer, Request};
    /// let mut server = TcpServer::bind("127.0.0.1:0", |_: &mut Request<'_>| Ok(()))?;
    /// server.shutdown_handle().request_shutdown();
    /// server.serve_forever()?; // returns at once: asked to stop
    /// let stats = server.server_close(); // drained: nothing is left running
    /// assert_eq!(stats.active, 0);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn server_close(self) -> Stats {
        let stats = self.serving.stats().clone();
        drop(self);
        stats.get()
    }

    /// Serves requests until a [`ShutdownHandle`] asks it to stop (Python's
    /// `serve_forever`).
    ///
    /// It waits (epoll, kqueue) on the server socket and the handle's wake-up
    /// socket, so a shutdown takes effect at once. After every pass of the
    /// loop (the requests one wake-up brought are dispatched, or
    /// [`poll_interval`](ServerBuilder::poll_interval) passed with nothing
    /// to do) it calls `service_actions`, as Python's does. Errors about
    /// single requests go to `handle_error`; only a failure of the server's
    /// own socket is returned.
    ///
    /// It returns as soon as it is asked to stop; requests still running or
    /// queued, and what clients already sent, are answered by the close that
    /// follows ([`server_close`](Self::server_close), or drop), which
    /// returns once that drain is over.
    ///
    /// # Errors
    ///
    /// [`Error::State`] if the server was built but not activated;
    /// [`Error::Server`] if its own socket failed (a closed fd, say).
    pub fn serve_forever(&mut self) -> Result<()> {
        self.check_activated()?;
        self.serving.starting();
        let stop = self.serving.shutdown().clone();
        let _serving = stop.enter_loop();
        self.serving.hooks().serving();
        let poll_interval = self.serving.options().poll_interval;
        while !stop.take_request() {
            self.serving.turn(poll_interval, READY_BUDGET)?;
            self.serving.passed();
        }
        self.serving.hooks().stopping();
        Ok(())
    }

    /// Waits for one request and handles it (Python's `handle_request`).
    ///
    /// Waits at most the server's [`timeout`](ServerBuilder::timeout); when
    /// it passes without a request, calls `handle_timeout` and returns.
    /// As in Python, a request that is turned away ends the call too, without
    /// `handle_timeout`: one `verify_request` refused, a truncated datagram,
    /// or a connection that failed before its handler could start. Returns
    /// early, without serving, if a shutdown is requested. With
    /// `idle_timeout`, a connection that has not spoken yet is not a request.
    ///
    /// # Errors
    ///
    /// As for [`serve_forever`](Self::serve_forever).
    pub fn handle_request(&mut self) -> Result<()> {
        self.check_activated()?;
        self.serving.starting();
        let stop = self.serving.shutdown().clone();
        let _serving = stop.enter_loop();
        let deadline = self.serving.options().timeout.map(|t| deadline_after(Instant::now(), t));
        while !stop.take_request() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if self.serving.turn(left, 1)? {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.serving.hooks().handle_timeout();
                return Ok(());
            }
        }
        Ok(())
    }

    fn check_activated(&self) -> Result<()> {
        if self.activated {
            Ok(())
        } else {
            Err(Error::State {
                addr: self.server_address().clone(),
                state: "not activated: call server_bind and server_activate",
            })
        }
    }
}

impl<T: Transport, H: RequestHandler> Drop for Server<T, H> {
    /// Before the socket closes (Python's `server_close`): connections taken
    /// but not served, and clients still waiting in the listen backlog, are
    /// closed with a log line each instead of being reset unnoticed.
    fn drop(&mut self) {
        self.serving.close();
        if self.serving.shutdown().is_handed_over() {
            // The socket lives on in a successor: its backlog and its file are the successor's.
            if let Some(file) = self.socket_file.take() {
                file.disown();
            }
            return;
        }
        // Only the backlog of a socket the server made is its own to close:
        // an inherited one may be shared (systemd keeps its copy).
        if T::KIND == Kind::Stream && self.activated && self.owns_socket {
            for _ in 0..BACKLOG_CLOSE_LIMIT {
                match self.serving.socket().accept() {
                    Ok((conn, from)) => close_unserved(conn, &Address::from_sock_addr(&from)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
}

impl<T: Transport, H: RequestHandler> AsFd for Server<T, H> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.serving.socket().as_fd()
    }
}

impl<T: Transport, H: RequestHandler> AsRawFd for Server<T, H> {
    fn as_raw_fd(&self) -> RawFd {
        self.serving.socket().as_raw_fd()
    }
}

impl<T: Transport, H: RequestHandler> std::fmt::Debug for Server<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &**self.serving.server_address())
            .field("kind", &T::KIND)
            .field("fd", &self.serving.socket().as_raw_fd())
            .finish()
    }
}
