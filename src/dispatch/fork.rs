//! A child process per request (Python's `ForkingMixIn`), reaping only its
//! own children.

use std::io;
use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capacity::{ABORT_CHECK, Slot};
use super::config::Forking;
use crate::hooks::ErrorHook;
use crate::runner::Outcome;
use crate::stats::Counters;
use crate::sys::{self, ChildExit};
use crate::waker::Waker;
use crate::{Address, Error};

/// How often a fork server with live children looks for exited ones on its
/// own. A child announces its exit through the wake-up socket just before
/// it exits; this catches the ones not yet gone then, or killed by a signal.
pub(crate) const RECHECK: Duration = Duration::from_millis(50);

struct Child {
    pid: libc::pid_t,
    peer: Address,
    _slot: Slot,
    /// A stream's client under per-client limits, counted open until the
    /// child exits.
    _client: Option<Box<crate::limits::Client>>,
    /// Killed at the drain deadline: counted and reported then, so its
    /// exit is not counted again.
    cut: bool,
}

pub(crate) struct Fork {
    config: Forking,
    children: Vec<Child>,
    waker: Waker,
    /// A stream server's listening socket, which children close at once.
    listener: Option<RawFd>,
    counters: Arc<Counters>,
    on_error: ErrorHook,
}

impl Fork {
    pub(super) fn new(
        config: Forking,
        waker: Waker,
        listener: Option<RawFd>,
        counters: Arc<Counters>,
        on_error: ErrorHook,
    ) -> Self {
        Fork { config, children: Vec::new(), waker, listener, counters, on_error }
    }

    /// Forks; the child runs `serve` and exits with its outcome, the parent
    /// records the child, with what it keeps until the child exits (its
    /// slot, its client), and returns (dropping its copies of the request).
    pub(super) fn run(
        &mut self,
        peer: Address,
        (slot, client): (Slot, Option<Box<crate::limits::Client>>),
        serve: impl FnOnce() -> Outcome,
    ) -> Result<(), (&'static str, Address, io::Error)> {
        let waker = &self.waker;
        let child = sys::fork_child(self.listener, || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(serve)).unwrap_or(Outcome::Panicked);
            waker.wake_from_child();
            outcome as i32
        });
        match child {
            Ok(pid) => {
                self.children.push(Child { pid, peer, _slot: slot, _client: client, cut: false });
                Ok(())
            }
            Err(e) => Err(("fork", peer, e)),
        }
    }

    /// Reaps the children that have exited, without blocking.
    pub(super) fn reap(&mut self) {
        let counters = &self.counters;
        self.children.retain(|child| !collect(child, false, counters));
    }

    pub(super) fn has_children(&self) -> bool {
        !self.children.is_empty()
    }

    /// Waits for the children as `block_on_close` says. With a drain
    /// `deadline`, children still running then (or at once, once
    /// `aborted` says so) are killed, each with a log line.
    pub(super) fn close(&mut self, deadline: Option<Instant>, aborted: impl Fn() -> bool) {
        if let Some(deadline) = deadline {
            loop {
                self.reap();
                let left = deadline.saturating_duration_since(Instant::now());
                if self.children.is_empty() || left.is_zero() || aborted() {
                    break;
                }
                std::thread::sleep(left.min(RECHECK).min(ABORT_CHECK));
            }
            for child in &mut self.children {
                log::warn!("drain timeout passed: killing child {} serving {}", child.pid, child.peer);
                if let Err(e) = sys::kill(child.pid) {
                    log::error!("cannot kill child {} serving {}: {e}", child.pid, child.peer);
                }
                child.cut = true;
                Counters::add(&self.counters.cut_at_drain, 1);
                (self.on_error)(&Error::Cut { peer: child.peer.clone() });
            }
        }
        if self.config.block_on_close || deadline.is_some() {
            for child in self.children.drain(..) {
                collect(&child, true, &self.counters);
            }
        }
    }
}

/// Waits on one child (`block`: until it exits); true once it is gone. Its
/// exit status is counted as the request's outcome (the child's own counts
/// died with it).
fn collect(child: &Child, block: bool, counters: &Counters) -> bool {
    match sys::reap(child.pid, block) {
        Ok(None) => false,
        Ok(Some(_)) if child.cut => true,
        Ok(Some(exit)) => {
            let outcome = match exit {
                ChildExit::Code(code) => Outcome::from_exit_code(code),
                ChildExit::Signal(_) => Outcome::Failed,
            };
            outcome.count(counters);
            let how = match exit {
                ChildExit::Code(0) => return true,
                ChildExit::Code(1) => "exit status 1 (handler failed)".to_string(),
                ChildExit::Code(2) => "exit status 2 (handler panicked)".to_string(),
                ChildExit::Code(3) => "exit status 3 (timed out)".to_string(),
                ChildExit::Code(code) => format!("exit status {code}"),
                ChildExit::Signal(signal) => format!("signal {signal}"),
            };
            log::warn!("child {} serving {} ended with {how}", child.pid, child.peer);
            true
        }
        Err(e) => {
            log::error!("cannot reap child {} serving {}: {e}", child.pid, child.peer);
            true
        }
    }
}
