//! Thread per request (Python's `ThreadingMixIn`).

use std::io;
use std::thread::{self, JoinHandle};

use super::config::Threading;

/// What failed, for the error report, when no thread could be started.
pub(crate) const SPAWN: &str = "start a handler thread";

pub(crate) struct Threads {
    config: Threading,
    /// Handles of threads `close` must wait for; finished ones are dropped
    /// as the loop turns, so the list never outgrows the live threads.
    handles: Vec<JoinHandle<()>>,
}

impl Threads {
    pub(super) fn new(config: Threading) -> Self {
        Threads { config, handles: Vec::new() }
    }

    pub(super) fn spawn(&mut self, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.reap();
        let mut builder = thread::Builder::new().name("socketserver-handler".into());
        if let Some(bytes) = self.config.stack_size {
            builder = builder.stack_size(bytes);
        }
        let handle = builder.spawn(work)?;
        if self.config.block_on_close && !self.config.daemon_threads {
            self.handles.push(handle);
        }
        Ok(())
    }

    pub(super) fn reap(&mut self) {
        self.handles.retain(|handle| !handle.is_finished());
    }

    pub(super) fn close(&mut self) {
        for handle in self.handles.drain(..) {
            // A panic was already reported to handle_error by the runner.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn handles_of_finished_threads_are_dropped_as_new_ones_start() {
        let mut threads = Threads::new(Threading::new());
        let (done, finished) = mpsc::channel();
        for _ in 0..100 {
            let done = done.clone();
            threads.spawn(move || done.send(()).unwrap()).unwrap();
            finished.recv().unwrap();
        }
        assert!(threads.handles.len() < 10, "{} handles held", threads.handles.len());
        threads.close();
        assert!(threads.handles.is_empty());
    }

    #[test]
    fn daemon_threads_are_not_tracked() {
        let mut threads = Threads::new(Threading::new().daemon_threads(true));
        threads.spawn(|| std::thread::sleep(std::time::Duration::from_millis(50))).unwrap();
        assert!(threads.handles.is_empty());
    }
}
