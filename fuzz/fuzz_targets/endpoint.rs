//! `Endpoint` parsing (configuration files, command lines): never a panic,
//! and what an endpoint prints parses back to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::Endpoint;

fuzz_target!(|text: &str| {
    let Ok(endpoint) = text.parse::<Endpoint>() else { return };
    let printed = endpoint.to_string();
    let again = printed.parse::<Endpoint>().unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}: {e}"));
    assert_eq!(again, endpoint, "{text:?} printed as {printed:?}");
});
