//! Python's overridable server methods, as closures set on the builder.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::stats::Stats;
use crate::{Address, Error};

/// Called with every error that concerns one request (Python's
/// `handle_error`); shared with the threads that serve requests.
pub(crate) type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;

type Verify = Box<dyn FnMut(&Address) -> bool + Send>;
type Action = Box<dyn FnMut() + Send>;
#[cfg(feature = "tls")]
type VerifyTls = Box<dyn FnMut(&Address, &crate::tls::TlsInfo) -> Result<(), String> + Send>;

/// The hooks the serving thread calls (`handle_error` is shared with the
/// threads that serve requests, so it lives apart, in the request context).
#[derive(Default)]
pub(crate) struct Hooks {
    /// The service manager to tell about the lifecycle (feature `systemd`).
    #[cfg(feature = "systemd")]
    pub(crate) systemd: Option<crate::systemd::Notifier>,
    pub verify_request: Option<Verify>,
    #[cfg(feature = "tls")]
    pub verify_tls: Option<VerifyTls>,
    pub handle_timeout: Option<Action>,
    pub service_actions: Option<Action>,
}

/// Log lines the default `handle_error` writes per second at most.
const LOGGED_PER_SECOND: u32 = 20;

/// The default `handle_error`: one log line naming the client, then serving
/// goes on. Errors that can come once per packet (a flood of datagrams that
/// cannot be answered, say) would drown the log, so past
/// [`LOGGED_PER_SECOND`] lines in a second the rest are counted, and the
/// count is logged with the next line that is written.
pub(crate) fn log_errors() -> ErrorHook {
    let limit = RateLimit::new(LOGGED_PER_SECOND);
    Arc::new(move |err: &Error| match limit.admit(Instant::now()) {
        Admit::Log { suppressed: 0 } => log::error!("{err}"),
        Admit::Log { suppressed } => {
            log::error!("{err} (and {suppressed} more request errors not logged: over {LOGGED_PER_SECOND} a second)")
        }
        Admit::Suppress => {}
    })
}

/// Whether an event may be logged, under a limit per one-second window.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Log it, mentioning how many were suppressed since the last logged one.
    Log {
        suppressed: u64,
    },
    Suppress,
}

pub(crate) struct RateLimit {
    per_second: u32,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> Self {
        RateLimit { per_second, state: Mutex::new(Window { start: None, logged: 0, suppressed: 0 }) }
    }

    pub(crate) fn admit(&self, now: Instant) -> Admit {
        let mut window = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if window.start.is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1)) {
            window.start = Some(now);
            window.logged = 0;
        }
        if window.logged == self.per_second {
            window.suppressed += 1;
            return Admit::Suppress;
        }
        window.logged += 1;
        Admit::Log { suppressed: std::mem::take(&mut window.suppressed) }
    }
}

impl Hooks {
    pub(crate) fn verify_request(&mut self, peer: &Address) -> bool {
        self.verify_request.as_mut().is_none_or(|verify| verify(peer))
    }

    /// `verify_tls` on a finished handshake: `Err` says why the client is
    /// turned away.
    #[cfg(feature = "tls")]
    pub(crate) fn verify_tls(&mut self, peer: &Address, tls: &crate::tls::TlsInfo) -> Result<(), String> {
        self.verify_tls.as_mut().map_or(Ok(()), |verify| verify(peer, tls))
    }

    pub(crate) fn handle_timeout(&mut self) {
        if let Some(hook) = &mut self.handle_timeout {
            hook();
        }
    }

    /// After every pass of `serve_forever`: Python's `service_actions`, and
    /// the service manager's watchdog and status (feature `systemd`).
    pub(crate) fn passed(&mut self, _stats: impl FnOnce() -> Stats) {
        if let Some(hook) = &mut self.service_actions {
            hook();
        }
        #[cfg(feature = "systemd")]
        if let Some(notifier) = &mut self.systemd {
            notifier.passed(_stats());
        }
    }

    /// `serve_forever` starts: the socket listens and requests are taken.
    pub(crate) fn serving(&self) {
        #[cfg(feature = "systemd")]
        if let Some(notifier) = &self.systemd {
            notifier.ready();
        }
    }

    /// `serve_forever` was asked to stop.
    pub(crate) fn stopping(&self) {
        #[cfg(feature = "systemd")]
        if let Some(notifier) = &self.systemd {
            notifier.stopping();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_errors_are_counted_and_the_count_is_logged_with_the_next_window() {
        let limit = RateLimit::new(3);
        let t0 = Instant::now();
        let first: Vec<Admit> = (0..10).map(|_| limit.admit(t0)).collect();
        assert_eq!(
            first[..3],
            [Admit::Log { suppressed: 0 }, Admit::Log { suppressed: 0 }, Admit::Log { suppressed: 0 }]
        );
        assert!(first[3..].iter().all(|a| *a == Admit::Suppress), "{first:?}");
        // Still inside the first second: suppressed.
        assert_eq!(limit.admit(t0 + Duration::from_millis(999)), Admit::Suppress);
        // A new second: logged, with the 8 held back.
        assert_eq!(limit.admit(t0 + Duration::from_secs(1)), Admit::Log { suppressed: 8 });
        assert_eq!(limit.admit(t0 + Duration::from_secs(1)), Admit::Log { suppressed: 0 });
    }
}
