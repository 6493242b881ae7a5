//! Dispatchers: where a request runs once the server has taken it.

use std::sync::Arc;

use socket2::{SockAddr, Socket};

use crate::adapter::{self, Context};
use crate::{Address, RequestHandler};

/// How a server runs its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatch {
    /// One request at a time on the serving thread (Python's plain servers).
    #[default]
    Sequential,
}

/// The running state of a [`Dispatch`] mode.
pub(crate) enum Dispatcher {
    Sequential,
}

impl Dispatcher {
    pub fn new(mode: &Dispatch) -> Self {
        match mode {
            Dispatch::Sequential => Dispatcher::Sequential,
        }
    }

    /// Runs a stream request; the connection is closed when it is done.
    pub fn stream<H: RequestHandler>(&mut self, ctx: &Context<H>, conn: Socket, peer: Address) {
        match self {
            Dispatcher::Sequential => adapter::serve_stream(ctx, conn, peer),
        }
    }

    /// Runs a datagram request. `reply` is a reusable buffer of the server's.
    pub fn datagram<H: RequestHandler>(
        &mut self,
        ctx: &Context<H>,
        socket: &Arc<Socket>,
        packet: &[u8],
        peer: Address,
        reply_to: &SockAddr,
        reply: &mut Vec<u8>,
    ) {
        match self {
            Dispatcher::Sequential => adapter::serve_datagram(ctx, socket, packet, &peer, reply_to, reply),
        }
    }
}
