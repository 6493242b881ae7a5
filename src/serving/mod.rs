//! The way from the kernel to a handler.
//!
//! The trip of a request, as the calls go:
//!
//! ```text
//! Server::serve_forever / handle_request            (server.rs: Python's face)
//!   -> Server::turn
//!        Admission::wait       one wait on the Registry: the wake-up socket, the
//!                              server socket (armed while there is room), every held
//!                              connection with its stage's interest; then the
//!                              connections that reported move on, and those whose
//!                              deadline (Deadlines) passed leave
//!        accept / recv         the server socket reported: take what is there
//!          -> Admission::accepted
//!               PROXY header   (proxy/pending.rs: HeaderRead, peeked, never buffered)
//!               verify_request
//!               TLS handshake  (tls/handshake.rs: Handshake, non-blocking)
//!               idle           (idle_timeout: until the first byte)
//!               -> ready: to the dispatcher now, or queued for room
//!        Dispatcher::stream / datagram               (dispatch/: where it runs)
//!          -> adapter::serve_stream / serve_datagram (adapter/: rfile, wfile, handler)
//! ```
//!
//! Nothing on the way waits for a client in a worker: every stage is a
//! registered fd and a deadline.

mod admission;
mod deadlines;
mod framing;
mod registry;

#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
pub(crate) use admission::Step;
pub(crate) use admission::{Admission, Admitted};
pub(crate) use framing::{After, Framed, Inbox, Returns};
pub use framing::{Framing, Split};
