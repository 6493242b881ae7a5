//! Unix stream and datagram sockets: path-bound, or abstract names on Linux.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::private::{Sealed, Setup};
use super::{Transport, Unix};
use crate::options::Options;
use crate::transport::Kind;
use crate::{Address, Error, Result};

/// Unix stream sockets: each request is one accepted connection.
#[derive(Debug)]
pub enum UnixStreamTransport {}

/// Unix datagram sockets: each request is one datagram. Replies can only
/// reach clients that bound their own socket to a name.
#[derive(Debug)]
pub enum UnixDatagramTransport {}

impl Transport for UnixStreamTransport {
    const KIND: Kind = Kind::Stream;
    type Family = Unix;
}

impl Transport for UnixDatagramTransport {
    const KIND: Kind = Kind::Datagram;
    type Family = Unix;
}

impl Sealed for UnixStreamTransport {}
impl Sealed for UnixDatagramTransport {}

impl Setup for UnixStreamTransport {
    fn open_socket(_addr: &Address, _opts: &Options) -> io::Result<Socket> {
        Socket::new(Domain::UNIX, Type::STREAM, None)
    }

    fn bind_socket(socket: &Socket, addr: &Address) -> Result<Option<SocketFile>> {
        bind_unix(socket, addr, Type::STREAM)
    }
}

impl Setup for UnixDatagramTransport {
    fn open_socket(_addr: &Address, _opts: &Options) -> io::Result<Socket> {
        let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
        // Have the kernel attach each sender's credentials (Request::peer_credentials).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        socket.set_passcred(true)?;
        Ok(socket)
    }

    fn bind_socket(socket: &Socket, addr: &Address) -> Result<Option<SocketFile>> {
        bind_unix(socket, addr, Type::DGRAM)
    }
}

fn bind_unix(socket: &Socket, addr: &Address, ty: Type) -> Result<Option<SocketFile>> {
    let bind_error = |source| Error::Bind { action: "bind", addr: addr.clone(), source };
    let target = addr.to_sock_addr().map_err(bind_error)?;
    match (socket.bind(&target), addr) {
        (Ok(()), _) => {}
        (Err(e), Address::Path(path)) if e.kind() == io::ErrorKind::AddrInUse => {
            reclaim_stale(path, ty)?;
            socket.bind(&target).map_err(bind_error)?;
        }
        (Err(e), _) => return Err(bind_error(e)),
    }
    Ok(addr.as_path().and_then(SocketFile::record))
}

/// Removes the socket file at `path` if nobody listens on it. A live socket
/// or anything that is not a socket is left alone and reported.
fn reclaim_stale(path: &Path, ty: Type) -> Result<()> {
    let fail = |action, source| Error::Bind { action, addr: Address::Path(path.to_path_buf()), source };
    let in_use = |reason| Error::PathInUse { path: path.to_path_buf(), reason };
    let before = fs::symlink_metadata(path).map_err(|e| fail("inspect", e))?;
    if !before.file_type().is_socket() {
        return Err(in_use("it exists and is not a socket"));
    }
    let probe = Socket::new(Domain::UNIX, ty, None).map_err(|e| fail("probe", e))?;
    // Non-blocking, so a live listener with a full backlog answers at once.
    probe.set_nonblocking(true).map_err(|e| fail("probe", e))?;
    let target = SockAddr::unix(path).map_err(|e| fail("probe", e))?;
    match probe.connect(&target) {
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            return Err(in_use("a server of another socket type is listening there"));
        }
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(fail("probe", e)),
        _ => return Err(in_use("a server is listening there")),
    }
    // Remove only the file that was probed: a file that replaced it since may be live.
    let now = fs::symlink_metadata(path).map_err(|e| fail("inspect", e))?;
    if (now.dev(), now.ino()) != (before.dev(), before.ino()) {
        return Err(in_use("it was replaced while being checked"));
    }
    log::info!("removing stale socket file {}", path.display());
    fs::remove_file(path).map_err(|e| fail("remove stale socket file", e))
}

/// The socket file a server created. Dropping it removes the file, unless it
/// has been replaced by another one since.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    /// Leaves the file in place: another process serves on it now.
    pub(crate) fn disown(self) {
        std::mem::forget(self);
    }

    fn record(path: &Path) -> Option<SocketFile> {
        let meta = fs::symlink_metadata(path).ok()?;
        Some(SocketFile { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            log::warn!("cannot remove socket file {}: {e}", self.path.display());
        }
    }
}
