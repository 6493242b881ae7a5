//! The load generator's batched datagram calls (sendmmsg/recvmmsg): the only
//! unsafe code of the bench, each block with its SAFETY note.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Sends every datagram of `payloads` on the connected `socket`, in as few
/// `sendmmsg` calls as it takes.
pub fn send_all(socket: &UdpSocket, payloads: &[&[u8]]) -> io::Result<()> {
    let mut iovecs: Vec<libc::iovec> =
        payloads.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut _, iov_len: p.len() }).collect();
    // SAFETY: all-zero bytes are a valid mmsghdr.
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; payloads.len()];
    for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    let mut next = 0;
    while next < headers.len() {
        // SAFETY: the headers point at iovecs that point into `payloads`,
        // all alive and unmoved for the duration of the call.
        let sent = unsafe {
            libc::sendmmsg(socket.as_raw_fd(), headers[next..].as_mut_ptr(), (headers.len() - next) as u32, 0)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        next += sent as usize;
    }
    Ok(())
}

/// Receives up to `buffers.len()` datagrams, waiting (up to the socket's read
/// timeout) only for the first. Returns each one's length, in order.
pub fn recv_some(socket: &UdpSocket, buffers: &mut [Vec<u8>], lengths: &mut Vec<usize>) -> io::Result<()> {
    let mut iovecs: Vec<libc::iovec> =
        buffers.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
    // SAFETY: all-zero bytes are a valid mmsghdr.
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; buffers.len()];
    for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the headers point at iovecs that point into `buffers`, all
    // alive, exclusively borrowed and unmoved for the duration of the call.
    let got = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    lengths.clear();
    lengths.extend(headers[..got as usize].iter().map(|h| h.msg_len as usize));
    Ok(())
}
