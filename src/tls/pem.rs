//! A server's TLS configuration from PEM, as most deployments keep it: a
//! certificate chain and its key, and for mutual TLS the CA that client
//! certificates must chain to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::{Error, Result};

/// Where a piece of PEM comes from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Bytes(&'static str, Vec<u8>),
}

impl Source {
    /// What errors name: the path, or which part.
    fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Bytes(part, _) => (*part).to_owned(),
        }
    }

    fn read(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Source::File(path) => std::fs::read(path).map(Into::into).map_err(|e| problem(self, e)),
            Source::Bytes(_, bytes) => Ok(bytes.as_slice().into()),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_slice_iter(&self.read()?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| problem(self, format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(problem(self, "no certificate in it"));
        }
        Ok(certs)
    }
}

fn problem(source: &Source, problem: impl ToString) -> Error {
    Error::TlsConfig { what: source.name(), problem: problem.to_string() }
}

/// Builds a [`rustls::ServerConfig`] from PEM files (or PEM in memory):
/// the server's certificate chain, leaf first, and its private key (PKCS#8,
/// PKCS#1 or SEC1); with [`client_ca_file`](Self::client_ca_file), mutual
/// TLS, where every client must present a certificate that chains to one
/// of those CAs. Errors name the file.
///
/// The crypto provider is the one given to [`provider`](Self::provider),
/// else the one installed as the process default
/// ([`CryptoProvider::install_default`]); with neither, `build` says so
/// instead of guessing.
///
/// ```no_run
/// use socketserver::tls::ServerPem;
/// use socketserver::{Request, TcpServer};
///
/// let config = ServerPem::files("/etc/app/chain.pem", "/etc/app/key.pem")
///     .client_ca_file("/etc/app/clients-ca.pem")
///     .build()?;
/// let server = TcpServer::builder(|_: &mut Request<'_>| Ok(())).tls(config).bind("0.0.0.0:8443")?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServerPem {
    chain: Source,
    key: Source,
    client_ca: Option<Source>,
    provider: Option<Arc<CryptoProvider>>,
}

impl ServerPem {
    /// The certificate chain and key from these files.
    pub fn files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> ServerPem {
        ServerPem::new(Source::File(chain.as_ref().into()), Source::File(key.as_ref().into()))
    }

    /// The certificate chain and key as PEM text already in memory.
    pub fn bytes(chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> ServerPem {
        ServerPem::new(Source::Bytes("certificate chain", chain.into()), Source::Bytes("private key", key.into()))
    }

    fn new(chain: Source, key: Source) -> ServerPem {
        ServerPem { chain, key, client_ca: None, provider: None }
    }

    /// Mutual TLS: clients must present a certificate that chains to a CA
    /// in this PEM file.
    pub fn client_ca_file(mut self, path: impl AsRef<Path>) -> ServerPem {
        self.client_ca = Some(Source::File(path.as_ref().into()));
        self
    }

    /// As [`client_ca_file`](Self::client_ca_file), with the CAs as PEM
    /// text already in memory.
    pub fn client_ca_bytes(mut self, pem: impl Into<Vec<u8>>) -> ServerPem {
        self.client_ca = Some(Source::Bytes("client CA", pem.into()));
        self
    }

    /// The crypto provider to use instead of the process default.
    pub fn provider(mut self, provider: Arc<CryptoProvider>) -> ServerPem {
        self.provider = Some(provider);
        self
    }

    /// Reads the PEM and builds the config.
    ///
    /// # Errors
    ///
    /// [`Error::TlsConfig`] naming the file (or part) at fault: unreadable,
    /// no certificate or key in it, a key that does not match the leaf, or
    /// no crypto provider to use.
    pub fn build(&self) -> Result<Arc<ServerConfig>> {
        let provider = match &self.provider {
            Some(provider) => Arc::clone(provider),
            None => CryptoProvider::get_default().cloned().ok_or_else(|| Error::TlsConfig {
                what: "crypto provider".into(),
                problem: "none installed for the process: call ServerPem::provider, or install one first \
                          (e.g. rustls::crypto::ring::default_provider().install_default())"
                    .into(),
            })?,
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::TlsConfig { what: "crypto provider".into(), problem: e.to_string() })?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in ca.certificates()? {
                    roots.add(cert).map_err(|e| problem(ca, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| problem(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = self.chain.certificates()?;
        let key = PrivateKeyDer::from_pem_slice(&self.key.read()?)
            .map_err(|e| problem(&self.key, format!("no PEM private key: {e}")))?;
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| problem(&self.key, format!("does not go with {}: {e}", self.chain.name())))?;
        Ok(Arc::new(config))
    }
}
