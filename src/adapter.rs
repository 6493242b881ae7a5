//! Stream and datagram adapters: turn a connection or a packet into the
//! `rfile`/`wfile` pair a handler sees, run the handler, and deliver the answer.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::Shutdown;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use socket2::{SockAddr, Socket};

use crate::handler::{Kind, Request, RequestHandler};
use crate::{Address, Error};

/// Size of a stream connection's read and write buffers.
const STREAM_BUFFER: usize = 8 * 1024;

/// Called with every error that concerns one request (Python's `handle_error`).
pub(crate) type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;

/// What a request needs from its server; cheap to clone into worker threads.
pub(crate) struct Context<H> {
    pub handler: Arc<H>,
    pub on_error: ErrorHook,
    pub server_address: Arc<Address>,
}

impl<H> Clone for Context<H> {
    fn clone(&self) -> Self {
        Context {
            handler: Arc::clone(&self.handler),
            on_error: Arc::clone(&self.on_error),
            server_address: Arc::clone(&self.server_address),
        }
    }
}

/// The reading half of a request: the connection, or the one datagram.
///
/// On a stream, reading when no input is buffered first flushes what the
/// handler wrote to `wfile`. A request/response handler therefore never
/// deadlocks waiting for a client that waits for its answer, while answers to
/// pipelined requests still leave in as few sends as possible.
pub struct Reader<'a> {
    source: Source<'a>,
}

enum Source<'a> {
    Stream { input: BufReader<&'a Socket>, conn: &'a Conn },
    Datagram(&'a [u8]),
}

impl Reader<'_> {
    fn flush_before_blocking(&mut self) -> io::Result<()> {
        match &mut self.source {
            Source::Stream { input, conn } if input.buffer().is_empty() => conn.flush(),
            _ => Ok(()),
        }
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.flush_before_blocking()?;
        match &mut self.source {
            Source::Stream { input, .. } => input.read(buf),
            Source::Datagram(packet) => packet.read(buf),
        }
    }
}

impl BufRead for Reader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.flush_before_blocking()?;
        match &mut self.source {
            Source::Stream { input, .. } => input.fill_buf(),
            Source::Datagram(packet) => Ok(packet),
        }
    }

    fn consume(&mut self, amount: usize) {
        match &mut self.source {
            Source::Stream { input, .. } => input.consume(amount),
            Source::Datagram(packet) => packet.consume(amount),
        }
    }
}

/// The writing half of a request: buffered onto the connection (stream), or
/// collected into the one reply datagram (datagram).
///
/// A stream writer is flushed when the handler reads and no input is
/// buffered, when the buffer fills, and after `finish`. A datagram reply is
/// sent once, after `finish`, and only if something was written.
pub struct Writer<'a> {
    sink: Sink<'a>,
}

enum Sink<'a> {
    Stream(&'a Conn),
    Datagram(&'a mut Vec<u8>),
}

impl Write for Writer<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(data)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Stream(conn) => conn.write_vectored(bufs),
            Sink::Datagram(reply) => reply.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stream(conn) => conn.flush(),
            Sink::Datagram(_) => Ok(()),
        }
    }
}

/// A stream connection with its output buffer. The buffer sits beside the
/// socket rather than in a `BufWriter` so that the reader can flush it.
pub(crate) struct Conn {
    socket: Socket,
    out: RefCell<Vec<u8>>,
}

impl Conn {
    fn new(socket: Socket) -> Self {
        Conn { socket, out: RefCell::new(Vec::with_capacity(STREAM_BUFFER)) }
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut out = self.out.borrow_mut();
        if out.len() + total > STREAM_BUFFER {
            send_all(&self.socket, &mut out)?;
        }
        if total >= STREAM_BUFFER {
            // Too big to be worth copying: straight to the kernel, in one writev.
            return (&self.socket).write_vectored(bufs);
        }
        for buf in bufs {
            out.extend_from_slice(buf);
        }
        Ok(total)
    }

    fn flush(&self) -> io::Result<()> {
        send_all(&self.socket, &mut self.out.borrow_mut())
    }
}

fn send_all(socket: &Socket, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let sent = (&*socket).write_all(out);
    // After a failed send the connection is unusable; keeping the bytes would
    // only make `finish` fail the same way again.
    out.clear();
    sent
}

/// How a request ended (a forked child's exit status says the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Served = 0,
    Failed = 1,
    Panicked = 2,
}

/// Why a handler did not complete.
enum Failure {
    Io(io::Error),
    Panic(String),
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Io(_) => Outcome::Failed,
            Failure::Panic(_) => Outcome::Panicked,
        }
    }

    fn into_error(self, peer: &Address) -> Error {
        match self {
            Failure::Io(source) => Error::Request { peer: peer.clone(), source },
            Failure::Panic(message) => Error::Panic { peer: peer.clone(), message },
        }
    }
}

/// Python's `BaseRequestHandler.__init__`: setup, then handle, then finish
/// even if handle failed. A panic is caught here, so it costs one request.
fn run_handler<H: RequestHandler>(handler: &H, req: &mut Request<'_>) -> Result<(), Failure> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        handler.setup(req)?;
        let handled = handler.handle(req);
        let finished = handler.finish(req);
        handled.and(finished)
    }));
    match outcome {
        Ok(result) => result.map_err(Failure::Io),
        Err(payload) => Err(Failure::Panic(panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Serves one stream connection, then shuts down its write half and closes
/// it (Python's `shutdown_request`). Every failure reaches `on_error`.
pub(crate) fn serve_stream<H: RequestHandler>(ctx: &Context<H>, socket: Socket, peer: Address) -> Outcome {
    let conn = Conn::new(socket);
    let outcome = {
        let input = BufReader::with_capacity(STREAM_BUFFER, &conn.socket);
        let mut req = Request::new(
            Reader { source: Source::Stream { input, conn: &conn } },
            Writer { sink: Sink::Stream(&conn) },
            &peer,
            &ctx.server_address,
            Kind::Stream,
        );
        run_handler(&*ctx.handler, &mut req)
    };
    // As Python's StreamRequestHandler.finish, what was written is flushed
    // even when handle failed, but never after a panic.
    let flushed = match &outcome {
        Err(Failure::Panic(_)) => Ok(()),
        _ => conn.flush(),
    };
    let result = match (outcome, flushed) {
        (Err(failure), _) => report(ctx, failure, &peer),
        (Ok(()), Err(source)) => report(ctx, Failure::Io(source), &peer),
        (Ok(()), Ok(())) => Outcome::Served,
    };
    close_stream(conn.socket);
    result
}

fn report<H>(ctx: &Context<H>, failure: Failure, peer: &Address) -> Outcome {
    let outcome = failure.outcome();
    (ctx.on_error)(&failure.into_error(peer));
    outcome
}

/// Shuts down the write half so the client sees a clean end of stream, then
/// closes the socket when it drops.
pub(crate) fn close_stream(socket: Socket) {
    // The peer may already be gone; the close that follows still releases the fd.
    let _ = socket.shutdown(Shutdown::Write);
}

/// Serves one datagram and sends what the handler wrote back to the sender as
/// one datagram. `reply` is the caller's reusable buffer.
pub(crate) fn serve_datagram<H: RequestHandler>(
    ctx: &Context<H>,
    socket: &Socket,
    packet: &[u8],
    peer: &Address,
    reply_to: &SockAddr,
    reply: &mut Vec<u8>,
) -> Outcome {
    reply.clear();
    let outcome = {
        let mut req = Request::new(
            Reader { source: Source::Datagram(packet) },
            Writer { sink: Sink::Datagram(reply) },
            peer,
            &ctx.server_address,
            Kind::Datagram,
        );
        run_handler(&*ctx.handler, &mut req)
    };
    // As in Python's DatagramRequestHandler.finish, what was written is sent
    // even when handle failed, but never after a panic.
    let sent = match &outcome {
        Err(Failure::Panic(_)) => Ok(()),
        _ => send_reply(socket, reply, peer, reply_to),
    };
    let result = match outcome {
        Err(failure) => report(ctx, failure, peer),
        Ok(()) => Outcome::Served,
    };
    match sent {
        Err(source) => report(ctx, Failure::Io(source), peer),
        Ok(()) => result,
    }
}

fn send_reply(socket: &Socket, reply: &[u8], peer: &Address, reply_to: &SockAddr) -> io::Result<()> {
    if reply.is_empty() {
        return Ok(());
    }
    if *peer == Address::Unnamed {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "cannot reply: the sender's Unix socket has no name (bind the client to a path)",
        ));
    }
    let sent = socket.send_to(reply, reply_to)?;
    if sent < reply.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("reply datagram cut to {sent} of {} bytes", reply.len()),
        ));
    }
    Ok(())
}
