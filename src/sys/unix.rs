//! Send paths and Unix sockets: sendfile, and fds and credentials passed beside
//! the bytes (SCM_RIGHTS, SCM_CREDENTIALS, SO_PEERCRED).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::sockets::NO_SIGNAL;

#[cfg(any(target_os = "linux", target_os = "android"))]
use socket2::SockAddr;
use socket2::Socket;

/// sendfile(2): up to `count` bytes of `file` from `*offset` to the stream
/// socket, advancing `*offset`. Returns the bytes sent (0 at end of file).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn sendfile(socket: &Socket, file: &std::fs::File, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: both fds are open for the call (borrowed); `off` is a valid,
        // exclusively borrowed off_t the kernel updates.
        let sent = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
        if sent >= 0 {
            *offset = off as u64;
            return Ok(sent as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Room for the control messages of one receive: credentials and up to 64 fds.
#[cfg(any(target_os = "linux", target_os = "android"))]
const CONTROL_SPACE: usize = 512;

/// A peer process's (pid, uid, gid).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) type Ids = (i32, u32, u32);

/// recvmsg(2) into `buf`, collecting passed fds (close-on-exec) into `fds`
/// and the sender's credentials into `credentials`. Returns the length,
/// whether the datagram was truncated, and the sender's address.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn recv_with_ancillary(
    socket: &Socket,
    buf: &mut [u8],
    fds: &mut Vec<std::os::fd::OwnedFd>,
    credentials: &mut Option<Ids>,
) -> io::Result<(usize, bool, SockAddr)> {
    use std::os::fd::{FromRawFd, OwnedFd};

    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; CONTROL_SPACE / 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: all-zero bytes are a valid msghdr (no name, iovecs or control).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_name = (&raw mut from).cast();
    header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = CONTROL_SPACE as _;
    let received = loop {
        // SAFETY: the header points at `from`, `iov` (into `buf`) and
        // `control`, all alive, exclusively borrowed and sized as declared.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel just
    // filled, within msg_controllen; each message's data holds what its
    // level and type say: c_int fds for SCM_RIGHTS (each a new fd we now
    // own), a ucred for SCM_CREDENTIALS.
    unsafe {
        let mut message = libc::CMSG_FIRSTHDR(&header);
        while !message.is_null() {
            let data = libc::CMSG_DATA(message);
            let data_len = (*message).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
            match ((*message).cmsg_level, (*message).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..data_len / std::mem::size_of::<libc::c_int>() {
                        let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if data_len >= std::mem::size_of::<libc::ucred>() => {
                    let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                    *credentials = Some((cred.pid, cred.uid, cred.gid));
                }
                _ => {}
            }
            message = libc::CMSG_NXTHDR(&header, message);
        }
    }
    if header.msg_flags & libc::MSG_CTRUNC != 0 {
        log::warn!("control data cut short: more than 64 fds were passed at once; the rest were closed");
    }
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: the kernel wrote msg_namelen valid bytes of a sockaddr into
    // `from`; socket2's storage is repr(transparent) over sockaddr_storage.
    let sender = unsafe {
        *storage.view_as::<libc::sockaddr_storage>() = from;
        SockAddr::new(storage, header.msg_namelen)
    };
    Ok((received, header.msg_flags & libc::MSG_TRUNC != 0, sender))
}

/// The credentials of the process at the other end of a connected Unix
/// stream socket (SO_PEERCRED).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_credentials(socket: &Socket) -> io::Result<Ids> {
    // SAFETY: all-zero bytes are a valid ucred.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid and exclusively borrowed; the kernel
    // writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid, cred.gid))
}

/// sendmsg(2) of `data` with `fds` attached (SCM_RIGHTS) on a connected
/// Unix socket. Returns the bytes of `data` sent.
pub(crate) fn send_with_fds(socket: &Socket, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let raw: Vec<libc::c_int> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(payload as libc::c_uint) } as usize;
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: all-zero bytes are a valid msghdr (no name, iovecs or control).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    // SAFETY: the control buffer holds CMSG_SPACE(payload) zeroed, aligned
    // bytes, so CMSG_FIRSTHDR is non-null and its data area has room for
    // `payload` bytes; `iov` points at `data`, which the kernel only reads.
    unsafe {
        let message = libc::CMSG_FIRSTHDR(&header);
        (*message).cmsg_level = libc::SOL_SOCKET;
        (*message).cmsg_type = libc::SCM_RIGHTS;
        (*message).cmsg_len = libc::CMSG_LEN(payload as libc::c_uint) as _;
        std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(message), payload);
    }
    loop {
        // SAFETY: the header points at `iov` and `control`, alive for the call.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, NO_SIGNAL) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
