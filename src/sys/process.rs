//! Processes: forking a child that serves one request, reaping and killing only
//! our own children, signals a child puts back, fds inherited at exec, and
//! spawning a successor with its listeners.

use std::io;
use std::os::fd::RawFd;
#[cfg(feature = "systemd")]
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicI32, Ordering};

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
