//! A stream connection as its handler's reader and writer drive it: the
//! socket, the output buffer the reader can flush, per-operation timeouts
//! capped by the connection's deadline, and sends that never raise SIGPIPE.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read};
use std::time::{Duration, Instant};

use socket2::Socket;

use super::{ConnectionState, Incoming};
use crate::Address;
use crate::ancillary::{Ancillary, Credentials};
use crate::deadline::{Timeouts, arm, timed_out};
use crate::sys::NO_SIGNAL;

/// IOV_MAX on Linux and the BSDs: the most slices one sendmsg takes.
const MAX_IOVECS: usize = 1024;

/// Size of a stream connection's read and write buffers.
pub(crate) const STREAM_BUFFER: usize = 8 * 1024;

/// A stream connection while a handler has it.
pub(crate) struct Conn {
    pub socket: Socket,
    out: RefCell<Vec<u8>>,
    timeouts: Timeouts,
    deadline: Option<Instant>,
    /// Unix connections: reads also collect passed fds, kept here until taken.
    ancillary: Option<RefCell<Ancillary>>,
    #[cfg(feature = "proxy-protocol")]
    pub proxy: Option<Box<crate::proxy::ProxyHeader>>,
    /// Reads and writes go through it: the handler sees plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<Box<crate::tls::Session>>,
    /// Bytes an earlier request left unread; reads take them first.
    pending: RefCell<Vec<u8>>,
    /// Its socket's last read emptied it (see `Incoming::emptied`).
    emptied: Cell<bool>,
    /// How much of `out` the requests answered before this one wrote
    /// (see [`commit_written`](Self::commit_written)).
    committed: Cell<usize>,
    /// Whether the handler may hand the connection back, and whether it did.
    can_hand_back: bool,
    handed_back: Cell<bool>,
    /// Its client under per-client limits, counted open while it is.
    client: Option<Box<crate::limits::Client>>,
}

impl Conn {
    /// The connection a handler is given, and the client it is from;
    /// `can_hand_back`: the handler may give it back to the serving loop.
    pub(crate) fn new(incoming: Incoming, timeouts: Timeouts, can_hand_back: bool) -> (Self, Address) {
        let conn = Conn {
            socket: incoming.socket,
            out: RefCell::new(Vec::with_capacity(STREAM_BUFFER)),
            timeouts,
            deadline: incoming.deadline,
            ancillary: incoming.peer.is_unix().then(RefCell::default),
            #[cfg(feature = "proxy-protocol")]
            proxy: incoming.proxy,
            #[cfg(feature = "tls")]
            tls: incoming.tls,
            pending: RefCell::new(incoming.buffered),
            emptied: Cell::new(incoming.emptied),
            committed: Cell::new(0),
            can_hand_back,
            handed_back: Cell::new(false),
            client: incoming.client,
        };
        (conn, incoming.peer)
    }

    /// `Request::hand_back`: returns whether the connection will go back.
    pub(crate) fn hand_back(&self) -> bool {
        self.handed_back.set(self.can_hand_back);
        self.can_hand_back
    }

    pub(crate) fn handed_back(&self) -> bool {
        self.handed_back.get()
    }

    /// Its handler handed it back with `unread`, the next request's bytes,
    /// read already: the handler runs on it again, reading them first.
    pub(crate) fn again(&self, unread: Vec<u8>) {
        self.handed_back.set(false);
        let mut pending = self.pending.borrow_mut();
        pending.splice(0..0, unread);
    }

    /// Whether a read would take bytes already in (an earlier request's,
    /// or plaintext a TLS session holds) without waiting for the socket.
    pub(crate) fn has_input_buffered(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(|tls| tls.has_plaintext()) {
            return true;
        }
        !self.pending.borrow().is_empty()
    }

    /// What is written so far belongs to requests answered: a panic in the
    /// next one's handler does not take it back.
    pub(crate) fn commit_written(&self) {
        self.committed.set(self.out.borrow().len());
    }

    /// Drops what the request running wrote and did not send (its handler
    /// panicked): the answers before it still leave.
    pub(crate) fn discard_uncommitted(&self) {
        self.out.borrow_mut().truncate(self.committed.get());
    }

    /// Whether its client, under per-client limits, is over its rate for
    /// one more request now (see `Incoming::over_rate`).
    pub(crate) fn over_rate(&self) -> bool {
        super::incoming::over_rate(self.client.as_deref())
    }

    /// The connection on its way back to the loop, with `unread`, what the
    /// handler's reader held, ahead of what it never took, and the state
    /// its handler keeps for it.
    pub(crate) fn into_incoming(self, peer: Address, mut unread: Vec<u8>, state: ConnectionState) -> Incoming {
        unread.append(&mut self.pending.borrow_mut());
        Incoming {
            socket: self.socket,
            peer,
            deadline: self.deadline,
            #[cfg(feature = "proxy-protocol")]
            proxy: self.proxy,
            #[cfg(feature = "tls")]
            tls: self.tls,
            buffered: unread,
            emptied: self.emptied.get(),
            state,
            client: self.client,
        }
    }

    /// The peer's credentials (SO_PEERCRED), on a Unix connection on Linux.
    pub(crate) fn peer_credentials(&self) -> Option<Credentials> {
        self.ancillary.as_ref().and_then(|_| Credentials::of_peer(&self.socket))
    }

    pub(crate) fn take_fds(&self) -> Vec<std::os::fd::OwnedFd> {
        self.ancillary.as_ref().map(|a| std::mem::take(&mut a.borrow_mut().fds)).unwrap_or_default()
    }

    /// Before a blocking operation: see [`arm`].
    fn arm(
        &self,
        configured: Option<Duration>,
        set: impl Fn(&Socket, Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        arm(&self.socket, configured, self.deadline, set)
    }

    /// Whether bytes are encrypted on their way: then the kernel can
    /// neither send a file nor pass fds for us.
    fn encrypted(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            let n = buf.len().min(pending.len());
            buf[..n].copy_from_slice(&pending[..n]);
            pending.drain(..n);
            return Ok(n);
        }
        drop(pending);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.read(buf, &mut Wire(self));
        }
        self.read_socket(buf)
    }

    /// Reads from the socket itself, under the read timeout and the deadline.
    fn read_socket(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(self.timeouts.read, Socket::set_read_timeout)?;
        let read = match &self.ancillary {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Some(a) => a.borrow_mut().receive(&self.socket, buf).map(|(n, ..)| n),
            _ => (&self.socket).read(buf),
        };
        // A read that asked for more than came took every byte; its end,
        // or a failure, is left to be reported again.
        self.emptied.set(matches!(read, Ok(n) if n > 0 && n < buf.len()));
        read.map_err(|e| timed_out(e, "read"))
    }

    pub(crate) fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // sendmsg takes at most IOV_MAX slices; a short write is allowed.
        let bufs = &bufs[..bufs.len().min(MAX_IOVECS)];
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut out = self.out.borrow_mut();
        if self.encrypted() {
            // Every byte is copied into a TLS record anyway: gather them, and
            // flush in as few records as the length allows.
            for buf in bufs {
                out.extend_from_slice(buf);
            }
            if out.len() >= STREAM_BUFFER {
                self.send_all(&mut out)?;
            }
            return Ok(total);
        }
        if out.len() + total > STREAM_BUFFER {
            self.send_all(&mut out)?;
        }
        if total >= STREAM_BUFFER {
            // Too big to be worth copying: straight to the kernel, in one writev.
            self.arm(self.timeouts.write, Socket::set_write_timeout)?;
            return self.socket.send_vectored_with_flags(bufs, NO_SIGNAL).map_err(|e| timed_out(e, "write"));
        }
        for buf in bufs {
            out.extend_from_slice(buf);
        }
        Ok(total)
    }

    /// Sends `len` bytes of `file` from `offset` (to its end if `None`),
    /// after what is buffered. Linux: sendfile(2), the kernel copies file to
    /// socket; elsewhere, and under TLS, a copy. Returns the bytes sent.
    pub(crate) fn send_file(&self, file: &std::fs::File, offset: u64, len: Option<u64>) -> io::Result<u64> {
        self.flush()?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if !self.encrypted() {
            return self.send_file_by_kernel(file, offset, len);
        }
        self.copy_file(file, offset, len)
    }

    /// sendfile(2): the kernel copies file pages straight to the socket.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn send_file_by_kernel(&self, file: &std::fs::File, offset: u64, len: Option<u64>) -> io::Result<u64> {
        let end = len.map(|len| offset.saturating_add(len));
        let mut position = offset;
        while end.is_none_or(|end| position < end) {
            let chunk = end.map_or(1 << 30, |end| (end - position).min(1 << 30)) as usize;
            self.arm(self.timeouts.write, Socket::set_write_timeout)?;
            let sent =
                crate::sys::sendfile(&self.socket, file, &mut position, chunk).map_err(|e| timed_out(e, "write"))?;
            if sent == 0 {
                break; // end of file
            }
        }
        Ok(position - offset)
    }

    /// Sends `file` a chunk at a time through user space: where the kernel
    /// cannot (no sendfile(2) on this OS, or TLS, which encrypts here).
    fn copy_file(&self, file: &std::fs::File, offset: u64, len: Option<u64>) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut chunk = vec![0u8; 4 * STREAM_BUFFER];
        let mut sent = 0u64;
        while len.is_none_or(|len| sent < len) {
            let want = len.map_or(chunk.len(), |len| (len - sent).min(chunk.len() as u64) as usize);
            let read = file.read_at(&mut chunk[..want], offset + sent)?;
            if read == 0 {
                break; // end of file
            }
            self.send_slice(&chunk[..read])?;
            sent += read as u64;
        }
        Ok(sent)
    }

    /// Sends what is buffered, then `data` with `fds` attached (SCM_RIGHTS).
    pub(crate) fn send_fds(&self, data: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
        if self.ancillary.is_none() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "file descriptors travel only over Unix sockets"));
        }
        if self.encrypted() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "file descriptors cannot travel inside TLS"));
        }
        self.flush()?;
        self.arm(self.timeouts.write, Socket::set_write_timeout)?;
        let sent = crate::sys::send_with_fds(&self.socket, data, fds).map_err(|e| timed_out(e, "write"))?;
        // The fds went with the first byte; the rest is ordinary data.
        self.send_slice(&data[sent..])
    }

    pub(crate) fn flush(&self) -> io::Result<()> {
        self.send_all(&mut self.out.borrow_mut())
    }

    /// The end of a served request: on TLS, `close_notify` tells the client
    /// the answer is whole.
    pub(crate) fn finish(&self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            tls.close(&mut Wire(self));
        }
    }

    fn send_all(&self, out: &mut Vec<u8>) -> io::Result<()> {
        // Sent, it is past taking back.
        self.committed.set(0);
        let result = self.send_slice(out);
        // After a failed send the connection is unusable; keeping the bytes
        // would only make `finish` fail the same way again.
        out.clear();
        result
    }

    /// Sends all of `data`, each send waiting at most the write timeout.
    fn send_slice(&self, data: &[u8]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.write_all(data, &mut Wire(self));
        }
        self.send_socket(data)
    }

    /// Sends all of `data` on the socket itself.
    fn send_socket(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            self.arm(self.timeouts.write, Socket::set_write_timeout)?;
            match self.socket.send_with_flags(data, NO_SIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out(e, "write")),
            }
        }
        Ok(())
    }
}

/// The socket under a TLS session: each read and write waits at most the
/// connection's timeouts and deadline, and sends never raise SIGPIPE.
#[cfg(feature = "tls")]
struct Wire<'a>(&'a Conn);

#[cfg(feature = "tls")]
impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_socket(buf)
    }
}

#[cfg(feature = "tls")]
impl std::io::Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.arm(self.0.timeouts.write, Socket::set_write_timeout)?;
        self.0.socket.send_with_flags(buf, NO_SIGNAL).map_err(|e| timed_out(e, "write"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The connection as a `Read`, for the reader's `BufReader`.
pub(crate) struct ConnRead<'a>(pub &'a Conn);

impl Read for ConnRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
