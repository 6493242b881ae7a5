//! SIGHUP: a restart without downtime (feature `systemd`), through
//! [`Successor`]: the new process gets copies of the listening sockets and,
//! once it says it is ready, every server of this one hands over.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::systemd::{DEFAULT_READY_TIMEOUT, ListenerCopy, Successor};
use crate::{Error, ShutdownHandle};

/// How SIGHUP restarts the process: which program, with which arguments,
/// on which sockets (copies, each with the `LISTEN_FDNAMES` name the
/// successor finds it under). See [`OnSignals::restart`](super::OnSignals::restart).
///
/// Made once, before serving: the program is best the path the process was
/// started from ([`started_program`](crate::systemd::started_program)), and
/// the arguments are usually this process's, with the address replaced by
/// `systemd:NAME` so the successor serves the passed sockets.
pub struct Restart {
    program: PathBuf,
    args: Vec<OsString>,
    sockets: Vec<(ListenerCopy, String)>,
    on_failure: Option<Box<dyn Fn() + Send>>,
}

impl std::fmt::Debug for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restart").field("program", &self.program).field("args", &self.args).finish_non_exhaustive()
    }
}

impl Restart {
    /// Restarts as `program` with `args`, passing `sockets` (copies made by
    /// `listener_copy`, each with its name).
    pub fn new(program: PathBuf, args: Vec<OsString>, sockets: Vec<(ListenerCopy, String)>) -> Restart {
        Restart { program, args, sockets, on_failure: None }
    }

    /// Runs `f` when a restart fails and this process serves on (after the
    /// error is logged): to take back a pid file, say.
    pub fn on_failure(mut self, f: impl Fn() + Send + 'static) -> Restart {
        self.on_failure = Some(Box::new(f));
        self
    }
}

/// Waits for the first stop signal, restarting on each SIGHUP meanwhile.
/// What a restart needed is dropped before it returns: no copy of the
/// listening sockets may outlive the servers' own.
pub(super) fn first_stop(
    signals: &mut Signals,
    mut restart: Option<Result<Restart, String>>,
    stops: &[ShutdownHandle],
) -> Option<i32> {
    // A stop signal that came during a restart, still to be handled.
    let mut interrupted = None;
    loop {
        let signal = interrupted.take().or_else(|| signals.forever().next())?;
        if signal != SIGHUP {
            return Some(signal);
        }
        interrupted = on_sighup(&mut restart, stops, signals);
    }
}

/// A SIGHUP: a restart if one can be done, else a line saying why not.
/// Returns a stop signal that interrupted the restart.
fn on_sighup(
    restart: &mut Option<Result<Restart, String>>,
    stops: &[ShutdownHandle],
    signals: &mut Signals,
) -> Option<i32> {
    let to = match restart {
        Some(Ok(to)) => to,
        Some(Err(why)) => {
            log::warn!("SIGHUP: no restart: {why}");
            return None;
        }
        None => return None,
    };
    match start_successor(to, stops, signals) {
        Restarted::Yes => {
            // Later SIGHUPs are the successor's to take.
            *restart = Some(Err("this process has handed over to its successor".into()));
            None
        }
        Restarted::No => None,
        Restarted::Interrupted(signal) => Some(signal),
    }
}

/// How a restart ended.
enum Restarted {
    /// The successor serves; this process drains.
    Yes,
    /// It failed; this process keeps serving.
    No,
    /// A stop signal came first: the successor was stopped; the signal is
    /// still to be handled.
    Interrupted(i32),
}

/// Starts the successor and, once it is ready, hands the servers over.
/// Signals are read while it starts: a stop stops it too.
fn start_successor(to: &Restart, stops: &[ShutdownHandle], signals: &mut Signals) -> Restarted {
    let sockets: Vec<_> = to.sockets.iter().map(|(copy, name)| (copy.as_fd(), name.as_str())).collect();
    let failed = |e: Error| {
        log::error!("{e}; still serving");
        if let Some(on_failure) = &to.on_failure {
            on_failure();
        }
        Restarted::No
    };
    let mut successor = match Successor::spawn(&to.program, &to.args, &sockets) {
        Ok(successor) => successor,
        Err(e) => return failed(e),
    };
    log::info!("SIGHUP: restarting: process {} starting", successor.pid());
    let deadline = Instant::now() + DEFAULT_READY_TIMEOUT;
    loop {
        for signal in signals.pending() {
            if signal == SIGINT || signal == SIGTERM {
                successor.cancel();
                return Restarted::Interrupted(signal);
            }
            log::info!("SIGHUP: a restart is already under way");
        }
        if Instant::now() >= deadline {
            let pid = successor.pid();
            successor.cancel();
            let why = std::io::Error::other(format!("no READY=1 within {DEFAULT_READY_TIMEOUT:?}"));
            return failed(Error::Restart { what: format!("successor {pid}"), source: why });
        }
        match successor.poll_ready(Duration::from_millis(100)) {
            Ok(Some(pid)) => {
                log::info!("restart: process {pid} serves now; finishing the requests in flight");
                stops.iter().for_each(ShutdownHandle::hand_over);
                return Restarted::Yes;
            }
            Ok(None) => {}
            Err(e) => return failed(e),
        }
    }
}
