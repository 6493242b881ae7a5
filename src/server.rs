//! `Server<T, H>`: the serving loop, Python's lifecycle methods, and shutdown.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::adapter::{self, Context, Incoming, Scratch, Timeouts};
use crate::ancillary::Ancillary;
use crate::builder::{Parts, ServerBuilder};
use crate::dispatch::{Dispatch, Dispatcher};
use crate::hooks::Hooks;
use crate::options::{Options, deadline_after, socket_timeout};
use crate::serving::{Admission, Admitted, Framing};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Counters, Stats, StatsHandle};
use crate::sys;
use crate::transport::{self, BindAddress, Kind, SocketFile, Transport};
use crate::{Address, Error, RequestHandler, Result};

/// How long accepting pauses after the process ran out of file descriptors
/// or memory, so the loop does not spin while nothing can be accepted. A
/// request of ours ending ends the pause early: it freed an fd.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// How many requests one turn of `serve_forever` takes from a readable
/// socket before it looks at its other fds again.
const READY_BUDGET: usize = 64;

/// At most this many clients are taken from the backlog to be closed with a
/// log line when the server closes, so a flood cannot hold the close up.
const BACKLOG_CLOSE_LIMIT: usize = 65_536;

/// What one attempt to take a request from the socket found.
enum Taken {
    /// Requests handled: dispatched, or turned away (refused by
    /// `verify_request`, a truncated datagram, an error about one client).
    /// Either way each ends one `handle_request`, as in Python.
    Requests(usize),
    /// A connection accepted and parked until it speaks: not a request yet.
    Parked,
    /// Nothing left to take (or accepting paused).
    Empty,
    /// Requests handled, and the socket was seen empty while taking them
    /// (a short batch): no need to ask it again before polling.
    Drained(usize),
}

/// A socket server: one transport `T`, one handler `H`.
///
/// Use the aliases [`TcpServer`](crate::TcpServer), [`UdpServer`](crate::UdpServer),
/// [`UnixStreamServer`](crate::UnixStreamServer) and
/// [`UnixDatagramServer`](crate::UnixDatagramServer). Dropping the server
/// closes it (Python's `server_close`).
pub struct Server<T: Transport, H: RequestHandler> {
    // Drop order matters: the socket closes first (no new clients wait in a
    // dead backlog), then the dispatcher waits for running requests, then the
    // socket file goes.
    socket: Arc<Socket>,
    dispatcher: Dispatcher<H>,
    socket_file: Option<SocketFile>,
    ctx: Context<H>,
    hooks: Hooks,
    options: Options,
    shutdown: ShutdownHandle,
    activated: bool,
    /// False for a socket handed over (`from_fd`), which may be shared.
    owns_socket: bool,
    /// Accepting is paused until then after a resource error.
    paused_until: Option<Instant>,
    /// Handed over and closing: serve what was accepted, accept nothing new.
    closing: bool,
    /// The loop's readiness registry, and the connections on their way from
    /// accept to a handler: PROXY header, TLS handshake, waiting for their
    /// first byte or for room.
    admission: Admission,
    /// With `framing`: the framing, shared with workers.
    framing: Option<Arc<Framing>>,
    packet: Vec<u8>,
    /// The reply buffer, and the fds and credentials of the current datagram.
    scratch: Scratch,
    /// recvmmsg/sendmmsg buffers, for a sequential datagram server with
    /// `datagram_batch` above 1.
    batch: Option<sys::DatagramBatch>,
    transport: PhantomData<fn() -> T>,
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
        let max_connections = if T::KIND == Kind::Stream { parts.options.max_connections } else { None };
        let batch = {
            let n = parts.options.datagram_batch_for(&requested);
            (T::KIND == Kind::Datagram && n > 1 && parts.dispatch == Dispatch::sequential())
                .then(|| sys::DatagramBatch::new(n, parts.options.max_packet_size))
        };
        let counters = Arc::new(Counters::default());
        let admission = Admission::new(&shutdown, socket.as_fd()).map_err(|source| Error::Bind {
            action: "create a readiness registry for",
            addr: requested.clone(),
            source,
        })?;
        let framing = parts.options.framing.clone().map(Arc::new);
        let mut server = Server {
            dispatcher: Dispatcher::new(
                &parts.dispatch,
                max_connections,
                parts.options.drain_timeout,
                shutdown.clone(),
                (T::KIND == Kind::Stream).then(|| socket.as_raw_fd()),
                Arc::clone(&counters),
                Arc::clone(&parts.on_error),
            ),
            socket: Arc::new(socket),
            socket_file,
            ctx: Context {
                handler: parts.handler,
                counters,
                on_error: parts.on_error,
                server_address: Arc::new(requested),
                timeouts: Timeouts { read: parts.options.read_timeout, write: parts.options.write_timeout },
                returns: Arc::clone(admission.returns()),
            },
            hooks: parts.hooks,
            packet: vec![0; if T::KIND == Kind::Datagram { parts.options.max_packet_size } else { 0 }],
            scratch: Scratch::default(),
            options: parts.options,
            shutdown,
            activated,
            owns_socket: true,
            paused_until: None,
            admission,
            framing,
            closing: false,
            batch,
            transport: PhantomData,
        };
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
        self.socket_file = transport::bind::<T>(&self.socket, &self.ctx.server_address, &self.options)?;
        self.refresh_address()
    }

    /// Starts listening (Python's `server_activate`), after [`server_bind`](Self::server_bind).
    ///
    /// # Errors
    ///
    /// `Error::Bind` naming the address if listening fails.
    pub fn server_activate(&mut self) -> Result<()> {
        transport::activate(&self.socket, T::KIND, &self.options)
            .map_err(|source| self.bind_error("listen on", source))?;
        self.activated = true;
        Ok(())
    }

    /// Reads the bound address back from the socket, so port 0 becomes the real port.
    fn refresh_address(&mut self) -> Result<()> {
        let local = self.socket.local_addr().map_err(|source| self.bind_error("read the address of", source))?;
        let resolved = match Address::from_sock_addr(&local) {
            // A Unix socket's name is what it was bound with; keep the caller's spelling.
            Address::Unnamed => (*self.ctx.server_address).clone(),
            address => address,
        };
        self.ctx.server_address = Arc::new(resolved);
        Ok(())
    }

    fn bind_error(&self, action: &'static str, source: io::Error) -> Error {
        Error::Bind { action, addr: self.server_address().clone(), source }
    }

    fn server_error(&self, action: &'static str, source: io::Error) -> Error {
        Error::Server { action, addr: self.server_address().clone(), source }
    }

    /// The address the server is bound to, read from the socket (Python's
    /// `server_address`): binding port 0 gives the port the OS chose.
    pub fn server_address(&self) -> &Address {
        &self.ctx.server_address
    }

    /// The server's socket, for options this crate does not wrap.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The raw fd of the server's socket (Python's `fileno()`).
    pub fn fileno(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Requests in flight (Python's `len(active_children)` or live threads):
    /// handlers still running in threads, pool jobs queued or running, or
    /// child processes not yet reaped.
    pub fn active_count(&self) -> usize {
        self.dispatcher.active()
    }

    /// What the server has done so far: requests accepted, served, refused,
    /// failed, cut, and running now.
    pub fn stats(&self) -> Stats {
        Stats::read(&self.ctx.counters, self.dispatcher.capacity())
    }

    /// Reads [`stats`](Self::stats) from another thread while this one
    /// serves.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle::new(Arc::clone(&self.ctx.counters), Arc::clone(self.dispatcher.capacity()))
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
        crate::systemd::ListenerCopy::new(&self.socket)
    }

    /// A handle that stops [`serve_forever`](Self::serve_forever) from any
    /// thread, or from a handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Closes the server (Python's `server_close`): the socket is closed and
    /// a Unix socket file it created is removed. Dropping the server does
    /// the same.
    pub fn server_close(self) {}

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
    /// # Errors
    ///
    /// [`Error::State`] if the server was built but not activated;
    /// [`Error::Server`] if its own socket failed (a closed fd, say).
    pub fn serve_forever(&mut self) -> Result<()> {
        self.check_activated()?;
        let stop = self.shutdown.clone();
        let _serving = stop.enter_loop();
        self.hooks.serving();
        while !stop.take_request() {
            self.turn(self.options.poll_interval, READY_BUDGET)?;
            let Server { hooks, ctx, dispatcher, .. } = self;
            hooks.passed(|| Stats::read(&ctx.counters, dispatcher.capacity()));
        }
        self.hooks.stopping();
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
        let stop = self.shutdown.clone();
        let _serving = stop.enter_loop();
        let deadline = self.options.timeout.map(|t| deadline_after(Instant::now(), t));
        while !stop.take_request() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if self.turn(left, 1)? {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.hooks.handle_timeout();
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

    /// One turn of the loop: wait until something is ready (or `timeout`
    /// passes), then take it. Returns whether a request was handled
    /// (dispatched or turned away).
    ///
    /// The registry holds the wake-up socket, the server socket (armed while
    /// the server takes requests), and every held connection that has not
    /// yet spoken, room or not. Connections that spoke are dispatched, oldest
    /// first, before new ones are accepted. When accepting is paused or the
    /// dispatcher is full, requests wait in the kernel, where they are safe,
    /// and a finishing request wakes the loop.
    fn turn(&mut self, timeout: Option<Duration>, budget: usize) -> Result<bool> {
        self.dispatcher.turn();
        let returned_away = {
            let Server { admission, ctx, options, .. } = self;
            admission.take_returned(Instant::now(), ctx, options)
        };
        let mut left = budget;
        let queued = self.dispatch_spoken(&mut left);
        if left == 0 {
            return Ok(true);
        }
        let now = Instant::now();
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
        }
        let below_max = self.below_max_connections();
        if !below_max {
            // Parked connections may be what fills the limit; one of the
            // running requests ending must still wake the loop.
            self.dispatcher.wake_on_next_release();
        }
        let accepting = !self.closing && !self.dispatcher.is_full() && below_max && self.paused_until.is_none();
        let pause = self.paused_until.map(|until| until - now);
        // Having served some, return to the caller (and `service_actions`) soon.
        let timeout = if queued { Some(Duration::ZERO) } else { timeout };
        let limit = [timeout, pause, self.admission.next_expiry(now), self.dispatcher.recheck_after()]
            .into_iter()
            .flatten()
            .min();

        let Server { admission, socket, shutdown, ctx, hooks, options, .. } = self;
        let woken = admission
            .wait((shutdown.wake_fd(), socket.as_fd()), accepting, limit, (ctx, hooks, options))
            .map_err(|e| self.server_error("wait", e))?;
        if woken.wake {
            self.shutdown.drain_wakeups();
            // A connection of ours ended: its fd is free, so accepting may work again.
            self.paused_until = None;
        }
        let listener_ready = accepting && woken.listener;
        let turned_away = woken.turned_away;
        let mut took = queued | turned_away | returned_away;
        took |= self.dispatch_spoken(&mut left);
        if listener_ready && left > 0 {
            took |= self.take_ready(left)?;
        }
        Ok(took)
    }

    /// Open connections, parked ones included, are below `max_connections`.
    fn below_max_connections(&self) -> bool {
        match self.options.max_connections {
            Some(max) if T::KIND == Kind::Stream => self.admission.len() + self.dispatcher.active() < max,
            _ => true,
        }
    }

    /// Dispatches parked connections that have spoken, oldest first, while
    /// the dispatcher has room and `left` allows. Parked connections already
    /// count as open, so `max_connections` does not hold them back.
    fn dispatch_spoken(&mut self, left: &mut usize) -> bool {
        let mut took = false;
        while *left > 0 && self.admission.has_spoken() && self.dispatcher.room() > 0 {
            if let Some(framing) = &self.framing
                && let Some((framed, message)) = self.admission.next_message()
            {
                self.dispatcher.message(&self.ctx, framing, framed, message, &mut self.scratch);
            } else if let Some(conn) = self.admission.next_spoken() {
                self.dispatcher.stream(&self.ctx, conn);
            } else {
                break;
            }
            *left -= 1;
            took = true;
        }
        took
    }

    /// Takes up to `budget` requests from a socket poll found readable,
    /// until it has no more: one poll serves a burst, not one request.
    fn take_ready(&mut self, budget: usize) -> Result<bool> {
        let mut took = false;
        let mut left = budget;
        while left > 0 {
            let taken = match T::KIND {
                Kind::Stream => self.accept_and_dispatch()?,
                Kind::Datagram => self.receive_and_dispatch(left)?,
            };
            match taken {
                Taken::Requests(n) => {
                    took = true;
                    left = left.saturating_sub(n);
                }
                Taken::Drained(n) => {
                    took |= n > 0;
                    break;
                }
                Taken::Parked => left -= 1,
                Taken::Empty => break,
            }
            if self.paused_until.is_some()
                || self.shutdown.is_shutdown_requested()
                || self.dispatcher.is_full()
                || !self.below_max_connections()
            {
                break;
            }
        }
        Ok(took)
    }

    fn accept_and_dispatch(&mut self) -> Result<Taken> {
        let (socket, from) = match self.socket.accept() {
            Ok(accepted) => accepted,
            Err(e) => return self.recover("accept", e),
        };
        let peer = Address::from_sock_addr(&from);
        Counters::add(&self.ctx.counters.accepted, 1);
        if let Err(source) = self.prepare_connection(&socket) {
            (self.ctx.on_error)(&Error::Request { peer, source });
            return Ok(Taken::Requests(1));
        }
        let now = Instant::now();
        let deadline = self.options.connection_timeout.map(|t| deadline_after(now, t));
        let conn = Incoming::new(socket, peer, deadline);
        match self.admission.accepted(conn, now, &self.ctx, &mut self.hooks, &self.options) {
            Admitted::Held => Ok(Taken::Parked),
            Admitted::Refused => Ok(Taken::Requests(1)),
            Admitted::Ready(conn) => {
                self.dispatcher.stream(&self.ctx, conn);
                Ok(Taken::Requests(1))
            }
        }
    }

    fn prepare_connection(&self, conn: &Socket) -> io::Result<()> {
        sys::accepted_blocking(conn)?;
        if let Some(timeout) = self.options.read_timeout {
            conn.set_read_timeout(Some(socket_timeout(timeout)))?;
        }
        if let Some(timeout) = self.options.write_timeout {
            conn.set_write_timeout(Some(socket_timeout(timeout)))?;
        }
        T::prepare_accepted(conn, &self.options)
    }

    /// Takes one datagram, or (batching) up to `budget` of them.
    fn receive_and_dispatch(&mut self, budget: usize) -> Result<Taken> {
        if let Some(batch) = self.batch.take() {
            return self.receive_batch(batch, budget);
        }
        let (len, truncated, from) = match self.receive() {
            Ok(received) => received,
            Err(e) => return self.recover("receive", e),
        };
        let Server { ctx, hooks, options, packet, scratch, .. } = self;
        let admitted =
            admit_datagram(ctx, hooks, options, Address::from_sock_addr(&from), &packet[..len], truncated, scratch);
        let Some((peer, skip)) = admitted else {
            return Ok(Taken::Requests(1));
        };
        self.dispatcher.datagram(&self.ctx, &self.socket, &self.packet[skip..len], peer, &from, &mut self.scratch);
        // Fds the handler did not take are closed here.
        self.scratch.ancillary = Ancillary::default();
        Ok(Taken::Requests(1))
    }

    /// One datagram into the packet buffer; on Unix sockets with its passed
    /// fds and sender credentials (Linux).
    fn receive(&mut self) -> io::Result<(usize, bool, socket2::SockAddr)> {
        if self.ctx.server_address.is_unix() {
            return self.scratch.ancillary.receive(&self.socket, &mut self.packet);
        }
        sys::recv_datagram(&self.socket, &mut self.packet)
    }

    /// The batched datagram path: one recvmmsg, the handler on each datagram
    /// in order, one sendmmsg for the replies. Same semantics as one at a
    /// time: one request per datagram, one reply per request.
    fn receive_batch(&mut self, mut batch: sys::DatagramBatch, budget: usize) -> Result<Taken> {
        let mut scratch = Scratch::default();
        let received = batch.recv(&self.socket, budget);
        let count = match received {
            Ok(count) => count,
            Err(e) => {
                self.batch = Some(batch);
                return self.recover("receive", e);
            }
        };
        for i in 0..count {
            let (packet, truncated, from, reply) = batch.datagram(i);
            std::mem::swap(reply, &mut scratch.reply);
            let (ctx, hooks, options) = (&self.ctx, &mut self.hooks, &self.options);
            let admitted =
                admit_datagram(ctx, hooks, options, Address::from_sock_addr(&from), packet, truncated, &mut scratch);
            let Some((peer, skip)) = admitted else { continue };
            let send = adapter::answer_datagram(&self.ctx, &self.socket, &packet[skip..], &peer, &from, &mut scratch).1;
            std::mem::swap(reply, &mut scratch.reply);
            if send {
                batch.reply_later(i);
            }
        }
        let ctx = &self.ctx;
        batch.send_replies(&self.socket, |to, e| adapter::reply_failed(ctx, &Address::from_sock_addr(&to), e));
        let drained = count < batch.capacity().min(budget);
        self.batch = Some(batch);
        Ok(if drained { Taken::Drained(count) } else { Taken::Requests(count) })
    }

    /// Decides what a failed accept or receive means. Only errors that say
    /// the server's own socket is broken end the loop; a failure caused by
    /// one client is skipped, and running out of fds or memory pauses
    /// accepting briefly instead of spinning.
    fn recover(&mut self, action: &'static str, e: io::Error) -> Result<Taken> {
        match e.raw_os_error() {
            Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT | libc::EOPNOTSUPP) => {
                Err(self.server_error(action, e))
            }
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                log::error!("{}; pausing {RESOURCE_BACKOFF:?}", self.server_error(action, e));
                Counters::add(&self.ctx.counters.resource_pauses, 1);
                self.paused_until = Some(Instant::now() + RESOURCE_BACKOFF);
                self.dispatcher.wake_on_next_release();
                Ok(Taken::Empty)
            }
            _ if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(Taken::Empty),
            _ => {
                // About one client (ECONNABORTED, say): like Python's
                // `handle_request`, that ends the request.
                log::warn!("{}", self.server_error(action, e));
                Ok(Taken::Requests(1))
            }
        }
    }
}

/// Counts a datagram just received and says whether to serve it, as whom,
/// and from which byte: not if it was truncated (reported), its PROXY header
/// is refused (reported), or `verify_request` refuses it. A trusted
/// balancer's v2 header names the client and is not part of the request;
/// what it says goes into `scratch`. The one check for the batched and the
/// one-at-a-time receive.
#[cfg_attr(not(feature = "proxy-protocol"), allow(unused_variables))]
fn admit_datagram<H>(
    ctx: &Context<H>,
    hooks: &mut Hooks,
    options: &Options,
    peer: Address,
    packet: &[u8],
    truncated: bool,
    scratch: &mut Scratch,
) -> Option<(Address, usize)> {
    let counters = &ctx.counters;
    Counters::add(&counters.accepted, 1);
    if truncated {
        Counters::add(&counters.truncated, 1);
        (ctx.on_error)(&Error::Truncated { peer, max: options.max_packet_size });
        return None;
    }
    #[cfg(feature = "proxy-protocol")]
    let (peer, skip) = match crate::proxy::datagram_client(options.proxy_protocol.as_ref(), peer, packet) {
        Ok((peer, skip, header)) => {
            scratch.ancillary.proxy = header;
            (peer, skip)
        }
        Err(refused) => {
            Counters::add(&counters.proxy_refused, 1);
            (ctx.on_error)(&refused);
            return None;
        }
    };
    #[cfg(not(feature = "proxy-protocol"))]
    let skip = 0;
    if !hooks.verify_request(&peer) {
        Counters::add(&counters.refused, 1);
        return None;
    }
    Some((peer, skip))
}

impl<T: Transport, H: RequestHandler> Server<T, H> {
    /// After a hand-over, the connections this process already accepted are
    /// its own to serve: the successor cannot take them, and closing them
    /// would lose requests a client (or a balancer) already sent. Carries
    /// each through the stage it is in (PROXY header, TLS handshake, waiting
    /// to speak, waiting for room) to a handler, without accepting anything
    /// new; bounded by each stage's deadline and by `drain_timeout`.
    fn serve_accepted(&mut self) {
        self.closing = true;
        self.admission.closing();
        let deadline = self.options.drain_timeout.map(|t| deadline_after(Instant::now(), t));
        while self.admission.len() > 0 {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let over = left.is_some_and(|left| left.is_zero()) || self.shutdown.is_aborted();
            if over || self.turn(left, usize::MAX).is_err() {
                break;
            }
        }
    }
}

impl<T: Transport, H: RequestHandler> Drop for Server<T, H> {
    /// Before the socket closes (Python's `server_close`): connections taken
    /// but not served, and clients still waiting in the listen backlog, are
    /// closed with a log line each instead of being reset unnoticed.
    fn drop(&mut self) {
        if self.shutdown.is_handed_over() {
            self.serve_accepted();
        }
        self.admission.close_all();
        self.admission.forget(self.shutdown.wake_fd(), self.socket.as_fd());
        if self.shutdown.is_handed_over() {
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
                match self.socket.accept() {
                    Ok((conn, from)) => adapter::close_unserved(conn, &Address::from_sock_addr(&from)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
}

impl<T: Transport, H: RequestHandler> AsFd for Server<T, H> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl<T: Transport, H: RequestHandler> AsRawFd for Server<T, H> {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl<T: Transport, H: RequestHandler> std::fmt::Debug for Server<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &*self.ctx.server_address)
            .field("kind", &T::KIND)
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}
