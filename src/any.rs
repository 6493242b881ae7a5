//! Choosing the transport at run time: an [`Endpoint`] parsed from a string
//! such as `tcp://127.0.0.1:9000`, and an [`AnyServer`] that is any of the
//! four servers with the same handler.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;

use crate::builder::ServerBuilder;
use crate::shutdown::ShutdownHandle;
use crate::stats::{Stats, StatsHandle};
use crate::transport::AnyTransport;
use crate::transport::Kind;
use crate::{Address, Error, RequestHandler, Result, TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};

/// Where to serve, with the transport named: what a configuration file or a
/// command line gives.
///
/// | string | transport |
/// |---|---|
/// | `tcp://HOST:PORT` | TCP (`HOST` may be a name, `[::]` for IPv6) |
/// | `udp://HOST:PORT` | UDP |
/// | `unix:PATH` (or `unix-stream:PATH`) | Unix stream socket at `PATH` |
/// | `unix-datagram:PATH` | Unix datagram socket at `PATH` |
///
/// `//` after the colon is optional (`tcp:HOST:PORT` works too). A Unix
/// `PATH` that starts with `@` is a Linux abstract name.
///
/// ```
/// use socketserver::Endpoint;
/// let endpoint: Endpoint = "unix-datagram:/run/app.sock".parse()?;
/// assert_eq!(endpoint.to_string(), "unix-datagram:/run/app.sock");
/// assert!("sctp://[::1]:9".parse::<Endpoint>().is_err());
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// TCP on `HOST:PORT`, resolved when the server binds.
    Tcp(String),
    /// UDP on `HOST:PORT`, resolved when the server binds.
    Udp(String),
    /// A Unix stream socket.
    UnixStream(Address),
    /// A Unix datagram socket.
    UnixDatagram(Address),
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(given: &str) -> Result<Endpoint> {
        let invalid = |problem| Error::Endpoint { given: given.to_string(), problem };
        let (scheme, rest) = given.split_once(':').ok_or_else(|| invalid("expected SCHEME:ADDRESS"))?;
        let address = rest.strip_prefix("//").unwrap_or(rest);
        if address.is_empty() {
            return Err(invalid("no address after the scheme"));
        }
        let inet = |make: fn(String) -> Endpoint| {
            let Some((host, port)) = address.rsplit_once(':') else {
                return Err(invalid("expected HOST:PORT, with a port from 0 to 65535"));
            };
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
                return Err(invalid("expected HOST:PORT, with a port from 0 to 65535"));
            }
            if let Some(problem) = host_problem(host) {
                return Err(invalid(problem));
            }
            Ok(make(address.to_string()))
        };
        let unix = || match address.strip_prefix('@') {
            Some(name) => Address::Abstract(name.as_bytes().to_vec()),
            None => Address::Path(PathBuf::from(address)),
        };
        match scheme {
            "tcp" => inet(Endpoint::Tcp),
            "udp" => inet(Endpoint::Udp),
            "unix" | "unix-stream" => Ok(Endpoint::UnixStream(unix())),
            "unix-datagram" => Ok(Endpoint::UnixDatagram(unix())),
            _ => Err(invalid("unknown scheme; expected one of tcp, udp, unix, unix-stream, unix-datagram")),
        }
    }
}

/// What is wrong with the HOST of `HOST:PORT`, if anything: an IPv6
/// address goes in brackets (`[::1]`, `[fe80::1%eth0]`), anything else is
/// an IPv4 address or a host name.
fn host_problem(host: &str) -> Option<&'static str> {
    if let Some(inside) = host.strip_prefix('[') {
        let Some(inside) = inside.strip_suffix(']') else { return Some("an IPv6 address needs its closing ']'") };
        let ip = inside.split_once('%').map_or(inside, |(ip, _scope)| ip);
        return ip.parse::<std::net::Ipv6Addr>().is_err().then_some("not an IPv6 address between '[' and ']'");
    }
    if host.is_empty() {
        return Some("expected HOST:PORT, with a host before the ':'");
    }
    if host.contains(':') {
        return Some("an IPv6 address goes in brackets: [ADDRESS]:PORT");
    }
    let name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    (!host.bytes().all(name)).then_some("not a host name or address")
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A path that starts with `//` keeps a `//` before it, which parsing
        // takes off again: what is written parses back to the same endpoint.
        let unix = |f: &mut fmt::Formatter<'_>, scheme: &str, addr: &Address| {
            let addr = addr.to_string();
            let slashes = if addr.starts_with("//") { "//" } else { "" };
            write!(f, "{scheme}:{slashes}{addr}")
        };
        match self {
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
            Endpoint::Udp(addr) => write!(f, "udp://{addr}"),
            Endpoint::UnixStream(addr) => unix(f, "unix", addr),
            Endpoint::UnixDatagram(addr) => unix(f, "unix-datagram", addr),
        }
    }
}

impl Endpoint {
    /// The endpoint a server of `kind` bound to `address` listens on.
    pub(crate) fn of(kind: Kind, address: &Address) -> Endpoint {
        match (kind, address.as_inet()) {
            // A framed message comes over a stream connection.
            (Kind::Stream | Kind::Message, Some(inet)) => Endpoint::Tcp(inet.to_string()),
            (Kind::Datagram, Some(inet)) => Endpoint::Udp(inet.to_string()),
            (Kind::Stream | Kind::Message, None) => Endpoint::UnixStream(address.clone()),
            (Kind::Datagram, None) => Endpoint::UnixDatagram(address.clone()),
        }
    }

    /// Whether requests on this endpoint are connections or datagrams.
    pub fn kind(&self) -> Kind {
        match self {
            Endpoint::Tcp(_) | Endpoint::UnixStream(_) => Kind::Stream,
            Endpoint::Udp(_) | Endpoint::UnixDatagram(_) => Kind::Datagram,
        }
    }
}

/// A server on a transport chosen at run time: one of the four, serving the
/// same handler. Made by [`AnyServer::bind`] or [`AnyServer::builder`]
/// from an [`Endpoint`]; it has the lifecycle methods every server has. The
/// generic [`TcpServer`] and friends stay the way to name a transport in code.
///
/// ```
/// use std::io::Write;
/// use socketserver::{AnyServer, Request};
///
/// let from_config = "tcp://127.0.0.1:0";
/// let mut server = AnyServer::bind(&from_config.parse()?, |req: &mut Request<'_>| req.wfile.write_all(b"hi\n"))?;
/// println!("listening on {}", server.server_address());
/// # let stop = server.shutdown_handle();
/// # stop.request_shutdown();
/// server.serve_forever()?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyServer<H: RequestHandler> {
    /// A TCP server.
    Tcp(TcpServer<H>),
    /// A UDP server.
    Udp(UdpServer<H>),
    /// A Unix stream server.
    UnixStream(UnixStreamServer<H>),
    /// A Unix datagram server.
    UnixDatagram(UnixDatagramServer<H>),
}

/// Calls the same method on whichever server this is.
macro_rules! each {
    ($server:expr, $s:ident => $call:expr) => {
        match $server {
            AnyServer::Tcp($s) => $call,
            AnyServer::Udp($s) => $call,
            AnyServer::UnixStream($s) => $call,
            AnyServer::UnixDatagram($s) => $call,
        }
    };
}

impl<H: RequestHandler> AnyServer<H> {
    /// Binds `endpoint` with default settings.
    ///
    /// # Errors
    ///
    /// As for [`Server::bind`](crate::Server::bind) on the chosen transport.
    pub fn bind(endpoint: &Endpoint, handler: H) -> Result<Self> {
        Self::builder(handler).bind(endpoint)
    }

    /// Starts configuring a server whose transport the endpoint given to
    /// [`bind`](ServerBuilder::bind) will choose. Every setting applies; those
    /// that concern another kind of socket are ignored, as on any server.
    pub fn builder(handler: H) -> ServerBuilder<AnyTransport, H> {
        ServerBuilder::new(handler)
    }

    /// Where the server listens, as an endpoint clients can be told:
    /// `tcp://127.0.0.1:PORT` with the port the OS chose for port 0.
    /// Its text parses back to the same endpoint.
    ///
    /// ```
    /// use socketserver::{AnyServer, Endpoint, Request};
    ///
    /// let server = AnyServer::bind(&"tcp://127.0.0.1:0".parse()?, |_: &mut Request<'_>| Ok(()))?;
    /// let endpoint = server.endpoint();
    /// assert!(endpoint.to_string().starts_with("tcp://127.0.0.1:"));
    /// assert_eq!(endpoint.to_string().parse::<Endpoint>()?, endpoint);
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::of(self.kind(), self.server_address())
    }

    /// Whether requests are connections or datagrams.
    pub fn kind(&self) -> Kind {
        match self {
            AnyServer::Tcp(_) | AnyServer::UnixStream(_) => Kind::Stream,
            AnyServer::Udp(_) | AnyServer::UnixDatagram(_) => Kind::Datagram,
        }
    }

    /// See [`Server::server_address`](crate::Server::server_address).
    pub fn server_address(&self) -> &Address {
        each!(self, s => s.server_address())
    }

    /// See [`Server::shutdown_handle`](crate::Server::shutdown_handle).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        each!(self, s => s.shutdown_handle())
    }

    /// See [`Server::serve_forever`](crate::Server::serve_forever).
    ///
    /// # Errors
    ///
    /// As for [`Server::serve_forever`](crate::Server::serve_forever).
    pub fn serve_forever(&mut self) -> Result<()> {
        each!(self, s => s.serve_forever())
    }

    /// See [`Server::handle_request`](crate::Server::handle_request).
    ///
    /// # Errors
    ///
    /// As for [`Server::serve_forever`](crate::Server::serve_forever).
    pub fn handle_request(&mut self) -> Result<()> {
        each!(self, s => s.handle_request())
    }

    /// See [`Server::active_count`](crate::Server::active_count).
    pub fn active_count(&self) -> usize {
        each!(self, s => s.active_count())
    }

    /// See [`Server::stats`](crate::Server::stats).
    pub fn stats(&self) -> Stats {
        each!(self, s => s.stats())
    }

    /// See [`Server::stats_handle`](crate::Server::stats_handle).
    pub fn stats_handle(&self) -> StatsHandle {
        each!(self, s => s.stats_handle())
    }

    /// See [`Server::listener_copy`](crate::Server::listener_copy).
    ///
    /// # Errors
    ///
    /// As for [`Server::listener_copy`](crate::Server::listener_copy).
    #[cfg(feature = "systemd")]
    pub fn listener_copy(&self) -> Result<crate::systemd::ListenerCopy> {
        each!(self, s => s.listener_copy())
    }

    /// See [`Server::server_close`](crate::Server::server_close).
    pub fn server_close(self) -> Stats {
        each!(self, s => s.server_close())
    }
}

impl<H: RequestHandler> AsFd for AnyServer<H> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        each!(self, s => s.as_fd())
    }
}

impl<H: RequestHandler> AsRawFd for AnyServer<H> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_back() {
        for (given, printed) in [
            ("tcp://127.0.0.1:9000", "tcp://127.0.0.1:9000"),
            ("tcp:localhost:0", "tcp://localhost:0"),
            ("udp://[::1]:53", "udp://[::1]:53"),
            ("unix:/run/a.sock", "unix:/run/a.sock"),
            ("unix-stream:///run/a.sock", "unix:/run/a.sock"),
            ("unix-datagram:rel.sock", "unix-datagram:rel.sock"),
            ("unix:@name", "unix:@name"),
        ] {
            let endpoint: Endpoint = given.parse().unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(endpoint.to_string(), printed, "{given}");
            assert_eq!(printed.parse::<Endpoint>().unwrap(), endpoint, "{printed} round trip");
        }
    }

    #[test]
    fn bad_endpoints_are_refused_naming_what_was_given() {
        for given in ["", "127.0.0.1:80", "tcp://", "tcp://localhost", "tcp://:80", "udp://host:99999", "sctp://h:1"] {
            let error = given.parse::<Endpoint>().expect_err(given).to_string();
            assert!(error.contains(&format!("{given:?}")), "{error}");
        }
        assert!("sctp://h:1".parse::<Endpoint>().unwrap_err().to_string().contains("tcp, udp, unix"));
    }
}
