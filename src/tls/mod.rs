//! TLS (feature `tls`) on [rustls]: the same handler, reading and writing
//! plaintext through the same `rfile` and `wfile`.
//!
//! Give the builder a [`rustls::ServerConfig`] with
//! [`ServerBuilder::tls`](crate::ServerBuilder::tls). The crate enables no
//! crypto provider of rustls's: the config you build names one (rustls's
//! `ring` or `aws-lc-rs` features, or another).
//!
//! The handshake runs in the serving loop, without blocking and without a
//! worker, under the idle timeout (or [`DEFAULT_HANDSHAKE_TIMEOUT`]) and the
//! connection timeout: a client that stalls mid-handshake costs an fd until
//! its deadline, never a worker. `verify_request` runs before it, so a
//! refused peer costs no cryptography. A failed handshake (a plaintext
//! client, garbage, an unknown client certificate) closes that connection
//! with one [`Error::Tls`](crate::Error::Tls) naming the peer and the reason,
//! counted in [`Stats::tls_failed`](crate::Stats::tls_failed).
//!
//! Then the handler runs as on any stream: the writer still flushes before
//! the reader blocks, a flush leaves as few TLS records as the data allows,
//! and `close_notify` is sent after `finish`. `Writer::sendfile` copies
//! through TLS (the kernel cannot encrypt); `Writer::send_fds` is refused.
//! A client that closes without `close_notify` (many do, Python's `ssl`
//! among them) reads as an ordinary end of input.

mod identity;
mod pem;
mod session;

pub use identity::Identity;
pub use pem::ServerPem;
pub use rustls;

pub(crate) use session::Session;

use std::time::Duration;

use rustls::pki_types::CertificateDer;

/// How long a handshake may take when the server has no `idle_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's TLS handshake settled, from
/// [`Request::tls`](crate::Request::tls).
#[derive(Debug, Clone)]
pub struct TlsInfo {
    version: Option<rustls::ProtocolVersion>,
    cipher_suite: Option<rustls::CipherSuite>,
    server_name: Option<String>,
    alpn: Option<Vec<u8>>,
    peer_certificates: Vec<CertificateDer<'static>>,
    client_identity: Option<Identity>,
}

impl TlsInfo {
    fn of(conn: &rustls::ServerConnection) -> Self {
        TlsInfo {
            version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            server_name: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certificates: conn.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
            client_identity: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| Identity::of(leaf)),
        }
    }

    /// The protocol version, e.g. `TLSv1_3`.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.version
    }

    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.cipher_suite
    }

    /// The host name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The application protocol agreed on (ALPN), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The client's certificate chain, its own first (mutual TLS; empty when
    /// the client sent none).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certificates
    }

    /// Who the client's certificate names (mutual TLS): its subject's
    /// common name and its subject alternative names. `None` when the
    /// client sent no certificate.
    ///
    /// ```
    /// # use socketserver::Request;
    /// # use std::io::Write;
    /// let handler = |req: &mut Request<'_>| {
    ///     let who = req.tls().and_then(|tls| tls.client_identity()).and_then(|id| id.common_name.clone());
    ///     writeln!(req.wfile, "hello, {}", who.as_deref().unwrap_or("stranger"))
    /// };
    /// # let _ = socketserver::TcpServer::bind("127.0.0.1:0", handler);
    /// ```
    pub fn client_identity(&self) -> Option<&Identity> {
        self.client_identity.as_ref()
    }
}
