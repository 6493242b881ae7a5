//! Python's `socketserver`, for Rust: write one [`RequestHandler`], serve it
//! over TCP, UDP, Unix stream or Unix datagram sockets.
//!
//! The server loop, binding, accepting, dispatching and shutdown are written
//! once. A handler never sees a socket: it reads the request from
//! [`Request::rfile`] and writes the answer to [`Request::wfile`], as
//! Python's `StreamRequestHandler` and `DatagramRequestHandler` do, so the
//! same handler runs unchanged over every transport.
//!
//! ```
//! use std::io::{self, BufRead, Write};
//! use std::net::TcpStream;
//! use socketserver::{Request, RequestHandler, TcpServer};
//!
//! /// Answers each line with its length.
//! struct LineLength;
//!
//! impl RequestHandler for LineLength {
//!     fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
//!         let mut line = String::new();
//!         while req.rfile.read_line(&mut line)? > 0 {
//!             writeln!(req.wfile, "{}", line.trim_end().len())?;
//!             line.clear();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut server = TcpServer::bind("127.0.0.1:0", LineLength)?;
//!     let addr = server.server_address().as_inet().unwrap();
//!     let stop = server.shutdown_handle();
//!     let serving = std::thread::spawn(move || server.serve_forever());
//!
//!     let mut client = TcpStream::connect(addr)?;
//!     client.write_all(b"hello\nsocketserver\n")?;
//!     client.shutdown(std::net::Shutdown::Write)?;
//!     let answer = io::read_to_string(client)?;
//!     assert_eq!(answer, "5\n12\n");
//!
//!     stop.shutdown();
//!     serving.join().unwrap()?;
//!     Ok(())
//! }
//! ```
//!
//! # Map of the crate
//!
//! - [`Server`] owns the loop and Python's lifecycle: [`Server::serve_forever`],
//!   [`Server::handle_request`], [`Server::server_close`], [`Server::server_address`].
//! - [`ServerBuilder`] sets Python's options and hooks (`verify_request`,
//!   `handle_error`, `handle_timeout`, `service_actions`).
//! - [`transport`] holds the four transports; [`Dispatch`] says where requests run.
//! - [`ShutdownHandle`] stops a server from any thread, at once.
//! - [`ServerGroup`] serves one address from several SO_REUSEPORT sockets and threads.
//! - [`Error`] is the one error type; every variant names an address or path.
//! - [`host`] finds this machine's name and addresses, for serving beyond loopback.
//! - Optional features (off by default): `tracing` (a span per request),
//!   `systemd` (socket activation, sd_notify, restarts: `systemd`),
//!   `proxy-protocol` (the client's address behind a load balancer: `proxy`),
//!   `tls` (TLS on rustls for stream servers: `tls`).

#![deny(missing_docs, missing_debug_implementations, unreachable_pub, unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_errors_doc)]

mod address;
mod ancillary;
mod any;
mod builder;
mod deadline;
mod dispatch;
mod error;
#[cfg(feature = "metrics")]
mod exported;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod handler;
mod handler_io;
mod hooks;
pub mod host;
mod limits;
mod options;
pub mod privileges;
#[cfg(feature = "proxy-protocol")]
pub mod proxy;
mod runner;
mod server;
mod serving;
mod shutdown;
pub mod signals;
mod stats;
#[allow(unsafe_code, reason = "the crate's one home of unsafe code, each block with a SAFETY note")]
mod sys;
#[cfg(feature = "systemd")]
pub mod systemd;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
mod waker;

pub use address::Address;
pub use ancillary::Credentials;
pub use any::{AnyServer, Endpoint};
pub use builder::ServerBuilder;
pub use dispatch::{Dispatch, Forking, Threading, WorkerPool};
pub use error::{Error, Result};
pub use framing::{Framing, Piece, Split};
pub use group::ServerGroup;
pub use handler::{PerRequest, PerRequestHandler, Request, RequestHandler};
pub use handler_io::{Reader, Writer};
pub use limits::{PerClient, WhenFull};
pub use options::DEFAULT_MAX_PACKET_SIZE;
pub use server::Server;
pub use shutdown::ShutdownHandle;
/// socket2, whose [`SockRef`](socket2::SockRef) and [`Socket`](socket2::Socket) this crate's API hands out.
pub use socket2;
pub use stats::{Stats, StatsHandle};
pub use transport::Kind;

/// A TCP server (Python's `TCPServer`).
pub type TcpServer<H> = Server<transport::TcpTransport, H>;
/// A UDP server (Python's `UDPServer`).
pub type UdpServer<H> = Server<transport::UdpTransport, H>;
/// A Unix stream socket server (Python's `UnixStreamServer`).
pub type UnixStreamServer<H> = Server<transport::UnixStreamTransport, H>;
/// A Unix datagram socket server (Python's `UnixDatagramServer`).
pub type UnixDatagramServer<H> = Server<transport::UnixDatagramTransport, H>;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
