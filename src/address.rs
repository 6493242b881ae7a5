//! Socket addresses of servers and their clients, over every transport.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use socket2::SockAddr;

/// The address of a server or of one of its clients.
///
/// One type for every transport, so a handler can log or compare addresses
/// without knowing whether it runs over TCP, UDP or a Unix socket.
///
/// ```
/// use socketserver::Address;
/// let a = Address::from("127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(a.to_string(), "127.0.0.1:8080");
/// assert_eq!(Address::Unnamed.to_string(), "(unnamed)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// An IPv4 or IPv6 address with its port (TCP and UDP).
    Inet(SocketAddr),
    /// A Unix socket bound to a path in the file system.
    Path(PathBuf),
    /// A Linux abstract-namespace Unix socket name (without the leading NUL byte).
    Abstract(Vec<u8>),
    /// A Unix socket that never bound a name, such as a client that only
    /// connected. Datagrams from it cannot be answered.
    Unnamed,
}

impl Address {
    /// The inet address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            _ => None,
        }
    }

    /// The file-system path, if this is a path-bound Unix address.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Address::Path(p) => Some(p),
            _ => None,
        }
    }

    /// Whether this is any kind of Unix-domain address.
    pub fn is_unix(&self) -> bool {
        !matches!(self, Address::Inet(_))
    }

    pub(crate) fn from_sock_addr(addr: &SockAddr) -> Address {
        if let Some(inet) = addr.as_socket() {
            Address::Inet(inet)
        } else if let Some(path) = addr.as_pathname() {
            Address::Path(path.to_path_buf())
        } else if let Some(name) = addr.as_abstract_namespace() {
            Address::Abstract(name.to_vec())
        } else {
            Address::Unnamed
        }
    }

    pub(crate) fn to_sock_addr(&self) -> std::io::Result<SockAddr> {
        match self {
            Address::Inet(a) => Ok(SockAddr::from(*a)),
            Address::Path(p) => SockAddr::unix(p),
            Address::Abstract(name) => abstract_sock_addr(name),
            Address::Unnamed => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an unnamed Unix socket has no address to send to",
            )),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_sock_addr(name: &[u8]) -> std::io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    // socket2 reads a path that starts with NUL as an abstract name.
    let mut raw = Vec::with_capacity(name.len() + 1);
    raw.push(0);
    raw.extend_from_slice(name);
    SockAddr::unix(Path::new(std::ffi::OsStr::from_bytes(&raw)))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_sock_addr(_name: &[u8]) -> std::io::Result<SockAddr> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract Unix socket names exist only on Linux"))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => a.fmt(f),
            Address::Path(p) => p.display().fmt(f),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Address::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Inet(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Self {
        Address::Path(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Self {
        Address::Path(p.to_path_buf())
    }
}
