//! systemd (feature `systemd`): sockets the service manager passed
//! (`LISTEN_FDS`), the lifecycle it is told about (`READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `STOPPING=1`), and restarts without refusing a
//! connection: the sockets go to a successor process the same way, and the
//! old process stops once the new one says it is ready.
//!
//! ```no_run
//! # use socketserver::{systemd, Request, TcpServer};
//! let (fd, _name) = systemd::listen_fds()?.into_iter().next().expect("socket-activated");
//! let mut server = TcpServer::builder(|_: &mut Request<'_>| Ok(())).systemd_notify().from_fd(fd)?;
//! server.serve_forever()?; // READY=1 as it starts, WATCHDOG=1 from this loop
//! # Ok::<(), socketserver::Error>(())
//! ```

use std::ffi::OsString;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::stats::Stats;
use crate::{Error, Result, sys};

/// The sockets the service manager (or a predecessor, see [`Successor`])
/// passed to this process, in order, each with its name (`LISTEN_FDNAMES`,
/// `"unknown"` when unnamed). Empty when none were passed to this process.
///
/// Each fd is taken once: a second call returns none of them again. The
/// variables stay in the environment (clearing it is not thread-safe); a
/// child process never matches `LISTEN_PID`, and [`Successor`] sets its own.
///
/// # Errors
///
/// [`Error::Inherited`] if the variables are malformed or name a closed fd.
pub fn listen_fds() -> Result<Vec<(OwnedFd, String)>> {
    let passed = sd_notify::listen_fds_with_names()
        .map_err(|e| Error::Inherited { fd: 3, problem: format!("LISTEN_FDS: {e}") })?;
    passed.map(|(fd, name)| Ok((crate::transport::take_inherited_fd(fd)?, name))).collect()
}

/// A copy of a server's listening socket, kept to hand to a [`Successor`]
/// while the server goes on serving: from
/// [`Server::listener_copy`](crate::Server::listener_copy). Forked children
/// close it with the listener, so a draining fork server's port refuses new
/// clients as it should; dropping it closes the copy.
#[derive(Debug)]
pub struct ListenerCopy {
    fd: OwnedFd,
}

impl ListenerCopy {
    pub(crate) fn new(socket: &socket2::Socket) -> Result<ListenerCopy> {
        use std::os::fd::AsRawFd;
        let copy_error = |source| Error::Restart { what: "a copy of the listening socket".into(), source };
        let fd = OwnedFd::from(socket.try_clone().map_err(copy_error)?);
        if !sys::register_listener_copy(fd.as_raw_fd()) {
            return Err(copy_error(io::Error::other("too many listener copies (16 at most)")));
        }
        Ok(ListenerCopy { fd })
    }
}

impl std::os::fd::AsFd for ListenerCopy {
    fn as_fd(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

impl Drop for ListenerCopy {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        sys::unregister_listener_copy(self.fd.as_raw_fd());
    }
}

/// Tells the service manager (`NOTIFY_SOCKET`) about a server's lifecycle;
/// set up by [`ServerBuilder::systemd_notify`](crate::ServerBuilder::systemd_notify).
/// Without `NOTIFY_SOCKET` every message is a no-op.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// Half of `WATCHDOG_USEC`: how often the loop must ping.
    watchdog: Option<Duration>,
    /// A restarting predecessor's notify socket (see [`Successor`]).
    predecessor: Option<PathBuf>,
    last_ping: Instant,
    last_active: Option<u64>,
}

impl Notifier {
    pub(crate) fn from_env() -> Self {
        Notifier {
            watchdog: sd_notify::watchdog_enabled().map(|t| t / 2),
            predecessor: std::env::var_os(HANDOVER_NOTIFY).map(PathBuf::from),
            last_ping: Instant::now(),
            last_active: None,
        }
    }

    /// How often the serving loop must pass to keep the watchdog fed.
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1` to the service manager, with our pid (after a restart it
    /// is the new main process), and to a waiting predecessor.
    pub(crate) fn ready(&self) {
        self.send(&[NotifyState::Ready, NotifyState::MainPid(std::process::id()), NotifyState::Status("serving")]);
        if let Some(path) = &self.predecessor {
            let told = UnixDatagram::unbound().and_then(|socket| socket.send_to(b"READY=1", path));
            if let Err(e) = told {
                log::warn!("cannot tell the process that started this one that it is ready: {e}");
            }
        }
    }

    /// After every pass of the serving loop: the watchdog ping when due
    /// (sent from the loop itself, so it proves the loop is alive) and the
    /// status when the number of active requests changed.
    pub(crate) fn passed(&mut self, stats: Stats) {
        if self.watchdog.is_some_and(|interval| self.last_ping.elapsed() >= interval) {
            self.send(&[NotifyState::Watchdog]);
            self.last_ping = Instant::now();
        }
        if self.last_active != Some(stats.active) {
            self.last_active = Some(stats.active);
            let status = format!("serving; {} active requests, {} served", stats.active, stats.served);
            self.send(&[NotifyState::Status(&status)]);
        }
    }

    pub(crate) fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            log::warn!("cannot notify the service manager: {e}");
        }
    }
}

/// The program a restart ([`Successor::spawn`]) starts: the path this
/// process was started from (`argv[0]`, made absolute now, or found on
/// `PATH`), not `/proc/self/exe`, which a deploy that replaces or deletes
/// the binary leaves naming a deleted file. Call it when the process
/// starts, before anything changes its working directory.
///
/// # Errors
///
/// [`Error::Restart`] if there is no `argv[0]`, it cannot be made
/// absolute, or a bare name is not found on `PATH`.
pub fn started_program() -> Result<PathBuf> {
    let failed = |what: String, why: &str| Error::Restart { what, source: io::Error::other(why.to_string()) };
    let argv0 = std::env::args_os().next().ok_or_else(|| failed("this process".into(), "no argv[0]"))?;
    let given = Path::new(&argv0);
    if given.components().count() > 1 {
        return std::path::absolute(given)
            .map_err(|source| Error::Restart { what: given.display().to_string(), source });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(given))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| failed(given.display().to_string(), "not found on PATH"))
}

/// The variable naming a predecessor's notify socket, set by [`Successor`].
const HANDOVER_NOTIFY: &str = "SOCKETSERVER_HANDOVER_NOTIFY";

/// How long a [`Successor`] may take to say it is ready, unless told otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A new process started on this process's sockets, for a restart without
/// downtime: it gets them as `LISTEN_FDS` (the same code path as systemd
/// socket activation) and says `READY=1` on a notify socket of ours (named
/// by `SOCKETSERVER_HANDOVER_NOTIFY`). Under systemd it also tells systemd
/// `READY=1` and `MAINPID=` itself, through the unchanged `NOTIFY_SOCKET`
/// (the unit needs `NotifyAccess=all`), so the service lives on in it.
///
/// The restart: [`Successor::spawn`], [`Successor::wait_ready`], then
/// [`ShutdownHandle::hand_over`](crate::ShutdownHandle::hand_over) on every
/// server, which stops taking requests and drains within `drain_timeout`,
/// leaving the listen backlog and socket files to the successor. The
/// sockets are the same ones, so no client is refused in between.
#[derive(Debug)]
pub struct Successor {
    child: Child,
    program: PathBuf,
    notify: UnixDatagram,
    notify_path: PathBuf,
}

impl Successor {
    /// Starts `program` with `args`, passing `sockets` (fd and name each) as
    /// `LISTEN_FDS`/`LISTEN_FDNAMES`, and a notify socket of ours.
    ///
    /// `program` is best the path the operator started this process from
    /// (its `argv[0]`, resolved when it started), not `/proc/self/exe`: a
    /// deploy that replaces the binary (`mv new old`) or deletes it leaves
    /// the running process's own executable as `... (deleted)`, while the
    /// path names the new one.
    ///
    /// # Errors
    ///
    /// [`Error::Restart`] naming the program if it is not an executable
    /// file, or it or the notify socket cannot be made or started.
    pub fn spawn(program: &Path, args: &[OsString], sockets: &[(BorrowedFd<'_>, &str)]) -> Result<Successor> {
        let restart_error = |what: &str, source: io::Error| Error::Restart { what: what.to_string(), source };
        let name = program.display().to_string();
        runnable(program).map_err(|e| restart_error(&name, e))?;
        let notify_path = std::env::temp_dir().join(format!("socketserver-restart-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).map_err(|e| restart_error("a notify socket", e))?;
        let names: Vec<&str> = sockets.iter().map(|(_, name)| *name).collect();
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|(fd, _)| *fd).collect();
        let mut command = Command::new("/bin/sh");
        // LISTEN_PID must be the new process's own pid: the shell exports its
        // pid and execs the program, which keeps it.
        command
            .arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(program)
            .args(args)
            .env("LISTEN_FDS", fds.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env(HANDOVER_NOTIFY, &notify_path)
            .env_remove("LISTEN_PID")
            // The watchdog follows the main pid, which the successor becomes.
            .env_remove("WATCHDOG_PID");
        let child = sys::spawn_with_fds(&mut command, &fds).map_err(|e| restart_error(&name, e))?;
        Ok(Successor { child, program: program.to_path_buf(), notify, notify_path })
    }

    /// The successor's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the successor says `READY=1`.
    ///
    /// # Errors
    ///
    /// [`Error::Restart`] if it exits, or is not ready within `timeout`;
    /// the caller then keeps serving (and the successor is killed).
    pub fn wait_ready(mut self, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.failed("no READY=1 in time"));
            }
            if let Some(pid) = self.poll_ready(left)? {
                return Ok(pid);
            }
        }
    }

    /// Waits at most `wait` (a tenth of a second at a time) for `READY=1`:
    /// the successor's pid once it is ready, `None` while it is not yet.
    /// For a caller that must stay responsive while a restart is under way
    /// (a stop requested then: see [`cancel`](Self::cancel)).
    ///
    /// # Errors
    ///
    /// [`Error::Restart`] if the successor exited, saying why when it is
    /// known (the program could not be run).
    pub fn poll_ready(&mut self, wait: Duration) -> Result<Option<u32>> {
        let mut message = [0u8; 4096];
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(self.failed(&exited(status)));
        }
        let _ = self.notify.set_read_timeout(Some(wait.clamp(Duration::from_millis(1), Duration::from_millis(100))));
        match self.notify.recv(&mut message) {
            Ok(n) if message[..n].split(|&b| b == b'\n').any(|line| line == b"READY=1") => Ok(Some(self.child.id())),
            _ => Ok(None),
        }
    }

    /// Gives up on a successor that is not serving yet: it is killed and
    /// reaped (a stop was requested during the restart, say).
    pub fn cancel(mut self) {
        log::info!("restart: stopping successor {} ({}), not yet ready", self.child.id(), self.program.display());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn failed(&mut self, why: &str) -> Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Error::Restart {
            what: format!("successor {} ({})", self.child.id(), self.program.display()),
            source: io::Error::other(why.to_string()),
        }
    }
}

/// Why `program` cannot be started, checked before trying: a missing or
/// non-executable file otherwise shows only as the shell's exit status.
fn runnable(program: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(program)?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "not an executable file"));
    }
    Ok(())
}

/// An early exit in words: the shell that execs the program exits 127 when
/// it is not found and 126 when it cannot be run.
fn exited(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(127) => "it could not be run: not found (exit status 127)".into(),
        Some(126) => "it could not be run: not executable (exit status 126)".into(),
        _ => format!("it exited ({status}) before it was ready"),
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.notify_path);
    }
}
