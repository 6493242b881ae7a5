//! `prime serve` from bound sockets to exit: signal handlers first (so a
//! signal to a process the pid file or READY=1 names is never fatal), then
//! the pid file, then `--user`, then `listening on ADDR`, then serving one
//! server, or a `--reuseport` group on a thread each, until a signal.

use std::io::Write;
use std::process::ExitCode;

use socketserver::signals::OnSignals;
use socketserver::{AnyServer, ShutdownHandle, privileges};

use crate::failure;
use crate::pidfile::PidFile;
use crate::prime::PrimeService;
use crate::serve::ServeOptions;

/// How the servers are run: what the flags and ADDR said.
pub struct Run {
    ids: Option<privileges::Ids>,
    pid_file: Option<PidFile>,
    #[cfg_attr(not(feature = "systemd"), allow(dead_code))]
    addr: String,
    /// What SIGHUP restarts: the path this process was started from.
    #[cfg(feature = "systemd")]
    program: socketserver::Result<std::path::PathBuf>,
}

impl Run {
    pub fn new(ids: Option<privileges::Ids>, options: &ServeOptions, addr: &str) -> Run {
        Run {
            ids,
            pid_file: options.pid_file.as_deref().map(PidFile::at),
            addr: addr.to_string(),
            #[cfg(feature = "systemd")]
            program: socketserver::systemd::started_program(),
        }
    }

    /// Serves `servers` (one, or a `--reuseport` group) until a signal.
    pub fn serve(self, servers: Vec<AnyServer<PrimeService>>) -> Result<(), ExitCode> {
        let stops: Vec<ShutdownHandle> = servers.iter().map(AnyServer::shutdown_handle).collect();
        let address = servers.first().ok_or_else(|| failure("no socket to serve"))?.server_address().clone();
        let on_signals = OnSignals::stop(stops.clone());
        #[cfg(feature = "systemd")]
        let on_signals = on_signals.restart(self.restart(&servers));
        on_signals.install().map_err(failure)?;
        if let Some(pid_file) = &self.pid_file {
            pid_file.claim(self.ids).map_err(failure)?;
        }
        if let Some(ids) = self.ids {
            privileges::drop_to(ids).map_err(failure)?;
        }
        announce(&address);
        serve_all(servers)?;
        // Exit status 0 after a graceful stop; 1 when a second signal cut it short.
        if stops.iter().any(ShutdownHandle::is_aborted) {
            return Err(failure("stopped by a second signal: requests still running were cut"));
        }
        Ok(())
    }

    /// What a SIGHUP restart gives the successor: copies of the servers'
    /// sockets, as `systemd:NAME` (the name they came with, or `prime`).
    #[cfg(feature = "systemd")]
    fn restart(&self, servers: &[AnyServer<PrimeService>]) -> Result<socketserver::signals::Restart, String> {
        let program =
            self.program.as_ref().map(Clone::clone).map_err(|e| format!("cannot tell which program to start: {e}"));
        let sockets = servers.iter().map(AnyServer::listener_copy).collect::<socketserver::Result<Vec<_>>>();
        let sockets = sockets.map_err(|e| format!("cannot copy the listening socket: {e}"));
        let name = self.addr.strip_prefix("systemd:").unwrap_or("prime").to_string();
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        if let Some(arg) = args.get_mut(2) {
            *arg = format!("systemd:{name}").into();
        }
        let pid_file = self.pid_file.clone();
        let restart = program.and_then(|program| {
            let sockets = sockets?.into_iter().map(|copy| (copy, name.clone())).collect();
            let restart = socketserver::signals::Restart::new(program, args, sockets);
            // A failed restart gives the pid file back to this process.
            Ok(restart.on_failure(move || {
                if let Some(pid_file) = &pid_file
                    && let Err(e) = pid_file.write(std::process::id())
                {
                    log::error!("{e}");
                }
            }))
        });
        if let Err(why) = &restart {
            log::warn!("SIGHUP will not restart this server: {why}");
        }
        restart
    }
}

/// Serves each server until it stops, the first on this thread and any
/// others on a thread each; each drains as it closes.
fn serve_all(servers: Vec<AnyServer<PrimeService>>) -> Result<(), ExitCode> {
    let results: Vec<socketserver::Result<()>> = std::thread::scope(|scope| {
        let mut servers = servers.into_iter();
        let first = servers.next();
        let others: Vec<_> = servers.map(|mut server| scope.spawn(move || server.serve_forever())).collect();
        let mut results: Vec<_> = first.into_iter().map(|mut server| server.serve_forever()).collect();
        results.extend(others.into_iter().map(|thread| thread.join().unwrap_or(Ok(()))));
        results
    });
    results.into_iter().collect::<socketserver::Result<()>>().map_err(failure)
}

/// The CLI contract: the first stdout line is `listening on ADDR`, flushed
/// at once, ADDR as `prime serve KIND ADDR` and `prime ask KIND ADDR` take
/// it (with the port the OS chose): the kind is its own argument here, so
/// the line carries no scheme, unlike `AnyServer::endpoint()`'s form, which
/// programs that take an endpoint print (`examples/fileserve.rs`). A closed
/// stdout is no reason to stop serving: say so on stderr.
fn announce(address: &socketserver::Address) {
    let mut stdout = std::io::stdout();
    if let Err(e) = writeln!(stdout, "listening on {address}").and_then(|()| stdout.flush()) {
        log::warn!("listening on {address} (cannot say so on stdout: {e})");
    }
}
