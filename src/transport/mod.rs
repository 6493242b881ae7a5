//! Transports: how a server's socket is made, bound and activated. Stream
//! transports accept connections; datagram transports receive packets. The
//! server loop and the dispatchers never look further into a transport than
//! its [`Kind`].

mod inet;
mod unix;

pub use inet::{TcpTransport, UdpTransport};
pub(crate) use unix::SocketFile;
pub use unix::{UnixDatagramTransport, UnixStreamTransport};

use socket2::Socket;

use crate::options::Options;
use crate::{Address, Error, Result};

/// Whether a request is a stream connection, a single datagram, or one
/// framed message of a stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A connection on a TCP or Unix stream socket: `rfile` reads until the
    /// client shuts down its side, `wfile` writes back on the connection.
    Stream,
    /// One datagram on a UDP or Unix datagram socket: `rfile` reads that one
    /// packet, and whatever is written to `wfile` is sent back as one datagram.
    Datagram,
    /// One framed message of a TCP or Unix stream connection
    /// ([`ServerBuilder::framing`](crate::ServerBuilder::framing)): `rfile`
    /// reads that one message, and what is written to `wfile` goes back on
    /// the connection, framed. A request's kind only: no transport has it.
    Message,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Datagram => "datagram",
            Kind::Message => "message",
        }
    }
}

/// A kind of socket a [`Server`](crate::Server) can serve on:
/// [`TcpTransport`], [`UdpTransport`], [`UnixStreamTransport`] or
/// [`UnixDatagramTransport`]. Sealed: the crate's own four are all there
/// is. Named with a `Transport` suffix so they never shadow std's socket
/// types; most code names the servers instead ([`TcpServer`](crate::TcpServer), ...).
pub trait Transport: private::Setup + Send + Sync + 'static {
    /// Whether requests are connections or datagrams.
    const KIND: Kind;
    /// The address family, which decides what `bind` accepts.
    type Family: Family;
}

/// The transport of an [`AnyServer`](crate::AnyServer)'s builder: chosen
/// by the [`Endpoint`](crate::Endpoint) it binds, at run time.
#[derive(Debug)]
pub enum AnyTransport {}

/// Address families: [`Inet`] for TCP and UDP, [`Unix`] for Unix sockets.
pub trait Family: private::Sealed {
    /// Whether this is the IP family.
    #[doc(hidden)]
    const INET: bool;
}

/// IPv4 and IPv6: servers bind anything that is [`ToSocketAddrs`](std::net::ToSocketAddrs).
#[derive(Debug)]
pub enum Inet {}
/// Unix sockets: servers bind a path, or an [`Address`] (abstract names on Linux).
#[derive(Debug)]
pub enum Unix {}

impl private::Sealed for Inet {}
impl private::Sealed for Unix {}
impl Family for Inet {
    const INET: bool = true;
}
impl Family for Unix {
    const INET: bool = false;
}

/// Anything a server of family `F` can be bound to.
///
/// ```
/// # use socketserver::{TcpServer, UnixStreamServer, Request};
/// # let h = |_: &mut Request<'_>| Ok(());
/// let tcp = TcpServer::bind(("127.0.0.1", 0), h)?;
/// let dir = std::env::temp_dir().join(format!("doc-{}.sock", std::process::id()));
/// let unix = UnixStreamServer::bind(&dir, h)?;
/// # Ok::<(), socketserver::Error>(())
/// ```
pub trait BindAddress<F: Family> {
    /// The candidate addresses, tried in order until one binds.
    ///
    /// # Errors
    ///
    /// `Error::Resolve` if the address names no usable address.
    fn resolve(&self) -> Result<Vec<Address>>;
}

impl<A: std::net::ToSocketAddrs + std::fmt::Debug + ?Sized> BindAddress<Inet> for A {
    fn resolve(&self) -> Result<Vec<Address>> {
        let resolve_error = |source| Error::Resolve { addr: format!("{self:?}"), source };
        let addrs: Vec<Address> = self.to_socket_addrs().map_err(resolve_error)?.map(Address::Inet).collect();
        if addrs.is_empty() {
            let none = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found");
            return Err(resolve_error(none));
        }
        Ok(addrs)
    }
}

impl<P: AsRef<std::path::Path> + ?Sized> BindAddress<Unix> for P {
    fn resolve(&self) -> Result<Vec<Address>> {
        Ok(vec![Address::Path(self.as_ref().to_path_buf())])
    }
}

impl BindAddress<Unix> for Address {
    fn resolve(&self) -> Result<Vec<Address>> {
        Ok(vec![self.clone()])
    }
}

pub(crate) mod private {
    use std::io;

    use socket2::Socket;

    use crate::options::Options;
    use crate::{Address, Result};

    pub trait Sealed {}

    /// The transport-specific steps of setting up a server socket.
    pub trait Setup {
        /// Creates the socket and sets what must be set before bind.
        fn open_socket(addr: &Address, opts: &Options) -> io::Result<Socket>;
        /// Binds; Unix transports reclaim a stale socket file and return it
        /// so the server can remove it on close.
        fn bind_socket(socket: &Socket, addr: &Address) -> Result<Option<super::SocketFile>>;
        /// Prepares an accepted connection (stream transports only).
        fn prepare_accepted(_conn: &Socket, _opts: &Options) -> io::Result<()> {
            Ok(())
        }
    }
}

/// Creates the socket for `addr`, with the options that must be set before bind.
pub(crate) fn open<T: Transport>(addr: &Address, options: &Options) -> Result<Socket> {
    T::open_socket(addr, options).map_err(|source| Error::Bind {
        action: "create a socket for",
        addr: addr.clone(),
        source,
    })
}

/// Creates, binds and activates a server socket (Python's constructor with
/// `bind_and_activate=True`).
pub(crate) fn open_bound<T: Transport>(addr: &Address, options: &Options) -> Result<(Socket, Option<SocketFile>)> {
    let socket = open::<T>(addr, options)?;
    let file = bind::<T>(&socket, addr, options)?;
    activate(&socket, T::KIND, options).map_err(|source| Error::Bind {
        action: "listen on",
        addr: addr.clone(),
        source,
    })?;
    Ok((socket, file))
}

/// Python's `server_bind`, plus the socket file's mode when one is asked for.
pub(crate) fn bind<T: Transport>(socket: &Socket, addr: &Address, options: &Options) -> Result<Option<SocketFile>> {
    let file = T::bind_socket(socket, addr)?;
    if let (Some(mode), Some(path)) = (options.socket_mode, addr.as_path()) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| Error::Bind {
            action: "set the mode of",
            addr: addr.clone(),
            source,
        })?;
    }
    if let (Some(ids), Some(path)) = (options.socket_owner, addr.as_path()) {
        std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid)).map_err(|source| Error::Bind {
            action: "set the owner of",
            addr: addr.clone(),
            source,
        })?;
    }
    Ok(file)
}

/// Python's `server_activate`: stream sockets listen. Both kinds become
/// non-blocking, so a request that vanishes between poll and accept or
/// receive cannot block the loop.
pub(crate) fn activate(socket: &Socket, kind: Kind, options: &Options) -> std::io::Result<()> {
    if kind == Kind::Stream {
        socket.listen(options.backlog())?;
    }
    socket.set_nonblocking(true)
}

/// Takes the socket a supervisor or launcher handed this process as fd
/// `fd` (say by `prime serve tcp fd:3`), for
/// [`ServerBuilder::from_fd`](crate::ServerBuilder::from_fd).
///
/// The fd must have been inherited at exec for this purpose, with nothing
/// else in the process using it: the process takes ownership (it is closed
/// when the server is). Each number is given out at most once.
///
/// # Errors
///
/// [`Error::Inherited`] if fd `fd` is not open, or was taken before.
pub fn take_inherited_fd(fd: i32) -> Result<std::os::fd::OwnedFd> {
    crate::sys::take_inherited(fd)
        .ok_or_else(|| Error::Inherited { fd, problem: "not open, or already taken by this process".into() })
}

/// Checks that an inherited socket is what transport `T` serves: its type
/// (stream or datagram), its address family, and for streams that it
/// listens. Returns its address. Every mismatch is an [`Error::Inherited`]
/// naming the fd.
pub(crate) fn check_inherited<T: Transport>(socket: &Socket, fd: i32) -> Result<Address> {
    let problem = |problem: String| Error::Inherited { fd, problem };
    let kind = match socket.r#type() {
        Ok(ty) if ty == socket2::Type::STREAM => Kind::Stream,
        Ok(ty) if ty == socket2::Type::DGRAM => Kind::Datagram,
        Ok(_) => return Err(problem("a socket of a type no server serves".into())),
        Err(e) => return Err(problem(format!("not a socket ({e})"))),
    };
    if kind != T::KIND {
        return Err(problem(format!("a {} socket, not the {} socket this server serves", kind.name(), T::KIND.name())));
    }
    let local = socket.local_addr().map_err(|e| problem(format!("no local address ({e})")))?;
    let inet = matches!(local.family() as i32, libc::AF_INET | libc::AF_INET6);
    if inet != T::Family::INET {
        let (is, wants) = if inet { ("an IP", "a Unix") } else { ("a Unix", "an IP") };
        return Err(problem(format!("{is} socket, not {wants} socket")));
    }
    if kind == Kind::Stream && crate::sys::is_listening(socket) == Some(false) {
        return Err(problem("a stream socket that is not listening (call listen before handing it over)".into()));
    }
    Ok(Address::from_sock_addr(&local))
}
