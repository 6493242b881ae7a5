//! TCP and UDP over IPv4 and IPv6.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, SockAddr, Socket, Type};

use super::private::{Sealed, Setup};
use super::{Inet, SocketFile, Transport};
use crate::options::Options;
use crate::transport::Kind;
use crate::{Address, Error, Result};

/// TCP: each request is one accepted connection.
#[derive(Debug)]
pub enum TcpTransport {}

/// UDP: each request is one datagram; the reply goes back to its sender.
#[derive(Debug)]
pub enum UdpTransport {}

impl Transport for TcpTransport {
    const KIND: Kind = Kind::Stream;
    type Family = Inet;
}

impl Transport for UdpTransport {
    const KIND: Kind = Kind::Datagram;
    type Family = Inet;
}

impl Sealed for TcpTransport {}
impl Sealed for UdpTransport {}

impl Setup for TcpTransport {
    fn open_socket(addr: &Address, opts: &Options) -> io::Result<Socket> {
        open_inet(addr, Type::STREAM, Kind::Stream, opts)
    }

    fn bind_socket(socket: &Socket, addr: &Address) -> Result<Option<SocketFile>> {
        bind_inet(socket, addr)
    }

    fn prepare_accepted(conn: &Socket, opts: &Options) -> io::Result<()> {
        if opts.disable_nagle_algorithm {
            conn.set_tcp_nodelay(true)?;
        }
        Ok(())
    }
}

impl Setup for UdpTransport {
    fn open_socket(addr: &Address, opts: &Options) -> io::Result<Socket> {
        open_inet(addr, Type::DGRAM, Kind::Datagram, opts)
    }

    fn bind_socket(socket: &Socket, addr: &Address) -> Result<Option<SocketFile>> {
        bind_inet(socket, addr)
    }
}

fn inet(addr: &Address) -> io::Result<SocketAddr> {
    addr.as_inet().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP address"))
}

fn open_inet(addr: &Address, ty: Type, kind: Kind, opts: &Options) -> io::Result<Socket> {
    let inet = inet(addr)?;
    let socket = Socket::new(Domain::for_address(inet), ty, None)?;
    // SO_REUSEADDR by default on stream sockets only (Python's
    // `allow_reuse_address`): on a datagram socket it would let a second
    // server share the port.
    socket.set_reuse_address(opts.allow_reuse_address.unwrap_or(kind == Kind::Stream))?;
    if opts.allow_reuse_port {
        socket.set_reuse_port(true)?;
    }
    if inet.is_ipv6() {
        // Set explicitly, and before bind: the OS default differs across
        // systems, and after bind the option is ignored.
        socket.set_only_v6(!opts.dual_stack)?;
    }
    Ok(socket)
}

fn bind_inet(socket: &Socket, addr: &Address) -> Result<Option<SocketFile>> {
    let target = inet(addr).map(SockAddr::from);
    target.and_then(|target| socket.bind(&target)).map_err(|source| Error::Bind {
        action: "bind",
        addr: addr.clone(),
        source,
    })?;
    Ok(None)
}
