//! The one trait users implement, and the request it is given.

use std::io;

use crate::Address;
use crate::adapter::{Reader, Writer};

/// Serves one request: Python's `BaseRequestHandler`, with `setup`, `handle`
/// and `finish`.
///
/// The handler never sees a socket. It reads the request from
/// [`Request::rfile`] and writes the answer to [`Request::wfile`], so the same
/// handler serves TCP, UDP and both kinds of Unix socket unchanged.
///
/// `finish` runs whenever `setup` succeeded, even when `handle` failed, as in
/// Python. An error from any of them reaches the server's `handle_error` hook
/// with the client's address; the server keeps serving.
///
/// A closure `Fn(&mut Request) -> io::Result<()>` is a handler too:
///
/// ```
/// use std::io::{BufRead, Write};
/// use socketserver::{Request, RequestHandler};
///
/// fn shout() -> impl RequestHandler {
///     |req: &mut Request<'_>| {
///         let mut line = String::new();
///         req.rfile.read_line(&mut line)?;
///         req.wfile.write_all(line.to_uppercase().as_bytes())
///     }
/// }
/// # let _ = shout();
/// ```
pub trait RequestHandler: Send + Sync + 'static {
    /// Runs before [`handle`](Self::handle). If it fails, neither `handle` nor
    /// `finish` runs.
    fn setup(&self, _req: &mut Request<'_>) -> io::Result<()> {
        Ok(())
    }

    /// Serves the request.
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()>;

    /// Runs after [`handle`](Self::handle), even when it failed. The writer is
    /// flushed (stream) or the reply sent (datagram) after this returns.
    fn finish(&self, _req: &mut Request<'_>) -> io::Result<()> {
        Ok(())
    }
}

impl<F> RequestHandler for F
where
    F: Fn(&mut Request<'_>) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        self(req)
    }
}

/// Whether a request is a stream connection or a single datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A connection on a TCP or Unix stream socket: `rfile` reads until the
    /// client shuts down its side, `wfile` writes back on the connection.
    Stream,
    /// One datagram on a UDP or Unix datagram socket: `rfile` reads that one
    /// packet, and whatever is written to `wfile` is sent back as one datagram.
    Datagram,
}

/// One request as the handler sees it: a reader, a writer and two addresses.
///
/// `rfile` and `wfile` are public fields, so both can be borrowed at once.
pub struct Request<'a> {
    /// The request's bytes: the connection (stream) or the packet (datagram).
    pub rfile: Reader<'a>,
    /// Where the answer goes: the connection (stream) or the reply datagram.
    pub wfile: Writer<'a>,
    client: &'a Address,
    server: &'a Address,
    kind: Kind,
}

impl<'a> Request<'a> {
    pub(crate) fn new(
        rfile: Reader<'a>,
        wfile: Writer<'a>,
        client: &'a Address,
        server: &'a Address,
        kind: Kind,
    ) -> Self {
        Request { rfile, wfile, client, server, kind }
    }

    /// The client's address (Python's `client_address`).
    pub fn client_address(&self) -> &'a Address {
        self.client
    }

    /// The address the server is bound to (Python's `server.server_address`).
    pub fn server_address(&self) -> &'a Address {
        self.server
    }

    /// Whether this request is a stream connection or one datagram.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}
