//! The crate's only `unsafe` code: raw libc calls socket2 and std do not cover.
//! Each block states why it is sound.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use socket2::{MaybeUninitSlice, SockAddr, Socket};

/// On Linux a send to a closed peer raises SIGPIPE unless told not to; the
/// error return is all a server wants. (macOS uses SO_NOSIGPIPE instead.)
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
))]
pub(crate) const NO_SIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
pub(crate) const NO_SIGNAL: libc::c_int = 0;

/// `poll(2)` for readability on `fds` (their `events` are set here), until
/// one is ready or `timeout` passes (`None`: no limit). Retries on EINTR with
/// the time that is left. Afterwards `revents` says which are ready; errors
/// and hang-ups count as ready, so the read that follows reports them.
pub(crate) fn poll_readable(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    // A timeout too long to be a deadline is no limit at all.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    for fd in fds.iter_mut() {
        fd.events = libc::POLLIN;
        fd.revents = 0;
    }
    loop {
        let millis = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond wait does not spin at 0.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `fds` is a live, exclusively borrowed slice of pollfd structs
        // and its length is passed with it. poll reads the fd numbers only as
        // numbers: one that is closed is reported as POLLNVAL, not misused.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A pollfd entry for `fd`, to fill a reusable poll set.
pub(crate) fn poll_entry(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }
}

/// Whether `fd` has input, a hang-up or an error waiting right now.
pub(crate) fn has_input(fd: BorrowedFd<'_>) -> bool {
    let mut entry = [poll_entry(fd)];
    poll_readable(&mut entry, Some(Duration::ZERO)).is_ok() && entry[0].revents != 0
}

/// One receive that never blocks (MSG_DONTWAIT), whatever the socket's
/// mode; with `peek`, the bytes stay queued (MSG_PEEK).
pub(crate) fn recv_now(socket: &Socket, buf: &mut [u8], peek: bool) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
    // SAFETY: as in `recv_datagram`: same layout, and only initialised bytes
    // are written into the slice.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    socket.recv_with_flags(uninit, flags)
}

/// Receives one datagram into `buf`. Returns its length, whether it was
/// truncated (it did not fit in `buf`: MSG_TRUNC), and the sender.
pub(crate) fn recv_datagram(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, bool, SockAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the same layout as `u8`, and socket2 only
    // ever writes initialised bytes into the slice, so `buf` stays fully
    // initialised when the borrow ends.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let (len, flags, from) = socket.recv_from_vectored(&mut [MaybeUninitSlice::new(uninit)])?;
    Ok((len, flags.is_truncated(), from))
}

/// `fork(2)`: `Some(pid)` in the parent, `None` in the child.
///
/// # Safety
///
/// The child starts with only the calling thread. A lock another thread held
/// at that moment (a mutex, a logger's, stdout's) stays locked for ever in
/// the child, and data another thread was changing may be half-changed;
/// whatever the child does must not depend on either. The child must never
/// return into the parent's code: it ends with `_exit`, so nothing the
/// parent owns is dropped or used twice.
unsafe fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller upholds the contract above; fork itself has no
    // memory-safety preconditions.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Runs `serve` in a child process; the parent gets the child's pid. The
/// child first closes `listener` (its copy of a stream server's listening
/// socket) and puts caught signals back to their default actions, then
/// exits with `serve`'s status. Unlike Python's `ForkingMixIn`: no listener
/// kept alive behind the parent's back (clients arriving while the parent
/// drains are refused, not left waiting), and no signal handlers without the
/// threads that serve them (SIGTERM stops a child).
pub(crate) fn fork_child(listener: Option<RawFd>, serve: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: the child runs only `serve`, one request's handler, which the
    // `Forking` docs require to need no lock another thread of the parent
    // could hold, and leaves through `_exit` below without returning.
    if let Some(pid) = unsafe { fork() }? {
        return Ok(pid);
    }
    let copies = LISTENER_COPIES.iter().map(|slot| slot.load(Ordering::SeqCst));
    for fd in listener.into_iter().chain(copies.filter(|&fd| fd >= 0)) {
        // SAFETY: this child never touches the parent's `Socket` (or the
        // listener copy) that owns `fd` again and leaves through `_exit`, so
        // the fd is neither used nor closed a second time after this.
        unsafe { libc::close(fd) };
    }
    reset_caught_signals();
    let code = serve();
    // SAFETY: `_exit` is always safe to call; it never returns, and skips
    // the parent's destructors, atexit handlers and stdio flushes.
    unsafe { libc::_exit(code) }
}

/// Copies of listening sockets kept for a restart (see
/// `systemd::ListenerCopy`), which forked children close with the listener
/// itself. Atomics, not a lock: a child reads them right after fork.
static LISTENER_COPIES: [AtomicI32; 16] = [const { AtomicI32::new(-1) }; 16];

/// Records `fd` as a listener copy; false if every slot is taken.
#[cfg(feature = "systemd")]
pub(crate) fn register_listener_copy(fd: RawFd) -> bool {
    LISTENER_COPIES.iter().any(|slot| slot.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

/// Forgets `fd` as a listener copy (it is about to be closed).
#[cfg(feature = "systemd")]
pub(crate) fn unregister_listener_copy(fd: RawFd) {
    for slot in &LISTENER_COPIES {
        let _ = slot.compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Signal numbers looked at when a child resets its handlers (Linux has 64;
/// numbers an OS lacks fail in `sigaction` and are skipped).
const SIGNAL_NUMBERS: std::ops::Range<libc::c_int> = 1..65;

/// Every signal with a handler goes back to its default action, as `execve`
/// would do; ignored signals stay ignored. A forked child's inherited
/// handlers hand signals to threads it does not have, so keeping them
/// would leave it deaf to SIGTERM and SIGINT.
fn reset_caught_signals() {
    for signal in SIGNAL_NUMBERS {
        // SAFETY: `sigaction` is a plain C struct for which all zero bytes
        // is a valid value.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: with a null new action, sigaction only writes the current
        // one into `current`, a valid, exclusively borrowed struct.
        if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } != 0 {
            continue;
        }
        if current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN {
            // SAFETY: installing the default disposition has no memory-safety
            // preconditions; sigaction is async-signal-safe, so it may run
            // in a child forked from a multi-threaded process.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    Code(i32),
    Signal(i32),
}

/// Reaps child `pid` if it has exited (`block`: wait until it does).
/// Only ever waits on that one pid, never on "any child".
pub(crate) fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<ChildExit>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid, exclusively borrowed c_int for the
        // kernel to write; waitpid has no other preconditions.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        match r {
            0 => return Ok(None),
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            _ if libc::WIFEXITED(status) => return Ok(Some(ChildExit::Code(libc::WEXITSTATUS(status)))),
            _ if libc::WIFSIGNALED(status) => return Ok(Some(ChildExit::Signal(libc::WTERMSIG(status)))),
            // Stopped or continued: not an exit; only reported with WUNTRACED/WCONTINUED, which we never pass.
            _ => return Ok(None),
        }
    }
}

/// Sends SIGKILL to child `pid`, one of the server's own.
pub(crate) fn kill(pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child this
    // server forked and has not reaped, so it cannot name another process.
    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Registers `fd` with `poller`, which `polling` leaves to the caller to
/// keep sound. Every caller (`serving::registry`) removes the fd from the
/// poller before it closes, so the poller never reports a closed or reused
/// fd under a key meant for another.
pub(crate) fn poller_add(poller: &polling::Poller, fd: RawFd, interest: polling::Event) -> io::Result<()> {
    // SAFETY: `fd` is open for the call (the caller holds it), and is
    // deleted from the poller before it is closed, as `Poller::add` requires.
    unsafe { poller.add(fd, interest) }
}

/// `shutdown(fd, SHUT_RDWR)` on a connection known only by its fd number:
/// how a drain cuts a connection without needing a second fd to do it.
/// The caller guarantees `fd` is still the connection's open socket.
pub(crate) fn shutdown_both(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown has no memory-safety preconditions; it acts on the
    // socket `fd` names, which the caller guarantees is still the one meant
    // (see `dispatch::capacity` for how its close is ordered after this).
    if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

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

/// Takes ownership of fd `fd`, which the process inherited at exec: each
/// number at most once per process, and only if it is open. `None` if it is
/// closed or was taken before.
pub(crate) fn take_inherited(fd: RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::collections::HashSet;
    use std::os::fd::FromRawFd;
    use std::sync::Mutex;
    static TAKEN: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);
    let mut taken = TAKEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if fd < 0 || !taken.get_or_insert_with(HashSet::new).insert(fd) {
        return None;
    }
    // SAFETY: F_GETFD only reads the fd's flags; on a closed fd it fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        taken.as_mut().map(|t| t.remove(&fd));
        return None;
    }
    // SAFETY: `fd` is open, and it was handed to this process at exec for
    // the server (the documented contract of `take_inherited_fd`); the set
    // above makes sure no second owner is made here.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The uid and primary gid of user `name` (getpwnam_r).
pub(crate) fn user_ids(name: &str) -> io::Result<(u32, u32)> {
    let name = c_name(name)?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero bytes are a valid passwd (null pointers, zero ids).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated,
    // `entry` and `found` are exclusively borrowed, `buf` is as long as passed.
    let r = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    lookup_found(r, found.is_null(), "no such user").map(|()| (entry.pw_uid, entry.pw_gid))
}

/// The gid of group `name` (getgrnam_r).
pub(crate) fn group_id(name: &str) -> io::Result<u32> {
    let name = c_name(name)?;
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: all-zero bytes are a valid group (null pointers, zero id).
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as for getpwnam_r above.
    let r = unsafe { libc::getgrnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    lookup_found(r, found.is_null(), "no such group").map(|()| entry.gr_gid)
}

fn c_name(name: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the name"))
}

/// What a get*nam_r call's return code and result pointer mean.
fn lookup_found(code: libc::c_int, missing: bool, none: &str) -> io::Result<()> {
    match (code, missing) {
        (0, false) => Ok(()),
        (0, true) => Err(io::Error::new(io::ErrorKind::NotFound, none.to_string())),
        (code, _) => Err(io::Error::from_raw_os_error(code)),
    }
}

/// Whether this process already runs as `uid`/`gid` and nothing more: real
/// and effective ids both, not root. (A restarted server's successor is
/// started by a process that already dropped to them.)
pub(crate) fn already_running_as(uid: u32, gid: u32) -> bool {
    // SAFETY: getters without preconditions.
    let ids = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()) };
    uid != 0 && ids == (uid, uid, gid, gid)
}

/// Becomes `uid`/`gid` for good: supplementary groups to `gid` alone, then
/// the group, then the user (the order that leaves nothing behind), and a
/// check that root cannot be regained. Any failure is returned; the caller
/// must not go on serving after one.
pub(crate) fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
    let groups = [gid as libc::gid_t];
    // SAFETY: `groups` is a valid array of the length passed.
    check(unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: setgid and setuid have no memory-safety preconditions.
    check(unsafe { libc::setgid(gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::setuid(uid) })?;
    // SAFETY: getters without preconditions; setuid(0) must now fail.
    let (ruid, euid, egid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getegid()) };
    // SAFETY: as above.
    if ruid != uid || euid != uid || egid != gid || (uid != 0 && unsafe { libc::setuid(0) } == 0) {
        return Err(io::Error::other("the ids did not change as asked"));
    }
    Ok(())
}

#[cfg(feature = "systemd")]
/// Spawns `command` with `fds` as its fds 3, 4, ... (the LISTEN_FDS
/// convention), inheritable, whatever numbers they have here.
pub(crate) fn spawn_with_fds(
    command: &mut std::process::Command,
    fds: &[BorrowedFd<'_>],
) -> io::Result<std::process::Child> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // Copies above every target number first, so moving one into place in
    // the child never overwrites another still to be moved.
    let floor = 3 + fds.len() as libc::c_int;
    let mut high = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: F_DUPFD_CLOEXEC makes a new fd, which we own below.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
        if copy == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `copy` was just created by fcntl and nobody else owns it.
        high.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let raw: Vec<libc::c_int> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    // SAFETY: the closure runs in the child between fork and exec, and only
    // calls dup2, which is async-signal-safe, on numbers computed before
    // the fork; dup2 leaves the new fd without FD_CLOEXEC, so exec keeps it.
    unsafe {
        command.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                if libc::dup2(fd, 3 + i as libc::c_int) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn();
    drop(high);
    child
}

/// Whether a stream socket listens (SO_ACCEPTCONN); `None` where the OS
/// cannot tell.
pub(crate) fn is_listening(socket: &Socket) -> Option<bool> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    return socket.is_listener().ok();
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    return {
        let _ = socket;
        None
    };
}

/// A connection just accepted blocks, whatever the listener was: Linux's
/// accept4 never passes O_NONBLOCK on, the BSDs do.
pub(crate) fn accepted_blocking(_conn: &Socket) -> io::Result<()> {
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    _conn.set_nonblocking(false)?;
    Ok(())
}

/// The machine's node name (`uname -n`).
pub(crate) fn nodename() -> io::Result<String> {
    // SAFETY: all-zero bytes are a valid utsname, which uname fills in.
    let mut names: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `names` is a valid, exclusively borrowed utsname.
    if unsafe { libc::uname(&mut names) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = names.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The resolver's message for a getaddrinfo/getnameinfo error code.
fn gai_message(code: libc::c_int) -> String {
    if code == libc::EAI_SYSTEM {
        return io::Error::last_os_error().to_string();
    }
    // SAFETY: gai_strerror returns a pointer to a static, NUL-terminated string.
    let message = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(code)) };
    message.to_string_lossy().into_owned()
}

/// getaddrinfo(3) for `name`, IPv4 and IPv6: the canonical name (if the
/// resolver gives one) and the addresses, in the resolver's order, once each.
pub(crate) fn resolve(name: &str) -> Result<(Option<String>, Vec<std::net::IpAddr>), String> {
    let c_name = std::ffi::CString::new(name).map_err(|_| "name contains a NUL byte".to_string())?;
    // SAFETY: all-zero bytes are a valid addrinfo hints struct.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_flags = libc::AI_CANONNAME;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_name` and `hints` are valid for the call; on success `list`
    // receives a list that we free below with freeaddrinfo, exactly once.
    let code = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if code != 0 {
        return Err(gai_message(code));
    }
    let mut canonical = None;
    let mut addresses = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is a non-null element of the list getaddrinfo
        // returned, not yet freed; its fields are valid as documented.
        let info = unsafe { &*node };
        if canonical.is_none() && !info.ai_canonname.is_null() {
            // SAFETY: ai_canonname is a NUL-terminated string owned by the list.
            canonical = Some(unsafe { std::ffi::CStr::from_ptr(info.ai_canonname) }.to_string_lossy().into_owned());
        }
        if !info.ai_addr.is_null() {
            let mut storage = socket2::SockAddrStorage::zeroed();
            // SAFETY: ai_addr points at ai_addrlen valid bytes of a sockaddr,
            // which fit in a sockaddr_storage.
            let addr = unsafe {
                std::ptr::copy_nonoverlapping(
                    info.ai_addr.cast::<u8>(),
                    std::ptr::from_mut(storage.view_as::<libc::sockaddr_storage>()).cast::<u8>(),
                    info.ai_addrlen as usize,
                );
                SockAddr::new(storage, info.ai_addrlen)
            };
            if let Some(ip) = addr.as_socket().map(|a| a.ip()).filter(|ip| !addresses.contains(ip)) {
                addresses.push(ip);
            }
        }
        node = info.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    Ok((canonical, addresses))
}

/// getnameinfo(3): the host name for `ip`; an error if it has none.
pub(crate) fn reverse(ip: std::net::IpAddr) -> Result<String, String> {
    let addr = SockAddr::from(std::net::SocketAddr::new(ip, 0));
    let mut host = [0 as libc::c_char; libc::NI_MAXHOST as usize];
    // SAFETY: `addr` is a valid sockaddr of the given length; `host` is a
    // writable buffer of the given length; no service buffer is asked for.
    let code = unsafe {
        libc::getnameinfo(
            addr.as_ptr().cast(),
            addr.len(),
            host.as_mut_ptr(),
            host.len() as _,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if code != 0 {
        return Err(gai_message(code));
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`.
    Ok(unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) }.to_string_lossy().into_owned())
}

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
