//! The way from the kernel to a handler, and back: the serving loop.
//!
//! The loop is one value, [`Loop`] (event_loop.rs), which `Server` drives a
//! turn at a time. The trip of a request, as the calls go, written once for
//! each of its three shapes (as CPython's `BaseServer` docstring does):
//!
//! ```text
//! Every turn   Server::serve_forever / handle_request      (server.rs: Python's face)
//!                -> Loop::turn                               (turn.rs)
//!                     Admission::wait: one wait on the Registry: the wake-up socket
//!                     (why: shutdown::Wake), the server socket (armed while there is
//!                     room), every held connection with its State's interest; then
//!                     what was handed back (Returns), then what reported moves on,
//!                     and what passed its deadline (Deadlines) leaves
//!
//! A stream     accept -> admission::arrival    PROXY header (proxy_header.rs, peeked),
//!                                              verify_request, TLS handshake
//!                                              (tls_handshake.rs), silent until it
//!                                              speaks (idle_timeout)
//!                -> Dispatcher::stream         (dispatch/: where it runs)
//!                -> runner::serve_stream       (rfile, wfile, the handler; then close)
//!                <- Request::hand_back: runner's HandBack -> Returns -> admission::kept,
//!                   held until its next request, then dispatched again
//!
//! A framed     accept -> admission::arrival -> admission::framed::frame: read into
//! message        its Inbox, cut a message (framing.rs) -> Dispatcher::work (Answer)
//!                -> runner::serve_message, then the messages pipelined behind it, the
//!                   replies sent together -> Returns::hand_back_framed, re-armed by
//!                   the worker (no wake-up) -> frame again; on a worker pool, parked
//!                   in the Lot instead (admission/lot.rs), where the pool's idle workers
//!                   wait (dispatch/parking.rs) -> Resume: read and answered by the
//!                   worker its bytes woke -> parked again; the loop meets it only at
//!                   its deadline (Admission::on_expired) and at a close
//!
//! A datagram   recv (or recvmmsg) -> datagrams.rs: truncation, PROXY v2 header,
//!                verify_request -> Dispatcher::datagram -> runner::serve_datagram
//!                -> one reply datagram (or sendmmsg for a batch)
//! ```
//!
//! Nothing on the way waits for a client in a worker: every held connection
//! is a registered fd and a deadline.

mod admission;
mod datagrams;
mod deadlines;
mod event_loop;
mod registry;
mod turn;

pub(crate) use event_loop::{Loop, Parts};
pub(crate) use turn::READY_BUDGET;
