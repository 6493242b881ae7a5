//! The way from the kernel to a handler, and back.
//!
//! The trip of a request, as the calls go:
//!
//! ```text
//! Server::serve_forever / handle_request            (server.rs: Python's face)
//!   -> Server::turn                                 (turn.rs)
//!        Admission::wait       one wait on the Registry: the wake-up socket (why:
//!                              shutdown::Wake), the server socket (armed while
//!                              there is room), every held connection with its
//!                              stage's interest; then connections workers gave
//!                              back (Returns), then those that reported move on,
//!                              and those whose deadline (Deadlines) passed leave
//!        accept / recv         the server socket reported: take what is there
//!          -> Admission::accepted                     (datagrams.rs: the datagram path)
//!               PROXY header   (proxy/pending.rs: HeaderRead, peeked, never buffered)
//!               verify_request
//!               TLS handshake  (tls/handshake.rs: Handshake, non-blocking)
//!               idle           (idle_timeout: until the first byte)
//!               framed         (framing.rs: messages cut from what the loop read)
//!               -> ready: to the dispatcher now, or queued for room
//!        Dispatcher::stream / message / datagram     (dispatch/: where it runs)
//!          -> adapter::serve_stream / serve_message / serve_datagram
//!                                                    (adapter/: rfile, wfile, handler)
//!   <- Returns::give_back      a framed connection between messages, re-armed by
//!                              its worker; Returns::hand_back: a stream whose
//!                              handler called Request::hand_back, its unread
//!                              bytes with it. Both wait in the loop again.
//! ```
//!
//! Nothing on the way waits for a client in a worker: every stage is a
//! registered fd and a deadline.

mod admission;
mod datagrams;
mod deadlines;
mod event_loop;
mod registry;
mod turn;

pub(crate) use event_loop::{Loop, Parts};
pub(crate) use turn::READY_BUDGET;
