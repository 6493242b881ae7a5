//! Who a client certificate names: the subject's common name and its
//! subject alternative names, read from the leaf once per connection with
//! RustCrypto's X.509 types. rustls has already verified the chain (with a
//! client verifier); this only reads what the verified leaf says.

use std::net::IpAddr;

use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The subject's commonName (id-at-commonName, 2.5.4.3).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// Who a client's certificate names, from
/// [`TlsInfo::client_identity`](super::TlsInfo::client_identity): its
/// subject's common name and its subject alternative names (DNS names, IP
/// addresses, email addresses).
///
/// Names a client could put in any certificate mean something only when
/// the server verified the chain: give the builder a config with a client
/// verifier (see [`ServerPem::client_ca_file`](super::ServerPem::client_ca_file)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The subject's common name (CN), if it has one in a string type.
    pub common_name: Option<String>,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses among the subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Email addresses (rfc822Name) among the subject alternative names.
    pub emails: Vec<String>,
}

impl Identity {
    /// What the DER certificate `der` names; `None` if it is not one.
    pub(crate) fn of(der: &[u8]) -> Option<Identity> {
        let cert = Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut identity = Identity {
            common_name: tbs
                .subject
                .0
                .iter()
                .flat_map(|rdn| rdn.0.iter())
                .find(|attribute| attribute.oid == COMMON_NAME)
                .and_then(|attribute| text(attribute.value.tag(), attribute.value.value())),
            ..Identity::default()
        };
        let san = tbs.extensions.iter().flatten().find(|ext| ext.extn_id == SubjectAltName::OID);
        let Some(names) = san.and_then(|ext| SubjectAltName::from_der(ext.extn_value.as_bytes()).ok()) else {
            return Some(identity);
        };
        for name in names.0 {
            match name {
                GeneralName::DnsName(dns) => identity.dns_names.push(dns.as_str().to_owned()),
                GeneralName::Rfc822Name(email) => identity.emails.push(email.as_str().to_owned()),
                GeneralName::IpAddress(ip) => match *ip.as_bytes() {
                    [a, b, c, d] => identity.ip_addresses.push(IpAddr::from([a, b, c, d])),
                    ref v6 if v6.len() == 16 => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(v6);
                        identity.ip_addresses.push(IpAddr::from(octets));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        Some(identity)
    }
}

/// A directory string's text: UTF-8, printable and IA5 strings are read
/// as UTF-8 (the latter two are ASCII); other types are skipped.
fn text(tag: Tag, bytes: &[u8]) -> Option<String> {
    match tag {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => std::str::from_utf8(bytes).ok().map(str::to_owned),
        _ => None,
    }
}
