//! A client certificate's identity (feature `tls`): the DER a client sends
//! under mutual TLS, read for its subject CN and SANs. Never a panic, and
//! every IP address read is one of the two lengths an address has.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|der: &[u8]| {
    let Some(identity) = socketserver::fuzzing::client_identity(der) else { return };
    for name in identity.dns_names.iter().chain(&identity.emails) {
        assert!(name.is_ascii(), "an IA5 string is ASCII: {name:?}");
    }
});
