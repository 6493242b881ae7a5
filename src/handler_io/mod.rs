//! What a handler reads and writes through, and nothing of who runs it:
//! the connection on its way ([`Incoming`]), the stream a handler holds
//! ([`Conn`]), and `rfile`/`wfile` ([`Reader`], [`Writer`]) over a stream,
//! a datagram or a framed message.

mod conn;
mod incoming;
mod rw;

pub(crate) use conn::{Conn, STREAM_BUFFER};
pub(crate) use incoming::{ConnectionState, Incoming, close_stream, close_unserved};
pub use rw::{Reader, Writer};
