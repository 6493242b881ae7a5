//! Python's overridable server methods, as closures set on the builder.

use std::sync::Arc;

use crate::adapter::ErrorHook;
use crate::{Address, Error};

type Verify = Box<dyn FnMut(&Address) -> bool + Send>;
type Action = Box<dyn FnMut() + Send>;

/// The hooks a server calls. Those without `Sync` run only on the serving thread.
pub(crate) struct Hooks {
    pub verify_request: Option<Verify>,
    pub handle_error: ErrorHook,
    pub handle_timeout: Option<Action>,
    pub service_actions: Option<Action>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { verify_request: None, handle_error: Arc::new(log_error), handle_timeout: None, service_actions: None }
    }
}

/// The default `handle_error`: one log line naming the client, then serving goes on.
fn log_error(err: &Error) {
    log::error!("{err}");
}

impl Hooks {
    pub fn verify_request(&mut self, peer: &Address) -> bool {
        self.verify_request.as_mut().is_none_or(|verify| verify(peer))
    }

    pub fn handle_timeout(&mut self) {
        if let Some(hook) = &mut self.handle_timeout {
            hook();
        }
    }

    pub fn service_actions(&mut self) {
        if let Some(hook) = &mut self.service_actions {
            hook();
        }
    }
}
