//! TLS for the prime example (feature `tls`): certificates made at run time
//! for the demo and the tests, configs loaded from PEM files for `serve`
//! and `ask`. The crypto provider is rustls's `ring`, which builds with only
//! a C compiler.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A certificate authority, a server certificate it signed (for
/// `localhost` and 127.0.0.1) and a client certificate it signed, as PEM.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl Pki {
    /// Makes a fresh one (ECDSA P-256 keys).
    pub fn generate() -> Result<Pki, String> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let made = |e: rcgen::Error| format!("cannot make a certificate: {e}");
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(made)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "prime example CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(made)?).map_err(made)?;
        let leaf = |names: Vec<String>, common_name: &str| -> Result<(String, String), String> {
            let key = KeyPair::generate().map_err(made)?;
            let mut params = CertificateParams::new(names).map_err(made)?;
            params.distinguished_name.push(DnType::CommonName, common_name);
            let cert = params.signed_by(&key, &ca).map_err(made)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost")?;
        let (client_cert, client_key) = leaf(Vec::new(), "prime client")?;
        Ok(Pki { ca: ca.pem(), server_cert, server_key, client_cert, client_key })
    }

    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem` and
    /// `client.key` into `dir` (made if missing); returns their paths.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let files = [
            ("ca.pem", &self.ca),
            ("server.pem", &self.server_cert),
            ("server.key", &self.server_key),
            ("client.pem", &self.client_cert),
            ("client.key", &self.client_key),
        ];
        files
            .into_iter()
            .map(|(name, pem)| {
                let path = dir.join(name);
                std::fs::write(&path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(path)
            })
            .collect()
    }
}

/// The example's crypto provider: rustls's `ring`.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in it"));
    }
    Ok(certs)
}

fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{what}: no PEM private key: {e}"))
}

fn roots(pem: &[u8], what: &str) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, what)? {
        roots.add(cert).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// A client config trusting the CA in `ca` (PEM); with `identity` (chain
/// and key, PEM), one that presents a client certificate.
pub fn client_config(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca, "CA")?);
    let config = match identity {
        Some((cert, key_pem)) => builder
            .with_client_auth_cert(certificates(cert, "client certificate")?, key(key_pem, "client key")?)
            .map_err(|e| format!("client certificate and key: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
