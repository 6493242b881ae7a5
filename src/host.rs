//! Host lookups for a server that listens beyond loopback: Python's
//! `os.uname().nodename`, `socket.gethostbyname_ex` and `gethostbyaddr`,
//! over getaddrinfo/getnameinfo, IPv4 and IPv6 alike.

use std::net::IpAddr;

use crate::{Error, Result, sys};

/// What the resolver knows of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostInfo {
    /// The canonical name.
    pub name: String,
    /// Other names for the host: the name asked for, when it was not the canonical one.
    pub aliases: Vec<String>,
    /// Its IPv4 and IPv6 addresses, in the resolver's order.
    pub addresses: Vec<IpAddr>,
}

/// The machine's host name (Python's `os.uname().nodename`, `uname -n`).
///
/// ```
/// let name = socketserver::host::hostname()?;
/// assert!(!name.is_empty());
/// # Ok::<(), socketserver::Error>(())
/// ```
///
/// # Errors
///
/// `Error::Lookup` if the system gives no name.
pub fn hostname() -> Result<String> {
    sys::nodename().map_err(|e| Error::Lookup { query: "this host's name".into(), message: e.to_string() })
}

/// Forward lookup (Python's `gethostbyname_ex`, but with IPv6 too).
///
/// ```
/// let localhost = socketserver::host::lookup_host("localhost")?;
/// assert!(localhost.addresses.iter().any(|ip| ip.is_loopback()));
/// # Ok::<(), socketserver::Error>(())
/// ```
///
/// # Errors
///
/// `Error::Lookup` with the resolver's message if `name` does not resolve.
pub fn lookup_host(name: &str) -> Result<HostInfo> {
    let (canonical, addresses) =
        sys::resolve(name).map_err(|message| Error::Lookup { query: name.to_string(), message })?;
    let canonical = canonical.unwrap_or_else(|| name.to_string());
    let aliases = if canonical == name { Vec::new() } else { vec![name.to_string()] };
    Ok(HostInfo { name: canonical, aliases, addresses })
}

/// Reverse lookup (Python's `gethostbyaddr`): the name of `ip`, with the
/// addresses that name resolves to (`ip` itself at least).
///
/// # Errors
///
/// `Error::Lookup` with the resolver's message if `ip` has no name.
pub fn lookup_addr(ip: IpAddr) -> Result<HostInfo> {
    let name = sys::reverse(ip).map_err(|message| Error::Lookup { query: ip.to_string(), message })?;
    let mut addresses = sys::resolve(&name).map(|(_, found)| found).unwrap_or_default();
    if !addresses.contains(&ip) {
        addresses.insert(0, ip);
    }
    Ok(HostInfo { name, aliases: Vec::new(), addresses })
}

/// Every address this host resolves its own name to (what a server listening
/// "beyond loopback" can be reached at), or the error saying why not.
///
/// # Errors
///
/// `Error::Lookup` if this host's own name does not resolve.
pub fn host_addresses() -> Result<Vec<IpAddr>> {
    lookup_host(&hostname()?).map(|info| info.addresses)
}
