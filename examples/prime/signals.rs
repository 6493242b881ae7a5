//! What signals do to `prime serve`: SIGINT/SIGTERM stop it (draining
//! within --drain-timeout; a second one cuts the drain short), and with the
//! `systemd` feature SIGHUP restarts it: a fresh copy of the binary gets the
//! same sockets, and once it is ready this process stops taking requests,
//! finishes those in flight and exits 0.
//!
//! A restart is not a stop: the first SIGINT/SIGTERM after any number of
//! SIGHUPs drains, and only a second one cuts. A stop asked for while a
//! successor is starting stops at once, and the successor with it.

use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socketserver::ShutdownHandle;

use crate::failure;

/// After a second signal, how long the process may take to finish cutting
/// its requests before it exits regardless (a handler busy computing cannot
/// be interrupted).
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// What a restart hands to the successor (feature `systemd`).
#[cfg(feature = "systemd")]
#[derive(Debug)]
pub struct Handover {
    /// Copies of the listening sockets, dropped as soon as this process stops.
    pub sockets: Vec<socketserver::systemd::ListenerCopy>,
    /// Their LISTEN_FDNAMES name.
    pub name: String,
    /// The program to start: the path this process was started from.
    pub program: std::path::PathBuf,
    /// The successor's arguments: ours, with ADDR made `systemd[:NAME]`.
    pub args: Vec<std::ffi::OsString>,
    /// `--pid-file`, given back to this process if the restart fails.
    pub pid_file: Option<crate::pidfile::PidFile>,
}

/// Whether SIGHUP can restart this process, and if not why (feature `systemd`).
#[cfg(feature = "systemd")]
pub type Restart = Result<Handover, String>;

/// Installs the handlers; they run on a thread of their own from now on.
/// Call before anything names this process (the pid file, READY=1), so a
/// signal sent to it is never fatal.
pub fn install(stops: Vec<ShutdownHandle>, #[cfg(feature = "systemd")] restart: Restart) -> Result<(), ExitCode> {
    #[cfg_attr(not(feature = "systemd"), allow(unused_mut))]
    let mut wanted = vec![SIGINT, SIGTERM];
    #[cfg(feature = "systemd")]
    wanted.push(signal_hook::consts::SIGHUP);
    let mut signals = Signals::new(wanted).map_err(|e| failure(format!("cannot install signal handlers: {e}")))?;
    std::thread::spawn(move || {
        #[cfg(feature = "systemd")]
        let first = first_stop(&mut signals, restart, &stops);
        #[cfg(not(feature = "systemd"))]
        let first = signals.forever().next();
        let Some(signal) = first else { return };
        stop(signal, &stops);
        // A second stop signal cuts; SIGHUPs while stopping restart nothing.
        for signal in signals.forever() {
            if signal == SIGINT || signal == SIGTERM {
                abort(signal, &stops);
            }
        }
    });
    Ok(())
}

/// Waits for the first stop signal, restarting on each SIGHUP meanwhile.
/// What a restart needed is dropped before it returns: no copy of the
/// listening sockets may outlive the servers' own.
#[cfg(feature = "systemd")]
fn first_stop(signals: &mut Signals, mut restart: Restart, stops: &[ShutdownHandle]) -> Option<i32> {
    // A stop signal that came during a restart, still to be handled.
    let mut interrupted = None;
    loop {
        let signal = interrupted.take().or_else(|| signals.forever().next())?;
        if signal != signal_hook::consts::SIGHUP {
            return Some(signal);
        }
        interrupted = on_sighup(&mut restart, stops, signals);
    }
}

/// A SIGHUP: a restart if one can be done, else a line saying why not.
/// Returns a stop signal that interrupted the restart.
#[cfg(feature = "systemd")]
fn on_sighup(restart: &mut Restart, stops: &[ShutdownHandle], signals: &mut Signals) -> Option<i32> {
    let handover = match restart {
        Ok(handover) => handover,
        Err(why) => {
            log::warn!("SIGHUP: no restart: {why}");
            return None;
        }
    };
    match self::restart(handover, stops, signals) {
        Restarted::Yes => {
            // Later SIGHUPs are the successor's to take.
            *restart = Err("this process has handed over to its successor".into());
            None
        }
        Restarted::No => None,
        Restarted::Interrupted(signal) => Some(signal),
    }
}

fn stop(signal: i32, stops: &[ShutdownHandle]) {
    log::info!("signal {signal}: shutting down; a second signal stops at once");
    stops.iter().for_each(ShutdownHandle::request_shutdown);
}

fn abort(signal: i32, stops: &[ShutdownHandle]) -> ! {
    log::warn!("signal {signal} again: stopping now, cutting the requests still running");
    stops.iter().for_each(ShutdownHandle::abort);
    std::thread::sleep(ABORT_GRACE);
    log::error!("still busy {ABORT_GRACE:?} after the second signal: exiting");
    std::process::exit(1);
}

/// How a restart ended.
#[cfg(feature = "systemd")]
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
#[cfg(feature = "systemd")]
fn restart(to: &Handover, stops: &[ShutdownHandle], signals: &mut Signals) -> Restarted {
    use socketserver::systemd::{DEFAULT_READY_TIMEOUT, Successor};
    use std::os::fd::AsFd;
    let sockets: Vec<_> = to.sockets.iter().map(|s| (s.as_fd(), to.name.as_str())).collect();
    let failed = |e: socketserver::Error| {
        log::error!("{e}; still serving");
        if let Some(pid_file) = &to.pid_file
            && let Err(e) = pid_file.write(std::process::id())
        {
            log::error!("{e}");
        }
        Restarted::No
    };
    let mut successor = match Successor::spawn(&to.program, &to.args, &sockets) {
        Ok(successor) => successor,
        Err(e) => return failed(e),
    };
    log::info!("SIGHUP: restarting: process {} starting", successor.pid());
    let deadline = std::time::Instant::now() + DEFAULT_READY_TIMEOUT;
    loop {
        for signal in signals.pending() {
            if signal == SIGINT || signal == SIGTERM {
                successor.cancel();
                return Restarted::Interrupted(signal);
            }
            log::info!("SIGHUP: a restart is already under way");
        }
        if std::time::Instant::now() >= deadline {
            let pid = successor.pid();
            successor.cancel();
            let why = std::io::Error::other(format!("no READY=1 within {DEFAULT_READY_TIMEOUT:?}"));
            return failed(socketserver::Error::Restart { what: format!("successor {pid}"), source: why });
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

/// The program a restart starts: the path this process was started from
/// (`argv[0]`, made absolute now, or found on `PATH`), not
/// `/proc/self/exe`, which a deploy that replaces or deletes the binary
/// leaves naming a deleted file.
#[cfg(feature = "systemd")]
pub fn started_program() -> Result<std::path::PathBuf, String> {
    let argv0 = std::env::args_os().next().ok_or("no argv[0]")?;
    let given = std::path::Path::new(&argv0);
    if given.components().count() > 1 {
        return std::path::absolute(given).map_err(|e| format!("{}: {e}", given.display()));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(given))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{} is not on PATH", given.display()))
}
