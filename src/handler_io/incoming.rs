//! A connection on its way to a handler or between two of them, and how a
//! stream the server will not serve on is closed.

use std::io;
use std::net::Shutdown;
use std::time::Instant;

use socket2::Socket;

use crate::Address;
use crate::framing::Inbox;

/// An accepted connection on its way to a handler.
pub(crate) struct Incoming {
    pub socket: Socket,
    pub peer: Address,
    /// When the whole connection must be over, however it trickles.
    pub deadline: Option<Instant>,
    /// What a trusted balancer said about the connection.
    #[cfg(feature = "proxy-protocol")]
    pub proxy: Option<Box<crate::proxy::ProxyHeader>>,
    /// The TLS session, once the handshake is done.
    #[cfg(feature = "tls")]
    pub tls: Option<Box<crate::tls::Session>>,
    /// What the handler keeps for the connection
    /// (`Request::connection_state`), from one framed message to the next,
    /// or one request to the next when its handler hands it back.
    pub state: ConnectionState,
    /// What the client sent that an earlier handler read off the socket
    /// (into its reader's buffer) but did not handle: a connection handed
    /// back (`Request::hand_back`) takes it to its next request.
    pub buffered: Vec<u8>,
    /// Its socket's last read (a handler's, or a look for its next request)
    /// took every byte that waited, and not its end: parked edge-triggered,
    /// it needs no re-arm (see `serving/admission/lot.rs`).
    pub emptied: bool,
    /// Its client under per-client limits: counted open until this drops.
    pub client: Option<Box<crate::limits::Client>>,
}

impl Incoming {
    /// A connection just accepted from `peer`.
    pub(crate) fn new(socket: Socket, peer: Address, deadline: Option<Instant>) -> Self {
        Incoming {
            socket,
            peer,
            deadline,
            #[cfg(feature = "proxy-protocol")]
            proxy: None,
            #[cfg(feature = "tls")]
            tls: None,
            buffered: Vec::new(),
            emptied: false,
            state: None,
            client: None,
        }
    }
}

/// What one read of a connection found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadNow {
    /// The client closed its side: what was read is all there is.
    pub ended: bool,
    /// It took every byte that waited in the socket (it asked for more than
    /// came), so only bytes that come later can report the socket ready
    /// again: what an edge-triggered wait needs to know before it waits.
    /// Not known through TLS, whose session reads a record at a time.
    pub emptied: bool,
}

impl Incoming {
    /// Whether its client, under per-client limits, is over its rate for
    /// one more request now. A worker asks before answering one it read
    /// itself; if not over, the request's token is taken; if over, nothing
    /// is reported: the loop, which holds the request back, reports it.
    pub(crate) fn over_rate(&self) -> bool {
        over_rate(self.client.as_deref())
    }

    /// Reads what the connection has now, without waiting, onto the end of
    /// `inbox` (through its TLS session, if it has one): at most one read's
    /// worth, so what a client pipelines stays in its socket (or its TLS
    /// records) until the messages before it are handled. `WouldBlock` when
    /// nothing came. The loop and a worker answering a pipelining client
    /// read the same way.
    pub(crate) fn read_now(&self, inbox: &mut Inbox) -> io::Result<ReadNow> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let ended = tls.read_now(&self.socket, inbox.room())?;
            return Ok(ReadNow { ended, emptied: ended });
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = crate::sys::recv_now(&self.socket, &mut chunk, false)?;
        inbox.push(&chunk[..n]);
        Ok(ReadNow { ended: n == 0, emptied: n < chunk.len() })
    }
}

/// Whether `client` (none: no per-client limits) is over its rate for one
/// more request now; if not, that request's token is taken.
pub(crate) fn over_rate(client: Option<&crate::limits::Client>) -> bool {
    client.is_some_and(|client| client.message(Instant::now(), false).is_err())
}

/// What `Request::connection_state` keeps for a connection.
pub(crate) type ConnectionState = Option<Box<dyn std::any::Any + Send>>;

/// Shuts down the write half so the client sees a clean end of stream, then
/// closes the socket when it drops.
pub(crate) fn close_stream(socket: Socket) {
    // The peer may already be gone; the close that follows still releases the fd.
    let _ = socket.shutdown(Shutdown::Write);
}

/// Closes a connection the server took but will not serve because it is
/// closing, with the log line that says so.
pub(crate) fn close_unserved(socket: Socket, peer: &Address) {
    log::warn!("server closing: connection from {peer} closed before it was served");
    close_stream(socket);
}
