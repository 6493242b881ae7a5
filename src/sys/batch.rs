//! Batched datagrams: one `recvmmsg(2)` and one `sendmmsg(2)` per batch on
//! Linux, the same batch one datagram at a time elsewhere.

use std::io;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::os::fd::AsRawFd;

use socket2::{SockAddr, Socket};

#[cfg(not(any(target_os = "linux", target_os = "android")))]
use super::sockets::{NO_SIGNAL, recv_datagram};

/// Buffers to receive up to `n` datagrams with one `recvmmsg(2)` and send
/// their replies with one `sendmmsg(2)` (Linux). Allocated once, reused for
/// every batch.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) struct DatagramBatch {
    packets: Vec<Vec<u8>>,
    replies: Vec<Vec<u8>>,
    senders: Vec<libc::sockaddr_storage>,
    received: Vec<(usize, bool, libc::socklen_t)>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Indexes of the datagrams whose replies go out in `send_replies`.
    to_send: Vec<usize>,
}

// SAFETY: the raw pointers in `iovecs` and `headers` are scratch space,
// rewritten from the owned buffers before every system call and never
// dereferenced otherwise, so moving the batch to another thread is sound.
#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe impl Send for DatagramBatch {}

/// Points one mmsghdr at an address slot and one iovec, with no control data.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn point(
    header: &mut libc::mmsghdr,
    name: &mut libc::sockaddr_storage,
    name_len: libc::socklen_t,
    iov: &mut libc::iovec,
) {
    header.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
    header.msg_hdr.msg_namelen = name_len;
    header.msg_hdr.msg_iov = iov;
    header.msg_hdr.msg_iovlen = 1;
    header.msg_hdr.msg_control = std::ptr::null_mut();
    header.msg_hdr.msg_controllen = 0;
    header.msg_hdr.msg_flags = 0;
    header.msg_len = 0;
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl DatagramBatch {
    pub(crate) fn new(n: usize, max_packet_size: usize) -> Self {
        let n = n.max(1);
        DatagramBatch {
            packets: (0..n).map(|_| vec![0; max_packet_size]).collect(),
            replies: (0..n).map(|_| Vec::new()).collect(),
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            senders: vec![unsafe { std::mem::zeroed() }; n],
            received: vec![(0, false, 0); n],
            // SAFETY: all-zero bytes are a valid iovec (null, empty).
            iovecs: vec![unsafe { std::mem::zeroed() }; n],
            // SAFETY: all-zero bytes are a valid mmsghdr (no name, no iovecs).
            headers: vec![unsafe { std::mem::zeroed() }; n],
            to_send: Vec::with_capacity(n),
        }
    }

    /// Receives what is waiting, up to the batch size and `max`, without
    /// blocking. Returns how many datagrams arrived (an empty socket is
    /// `WouldBlock`).
    pub(crate) fn recv(&mut self, socket: &Socket, max: usize) -> io::Result<usize> {
        let n = self.packets.len().min(max);
        let full = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for i in 0..n {
            self.iovecs[i] =
                libc::iovec { iov_base: self.packets[i].as_mut_ptr().cast(), iov_len: self.packets[i].len() };
            point(&mut self.headers[i], &mut self.senders[i], full, &mut self.iovecs[i]);
        }
        // SAFETY: every header points at a sender slot and an iovec that
        // point into buffers owned by `self`, sized as declared, and none of
        // them moves or is freed during the call.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for (i, header) in self.headers[..got].iter().enumerate() {
            let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.received[i] = (header.msg_len as usize, truncated, header.msg_hdr.msg_namelen);
        }
        self.to_send.clear();
        Ok(got)
    }

    /// Datagram `i` of the last `recv`: its bytes, whether it was truncated,
    /// its sender, and the buffer for its reply.
    pub(crate) fn datagram(&mut self, i: usize) -> (&[u8], bool, SockAddr, &mut Vec<u8>) {
        let (len, truncated, _) = self.received[i];
        (&self.packets[i][..len], truncated, self.sender(i), &mut self.replies[i])
    }

    fn sender(&self, i: usize) -> SockAddr {
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: sockaddr_storage is one of the platform's sockaddr types,
        // the kernel wrote `received[i].2` valid bytes of it, and socket2's
        // storage is repr(transparent) over the same type.
        unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.senders[i];
            SockAddr::new(storage, self.received[i].2)
        }
    }

    /// How many datagrams one `recv` takes at most.
    pub(crate) fn capacity(&self) -> usize {
        self.packets.len()
    }

    /// Marks datagram `i`'s reply to be sent by `send_replies`.
    pub(crate) fn reply_later(&mut self, i: usize) {
        self.to_send.push(i);
    }

    /// Sends the marked replies, each to its datagram's sender, in as few
    /// `sendmmsg` calls as errors allow. `failed` hears of each reply that
    /// could not be sent, with its destination.
    pub(crate) fn send_replies(&mut self, socket: &Socket, mut failed: impl FnMut(SockAddr, io::Error)) {
        let count = self.to_send.len();
        for (slot, &i) in self.to_send.iter().enumerate() {
            self.iovecs[slot] =
                libc::iovec { iov_base: self.replies[i].as_mut_ptr().cast(), iov_len: self.replies[i].len() };
            point(&mut self.headers[slot], &mut self.senders[i], self.received[i].2, &mut self.iovecs[slot]);
        }
        let mut next = 0;
        while next < count {
            // SAFETY: headers[next..count] were just filled to point into
            // buffers owned by `self`, which stay put during the call.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[next..].as_mut_ptr(),
                    (count - next) as libc::c_uint,
                    libc::MSG_NOSIGNAL,
                )
            };
            if sent < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    // The first of the remaining replies failed; go on after it.
                    failed(self.sender(self.to_send[next]), err);
                    next += 1;
                }
                continue;
            }
            for slot in next..next + sent as usize {
                let i = self.to_send[slot];
                if (self.headers[slot].msg_len as usize) < self.replies[i].len() {
                    failed(self.sender(i), io::Error::new(io::ErrorKind::WriteZero, "reply datagram cut short"));
                }
            }
            next += sent as usize;
        }
    }
}

/// Elsewhere than Linux there is no recvmmsg/sendmmsg: the same batch, taken
/// with one receive per datagram until the socket is empty, and replies sent
/// one by one. The server's code does not change.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) struct DatagramBatch {
    packets: Vec<Vec<u8>>,
    replies: Vec<Vec<u8>>,
    received: Vec<(usize, bool, Option<SockAddr>)>,
    to_send: Vec<usize>,
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl DatagramBatch {
    pub(crate) fn new(n: usize, max_packet_size: usize) -> Self {
        let n = n.max(1);
        DatagramBatch {
            packets: (0..n).map(|_| vec![0; max_packet_size]).collect(),
            replies: (0..n).map(|_| Vec::new()).collect(),
            received: (0..n).map(|_| (0, false, None)).collect(),
            to_send: Vec::with_capacity(n),
        }
    }

    /// As on Linux: what is waiting, up to the batch size and `max`.
    pub(crate) fn recv(&mut self, socket: &Socket, max: usize) -> io::Result<usize> {
        let mut got = 0;
        while got < self.packets.len().min(max) {
            match recv_datagram(socket, &mut self.packets[got]) {
                Ok((len, truncated, from)) => self.received[got] = (len, truncated, Some(from)),
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            }
            got += 1;
        }
        self.to_send.clear();
        Ok(got)
    }

    pub(crate) fn datagram(&mut self, i: usize) -> (&[u8], bool, SockAddr, &mut Vec<u8>) {
        let (len, truncated, from) = &self.received[i];
        let from = from.clone().expect("datagram i was received");
        (&self.packets[i][..*len], *truncated, from, &mut self.replies[i])
    }

    pub(crate) fn reply_later(&mut self, i: usize) {
        self.to_send.push(i);
    }

    pub(crate) fn send_replies(&mut self, socket: &Socket, mut failed: impl FnMut(SockAddr, io::Error)) {
        for &i in &self.to_send {
            let (reply, to) = (&self.replies[i], self.received[i].2.clone().expect("datagram i was received"));
            let sent = socket.send_to_with_flags(reply, &to, NO_SIGNAL);
            match sent {
                Ok(n) if n == reply.len() => {}
                Ok(n) => failed(to, io::Error::new(io::ErrorKind::WriteZero, format!("reply cut to {n} bytes"))),
                Err(e) => failed(to, e),
            }
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.packets.len()
    }
}
