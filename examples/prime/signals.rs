//! What signals do to `prime serve`: SIGINT/SIGTERM stop it (draining
//! within --drain-timeout; a second one cuts the drain short), and with the
//! `systemd` feature SIGHUP restarts it: a fresh copy of the binary gets the
//! same sockets, and once it is ready this process stops taking requests,
//! finishes those in flight and exits 0.

use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
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
    /// A copy of the listening socket, dropped as soon as this process stops.
    pub socket: socketserver::systemd::ListenerCopy,
    /// Its LISTEN_FDNAMES name.
    pub name: String,
    /// The successor's arguments: ours, with ADDR made `systemd[:NAME]`.
    pub args: Vec<std::ffi::OsString>,
}

/// Handles the signals on a thread of its own from now on.
pub fn install(
    stops: Vec<ShutdownHandle>,
    #[cfg(feature = "systemd")] handover: Option<Handover>,
) -> Result<(), ExitCode> {
    #[cfg_attr(not(feature = "systemd"), allow(unused_mut))]
    let mut wanted = vec![SIGINT, SIGTERM];
    #[cfg(feature = "systemd")]
    wanted.push(signal_hook::consts::SIGHUP);
    let mut signals = signal_hook::iterator::Signals::new(wanted)
        .map_err(|e| failure(format!("cannot install signal handlers: {e}")))?;
    #[cfg(feature = "systemd")]
    let mut handover = handover;
    std::thread::spawn(move || {
        let mut stopping = false;
        for signal in signals.forever() {
            #[cfg(feature = "systemd")]
            if signal == signal_hook::consts::SIGHUP {
                if !stopping && let Some(to) = &handover {
                    stopping = restart(to, &stops);
                }
                if stopping {
                    handover = None;
                }
                continue;
            }
            if !stopping {
                log::info!("signal {signal}: shutting down; a second signal stops at once");
                // No copy of the listening socket may outlive the server's own.
                #[cfg(feature = "systemd")]
                drop(handover.take());
                stops.iter().for_each(ShutdownHandle::request_shutdown);
                stopping = true;
                continue;
            }
            log::warn!("signal {signal} again: stopping now, cutting the requests still running");
            stops.iter().for_each(ShutdownHandle::abort);
            std::thread::sleep(ABORT_GRACE);
            log::error!("still busy {ABORT_GRACE:?} after the second signal: exiting");
            std::process::exit(1);
        }
    });
    Ok(())
}

/// Starts the successor and, once it is ready, hands the servers over.
/// True if it did; on failure this process keeps serving.
#[cfg(feature = "systemd")]
fn restart(to: &Handover, stops: &[ShutdownHandle]) -> bool {
    use socketserver::systemd::{DEFAULT_READY_TIMEOUT, Successor};
    use std::os::fd::AsFd;
    let started = std::env::current_exe()
        .map_err(|e| socketserver::Error::Restart { what: "this program".into(), source: e })
        .and_then(|program| Successor::spawn(&program, &to.args, &[(to.socket.as_fd(), to.name.as_str())]));
    match started.and_then(|successor| successor.wait_ready(DEFAULT_READY_TIMEOUT)) {
        Ok(pid) => {
            log::info!("restart: process {pid} serves now; finishing the requests in flight");
            stops.iter().for_each(ShutdownHandle::hand_over);
            true
        }
        Err(e) => {
            log::error!("{e}; still serving");
            false
        }
    }
}
