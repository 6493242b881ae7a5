//! The serving loop as a value: it owns the server socket, the registry and
//! the connections it holds (through [`Admission`]), the way back, the
//! waker, and the dispatcher its work goes to. `Server` holds one and
//! drives it a turn at a time (`turn.rs`); nothing of the loop lives in
//! `Server`'s own fields.
//!
//! One value on purpose: a pool whose idle workers take turns waiting on
//! the registry themselves (leader/followers) hands this value from leader
//! to leader behind its token, rather than sharing fifteen fields.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Instant;

use socket2::Socket;

use super::admission::{Admission, Lot};
use crate::deadline::Timeouts;
use crate::dispatch::{Dispatch, Dispatcher, Parking};
use crate::hooks::{ErrorHook, Hooks};
use crate::limits::Limiter;
use crate::options::Options;
use crate::runner::{Context, Scratch};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Counters, StatsHandle};
use crate::sys;
use crate::transport::{Kind, Transport};
use crate::{Address, Error, RequestHandler};

/// What a loop is made of, as the builder gathered it.
pub(crate) struct Parts<H> {
    pub handler: Arc<H>,
    pub options: Options,
    pub hooks: Hooks,
    pub on_error: ErrorHook,
    pub dispatch: Dispatch,
}

/// The serving loop of a server on transport `T` with handler `H`.
pub(crate) struct Loop<T: Transport, H: RequestHandler> {
    // Drop order matters: the socket closes first (no new clients wait in a
    // dead backlog), then the dispatcher waits for running requests.
    pub(super) socket: Arc<Socket>,
    pub(super) dispatcher: Dispatcher<H>,
    pub(super) ctx: Context<H>,
    pub(super) hooks: Hooks,
    pub(super) options: Options,
    /// How the loop is asked to stop (its flags), and its `Waker`: the
    /// wake-up socket it waits on beside the others.
    pub(super) shutdown: ShutdownHandle,
    /// Accepting is paused until then after a resource error.
    pub(super) paused_until: Option<Instant>,
    /// The registry, and the connections the loop holds: on their way from
    /// accept to a handler, ready and waiting for room, framed between
    /// messages, kept between requests, and the way back from workers.
    pub(super) admission: Admission,
    pub(super) packet: Vec<u8>,
    /// The reply buffer, and the fds and credentials of the current datagram.
    pub(super) scratch: Scratch,
    /// recvmmsg/sendmmsg buffers, for a sequential datagram server with
    /// `datagram_batch` above 1.
    pub(super) batch: Option<sys::DatagramBatch>,
    pub(super) transport: PhantomData<fn() -> T>,
}

impl<T: Transport, H: RequestHandler> Loop<T, H> {
    /// A loop on `socket`, serving as `server_address`, woken through `shutdown`.
    pub(crate) fn new(
        parts: Parts<H>,
        socket: Socket,
        server_address: Address,
        shutdown: ShutdownHandle,
    ) -> Result<Self, Error> {
        let Parts { handler, options, hooks, on_error, dispatch } = parts;
        let max_connections = if T::KIND == Kind::Stream { options.max_connections } else { None };
        let batch = {
            let n = options.datagram_batch_for(&server_address);
            (T::KIND == Kind::Datagram && n > 1 && dispatch == Dispatch::sequential())
                .then(|| sys::DatagramBatch::new(n, options.max_packet_size))
        };
        let counters = Arc::new(Counters::default());
        let parking = Self::parking(&dispatch);
        let lot = parking
            .as_ref()
            .map(|parking| Lot::new(Arc::clone(parking), options.framing.clone(), options.idle_timeout));
        let admission = Admission::new(shutdown.waker(), socket.as_fd(), lot).map_err(|source| Error::Bind {
            action: "create a readiness registry for",
            addr: server_address.clone(),
            source,
        })?;
        let dispatcher = Dispatcher::new(
            &dispatch,
            max_connections,
            options.drain_timeout,
            shutdown.clone(),
            (T::KIND == Kind::Stream).then(|| socket.as_raw_fd()),
            Arc::clone(&counters),
            Arc::clone(&on_error),
            parking.map(|parking| (parking, Arc::clone(admission.returns()) as _)),
        );
        let limiter = options.per_client.clone().map(|limits| Arc::new(Limiter::new(limits, Arc::clone(&counters))));
        let ctx = Context {
            handler,
            on_error,
            server_address: Arc::new(server_address),
            limiter,
            stats: StatsHandle::new(counters),
            timeouts: Timeouts { read: options.read_timeout, write: options.write_timeout },
            way_back: Arc::clone(admission.returns()) as _,
        };
        Ok(Loop {
            socket: Arc::new(socket),
            dispatcher,
            ctx,
            hooks,
            packet: vec![0; if T::KIND == Kind::Datagram { options.max_packet_size } else { 0 }],
            scratch: Scratch::default(),
            options,
            shutdown,
            paused_until: None,
            admission,
            batch,
            transport: PhantomData,
        })
    }

    /// Where a pool's idle workers wait with the connections parked between
    /// requests (framed ones, and kept ones): a stream server on a worker
    /// pool, where the platform has one (Linux). Without it (or if it
    /// cannot be made) those connections wait in the loop.
    fn parking(dispatch: &Dispatch) -> Option<Arc<Parking>> {
        if T::KIND != Kind::Stream || !dispatch.is_pool() {
            return None;
        }
        match Parking::new() {
            Ok(parking) => Some(Arc::new(parking)),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => None,
            Err(e) => {
                log::warn!(
                    "connections between requests wait in the serving loop: cannot make the workers' registry: {e}"
                );
                None
            }
        }
    }

    /// The server socket.
    pub(crate) fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }

    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    pub(crate) fn hooks(&mut self) -> &mut Hooks {
        &mut self.hooks
    }

    /// How the loop is asked to stop.
    pub(crate) fn shutdown(&self) -> &ShutdownHandle {
        &self.shutdown
    }

    pub(crate) fn stats(&self) -> &StatsHandle {
        &self.ctx.stats
    }

    pub(crate) fn server_address(&self) -> &Arc<Address> {
        &self.ctx.server_address
    }

    /// The address read back from the socket once it is bound.
    /// Its address is final (bound, port 0 read back; or it starts serving
    /// a socket it was given), so its counters are exported under it
    /// (feature `metrics`), to the recorder installed then; later calls
    /// change nothing. Done before serving, so no request pays for it.
    pub(crate) fn starting(&self) {
        #[cfg(feature = "metrics")]
        {
            // Labelled as its endpoint's scheme says.
            let transport = match (T::KIND == Kind::Stream, <T::Family as crate::transport::Family>::INET) {
                (true, true) => "tcp",
                (true, false) => "unix",
                (false, true) => "udp",
                (false, false) => "unix-datagram",
            };
            self.ctx.counters().export(&self.ctx.server_address, transport);
        }
    }

    pub(crate) fn set_server_address(&mut self, address: Address) {
        self.ctx.server_address = Arc::new(address);
        self.starting();
    }

    /// Requests in flight.
    pub(crate) fn active(&self) -> usize {
        self.dispatcher.active()
    }

    /// After a pass of `serve_forever`: `service_actions`, and the rest of
    /// the hooks that run between passes.
    pub(crate) fn passed(&mut self) {
        let Loop { hooks, ctx, .. } = self;
        hooks.passed(|| ctx.stats.get());
    }

    /// The loop's part of a close: it answers what clients already sent
    /// (see `finish_accepted`), closes every connection it still holds,
    /// each with a log line, and forgets its fds before they close.
    pub(crate) fn close(&mut self) {
        self.finish_accepted();
        self.admission.close_all();
        self.admission.forget(self.shutdown.waker().fd(), self.socket.as_fd());
    }

    /// The error that says the server's own socket failed.
    pub(super) fn server_error(&self, action: &'static str, source: io::Error) -> Error {
        Error::Server { action, addr: (*self.ctx.server_address).clone(), source }
    }
}
