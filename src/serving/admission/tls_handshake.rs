//! Connections whose TLS handshake is under way, driven by the serving loop
//! without blocking: each step reads what arrived, lets rustls answer, and
//! sends what it can. No worker is held; a deadline bounds the whole
//! handshake.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};
use socket2::Socket;

use super::step::Step;
use crate::handler_io::Incoming;
use crate::sys;
use crate::tls::Session;

/// A connection's handshake under way.
pub(crate) struct Handshake {
    /// Boxed: a session is large, and a held connection should not be.
    tls: Box<ServerConnection>,
    /// Bytes have come from the client.
    heard: bool,
}

impl Handshake {
    /// A handshake to run with `config`.
    pub(crate) fn start(config: &Arc<ServerConfig>) -> Result<Handshake, String> {
        match ServerConnection::new(Arc::clone(config)) {
            Ok(tls) => Ok(Handshake { tls: Box::new(tls), heard: false }),
            Err(e) => Err(format!("cannot start a TLS session: {e}")),
        }
    }

    /// Whether a handshake message waits to go out: then room to send is
    /// worth a wake-up, not only input.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Moves the handshake as far as the socket allows. `None`: waiting for
    /// the client, or for room to send.
    pub(crate) fn step(&mut self, conn: &Incoming) -> Option<Step> {
        step(self, &conn.socket)
    }

    /// The session, once through: the connection reads and writes through it.
    pub(crate) fn into_session(self) -> Session {
        Session::new(*self.tls)
    }
}

/// Moves a handshake as far as the socket allows. `None`: waiting for the
/// client, or for room to send.
fn step(s: &mut Handshake, socket: &Socket) -> Option<Step> {
    let mut wire = NonBlocking(socket);
    loop {
        while s.tls.wants_write() {
            match s.tls.write_tls(&mut wire) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Step::Failed(format!("sending the TLS handshake failed: {e}"))),
            }
        }
        if !s.tls.is_handshaking() {
            return Some(Step::Through);
        }
        let first = !s.heard;
        match s.tls.read_tls(&mut wire) {
            Ok(0) if first => return Some(Step::Gone),
            Ok(0) => return Some(Step::Failed("the client closed the connection during the TLS handshake".into())),
            Ok(_) => s.heard = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(Step::Failed(format!("reading the TLS handshake failed: {e}"))),
        }
        if let Err(e) = s.tls.process_new_packets() {
            // rustls has queued an alert that says why; send it if we can.
            let _ = s.tls.write_tls(&mut wire);
            let reason = match e {
                rustls::Error::InvalidMessage(_) if first => {
                    format!("not a TLS handshake (a plaintext client, or garbage): {e}")
                }
                e => format!("TLS handshake failed: {}", in_words(&e)),
            };
            return Some(Step::Failed(reason));
        }
    }
}

/// The socket, read and written without ever blocking.
struct NonBlocking<'a>(&'a Socket);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv_now(self.0, buf, false)
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, sys::NO_SIGNAL | libc::MSG_DONTWAIT)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A handshake error in words. rustls prints many certificate reasons as
/// Rust debug output (`invalid peer certificate: Other(OtherError(
/// CaUsedAsEndEntity))`, webpki's reason inside rustls's); an operator
/// reading the log should not have to know either crate.
fn in_words(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    let (what, reason) = match e {
        Error::InvalidCertificate(CertificateError::Other(other)) => ("certificate refused", format!("{:?}", other.0)),
        Error::InvalidCertificate(problem) => ("certificate refused", problem.to_string()),
        Error::Other(other) => ("error", format!("{:?}", other.0)),
        e => return e.to_string(),
    };
    format!("{what}: {}", reason_in_words(&reason))
}

/// Known reasons said plainly; any other bare name (`UnknownIssuer`) as
/// lower-case words; anything else as it came.
fn reason_in_words(reason: &str) -> String {
    const KNOWN: [(&str, &str); 9] = [
        ("CaUsedAsEndEntity", "the client presented a CA certificate, not a leaf"),
        ("UnsupportedCertVersion", "X.509 v1 certificate: rustls accepts only v3"),
        ("EndEntityUsedAsCa", "a leaf certificate was used as a CA"),
        ("UnknownIssuer", "not issued by a trusted CA"),
        ("BadEncoding", "not a well-formed X.509 certificate"),
        ("BadSignature", "its signature does not verify"),
        ("Expired", "it has expired"),
        ("NotValidYet", "it is not valid yet"),
        ("Revoked", "it has been revoked"),
    ];
    if let Some((_, words)) = KNOWN.iter().find(|(name, _)| *name == reason) {
        return (*words).to_string();
    }
    if !reason.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return reason.to_string();
    }
    let mut words = String::new();
    for (i, c) in reason.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::reason_in_words;

    #[test]
    fn reasons_are_said_in_words() {
        assert_eq!(reason_in_words("CaUsedAsEndEntity"), "the client presented a CA certificate, not a leaf");
        assert_eq!(reason_in_words("RequiredEkuNotFound"), "required eku not found");
        assert_eq!(reason_in_words("certificate expired: at 5"), "certificate expired: at 5");
    }
}
