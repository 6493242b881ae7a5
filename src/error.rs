//! The crate's one error type. Every variant names the address or path involved.

use std::io;
use std::path::PathBuf;

use crate::Address;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a server, each naming where it happened.
///
/// Errors about one request (a failed handler, a panic, a truncated datagram,
/// a reply that could not be sent) reach the server's `handle_error` hook and
/// never stop the server; errors from binding or the server's own socket are
/// returned to the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address given to `bind` did not resolve to any usable address.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as the caller wrote it.
        addr: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Creating, configuring, binding or listening on the server socket failed.
    #[error("cannot {action} {addr}: {source}")]
    Bind {
        /// What was being done: "bind", "listen on", "set options on", ...
        action: &'static str,
        /// The address the server was being set up on.
        addr: Address,
        /// The operating system's error.
        source: io::Error,
    },
    /// A Unix socket path is taken by something that is not a stale socket:
    /// a live server or a non-socket file. It is never deleted.
    #[error("cannot bind {path}: {reason}; it was left untouched")]
    PathInUse {
        /// The socket path.
        path: PathBuf,
        /// Why the path cannot be reused.
        reason: &'static str,
    },
    /// The server's own socket failed while waiting for or taking a request.
    #[error("server on {addr} failed to {action}: {source}")]
    Server {
        /// What was being done: "accept", "receive", "wait", ...
        action: &'static str,
        /// The server's address.
        addr: Address,
        /// The operating system's error.
        source: io::Error,
    },
    /// The server was used before it was bound and activated, or after it was closed.
    #[error("server on {addr} is {state}")]
    State {
        /// The server's address.
        addr: Address,
        /// "not activated", "closed", ...
        state: &'static str,
    },
    /// A handler returned an error, or I/O on the request failed.
    #[error("request from {peer} failed: {source}")]
    Request {
        /// The client's address.
        peer: Address,
        /// The handler's error, or one met running it (reading, flushing, sending).
        source: io::Error,
    },
    /// A handler panicked; the panic was contained to its request.
    #[error("handler panicked on request from {peer}: {message}")]
    Panic {
        /// The client's address.
        peer: Address,
        /// The panic message, when it was a string.
        message: String,
    },
    /// A request was taken but could not be started (no thread, no fork);
    /// its connection was closed.
    #[error("cannot {action} for request from {peer}: {source}; request dropped")]
    Dispatch {
        /// What failed: "start a handler thread", "fork", ...
        action: &'static str,
        /// The client's address.
        peer: Address,
        /// The operating system's error.
        source: io::Error,
    },
    /// A host-name lookup failed; `message` is the resolver's.
    #[error("cannot look up {query}: {message}")]
    Lookup {
        /// The name or address looked up.
        query: String,
        /// The resolver's error message.
        message: String,
    },
    /// A builder setting that cannot work was refused before anything was
    /// bound (a zero timeout, a pool of no workers, ...).
    #[error("invalid {option}: {problem}")]
    Config {
        /// The builder setting, by its method's name.
        option: &'static str,
        /// What is wrong with the value given.
        problem: &'static str,
    },
    /// A socket handed to the process (by a supervisor, socket activation or
    /// a restart) is not what the server serves, or not a socket at all.
    #[error("inherited fd {fd}: {problem}")]
    Inherited {
        /// The file descriptor number.
        fd: i32,
        /// What it is, against what the server wants.
        problem: String,
    },
    /// Looking up a user or group, or becoming them, failed.
    #[error("cannot serve as {who}: {source}")]
    Privileges {
        /// The user, group or ids involved.
        who: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A restart could not hand the sockets to a successor.
    #[error("restart: cannot start {what}: {source}")]
    Restart {
        /// The successor, or what it needed.
        what: String,
        /// What went wrong.
        source: io::Error,
    },
    /// An endpoint string (`tcp://HOST:PORT`, `unix:PATH`, ...) that does
    /// not parse.
    #[error("invalid endpoint {given:?}: {problem}")]
    Endpoint {
        /// The string as given.
        given: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A request still running when the drain timeout passed was cut: its
    /// connection shut down, or its child process killed. Counted once, in
    /// `Stats::cut_at_drain`.
    #[error("request from {peer} cut: still running when the drain timeout passed")]
    Cut {
        /// The client's address.
        peer: Address,
    },
    /// A framed connection sent more than its framing's maximum without a
    /// whole message; that connection was closed.
    #[error("message from {peer} is longer than the framing's {max}-byte maximum; connection closed")]
    MessageTooLong {
        /// The client's address.
        peer: Address,
        /// The framing's maximum.
        max: usize,
    },
    /// A datagram did not fit in `max_packet_size` bytes. It was not served.
    #[error("datagram from {peer} is larger than max_packet_size ({max} bytes); dropped")]
    Truncated {
        /// The sender's address.
        peer: Address,
        /// The configured `max_packet_size`.
        max: usize,
    },
    /// A connection or datagram from a trusted balancer came without the
    /// PROXY protocol header it must send, or with a malformed, oversized
    /// or late one. That one connection was closed (datagram dropped).
    #[error("PROXY protocol header from {peer} refused: {reason}")]
    ProxyHeader {
        /// The peer that sent it (the balancer).
        peer: Address,
        /// What was wrong.
        reason: String,
    },
    /// A connection's TLS handshake failed (a plaintext client, garbage, an
    /// unknown client certificate, a stall past the deadline). That one
    /// connection was closed.
    #[error("TLS with {peer} failed: {reason}")]
    Tls {
        /// The client.
        peer: Address,
        /// What went wrong, in rustls's words where it had them.
        reason: String,
    },
    /// A client `verify_tls` turned away after its TLS handshake (its
    /// certificate names someone not allowed in). That one connection was
    /// closed, after `close_notify`, before any handler ran.
    #[error("TLS client {peer} refused: {reason}")]
    TlsRefused {
        /// The client.
        peer: Address,
        /// Why, in `verify_tls`'s words.
        reason: String,
    },
    /// Signal handlers could not be installed
    /// ([`OnSignals::install`](crate::signals::OnSignals::install)).
    #[error("cannot install signal handlers: {source}")]
    Signals {
        /// Why.
        source: io::Error,
    },
    /// A TLS configuration could not be made from PEM
    /// ([`tls::ServerPem`](crate::tls::ServerPem)): a file that cannot be
    /// read, holds no certificate or key, or a key that does not match.
    #[error("TLS configuration: {what}: {problem}")]
    TlsConfig {
        /// The file (or the part, for PEM given as bytes) at fault.
        what: String,
        /// What was wrong with it.
        problem: String,
    },
}

impl Error {
    /// The client address this error is about, if it concerns one request.
    pub fn client_address(&self) -> Option<&Address> {
        match self {
            Error::Request { peer, .. }
            | Error::Panic { peer, .. }
            | Error::Cut { peer }
            | Error::MessageTooLong { peer, .. }
            | Error::Truncated { peer, .. }
            | Error::ProxyHeader { peer, .. }
            | Error::Tls { peer, .. }
            | Error::TlsRefused { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// The underlying I/O error, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Resolve { source, .. }
            | Error::Bind { source, .. }
            | Error::Server { source, .. }
            | Error::Request { source, .. }
            | Error::Dispatch { source, .. }
            | Error::Signals { source } => Some(source),
            _ => None,
        }
    }
}
