//! Stopping, and restarting, on signals, as operators and service managers
//! expect of a server: one opt-in call, [`OnSignals::install`] (or
//! [`ShutdownHandle::stop_on_signals`] for one server).
//!
//! - SIGINT or SIGTERM asks every server to stop: each stops taking
//!   requests and drains within its `drain_timeout`.
//! - A second one aborts: the requests still running are cut at once; if
//!   the process is still busy [`ABORT_GRACE`] later (a handler computing
//!   cannot be interrupted), it exits with status 1.
//! - With [`OnSignals::restart`] (feature `systemd`), SIGHUP starts a fresh
//!   copy of the program on the same sockets; once it is ready, every
//!   server hands over (finishes what it has and stops). A restart is not a
//!   stop: the first SIGINT/SIGTERM after it still drains. A stop that
//!   comes while the successor starts stops it too.
//!
//! The handlers run on a thread of their own, from `install` until the
//! process ends. Install them before anything names the process (a pid
//! file, `READY=1`), so a signal sent to it is never fatal.

use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::{Error, Result, ShutdownHandle};

/// After a second stop signal, how long the process may take to finish
/// cutting its requests before it exits with status 1 regardless.
pub const ABORT_GRACE: Duration = Duration::from_secs(2);

/// What signals do to a set of servers; see the [module](self).
///
/// ```no_run
/// use socketserver::signals::OnSignals;
/// use socketserver::{Request, TcpServer};
/// use std::time::Duration;
///
/// let mut server = TcpServer::builder(|_: &mut Request<'_>| Ok(()))
///     .drain_timeout(Some(Duration::from_secs(10)))
///     .bind("127.0.0.1:8000")?;
/// OnSignals::stop([server.shutdown_handle()]).install()?;
/// server.serve_forever()?; // returns at once on SIGINT or SIGTERM
/// let stats = server.server_close(); // the drain: returns once it is over
/// // Every accepted request is answered (or cut, as `stats` counts): the
/// // moment to save what handlers changed.
/// # let _ = stats;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Debug)]
pub struct OnSignals {
    stops: Vec<ShutdownHandle>,
    #[cfg(feature = "systemd")]
    restart: Option<std::result::Result<Restart, String>>,
}

impl OnSignals {
    /// SIGINT and SIGTERM stop these servers (a second one aborts them).
    pub fn stop(servers: impl IntoIterator<Item = ShutdownHandle>) -> OnSignals {
        OnSignals {
            stops: servers.into_iter().collect(),
            #[cfg(feature = "systemd")]
            restart: None,
        }
    }

    /// SIGHUP restarts (feature `systemd`): `Ok` says how; `Err` says why
    /// this process cannot restart, which SIGHUP then logs (instead of its
    /// default action, ending the process).
    #[cfg(feature = "systemd")]
    pub fn restart(mut self, restart: std::result::Result<Restart, String>) -> OnSignals {
        self.restart = Some(restart);
        self
    }

    /// Installs the handlers, and starts the thread that acts on them.
    ///
    /// # Errors
    ///
    /// [`Error::Signals`] if the handlers cannot be installed.
    pub fn install(self) -> Result<()> {
        #[cfg_attr(not(feature = "systemd"), allow(unused_mut))]
        let mut wanted = vec![SIGINT, SIGTERM];
        #[cfg(feature = "systemd")]
        if self.restart.is_some() {
            wanted.push(signal_hook::consts::SIGHUP);
        }
        let mut signals = Signals::new(wanted).map_err(|source| Error::Signals { source })?;
        std::thread::Builder::new()
            .name("socketserver-signals".into())
            .spawn(move || self.act(&mut signals))
            .map_err(|source| Error::Signals { source })?;
        Ok(())
    }

    fn act(self, signals: &mut Signals) {
        #[cfg(feature = "systemd")]
        let (first, stops) = {
            let OnSignals { stops, restart } = self;
            (restart::first_stop(signals, restart, &stops), stops)
        };
        #[cfg(not(feature = "systemd"))]
        let (first, stops) = (signals.forever().next(), self.stops);
        let Some(signal) = first else { return };
        log::info!("signal {signal}: shutting down; a second signal stops at once");
        stops.iter().for_each(ShutdownHandle::request_shutdown);
        // A second stop signal cuts; SIGHUPs while stopping restart nothing.
        if let Some(signal) = signals.forever().find(|&s| s == SIGINT || s == SIGTERM) {
            log::warn!("signal {signal} again: stopping now, cutting the requests still running");
            stops.iter().for_each(ShutdownHandle::abort);
            std::thread::sleep(ABORT_GRACE);
            log::error!("still busy {ABORT_GRACE:?} after the second signal: exiting");
            std::process::exit(1);
        }
    }
}

impl ShutdownHandle {
    /// SIGINT and SIGTERM stop this server, draining; a second one aborts
    /// it: [`OnSignals::stop`] for this server alone.
    ///
    /// # Errors
    ///
    /// [`Error::Signals`] if the handlers cannot be installed.
    pub fn stop_on_signals(&self) -> Result<()> {
        OnSignals::stop([self.clone()]).install()
    }
}

#[cfg(feature = "systemd")]
pub use restart::Restart;

#[cfg(feature = "systemd")]
mod restart;
