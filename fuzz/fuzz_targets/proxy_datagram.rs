//! The PROXY header stage on one datagram: never a panic, never "need
//! more" (a datagram is all there is), a header within the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::fuzzing::{ProxyParse, proxy_datagram};

fuzz_target!(|packet: &[u8]| {
    match proxy_datagram(packet) {
        ProxyParse::NeedMore => panic!("a datagram cannot need more"),
        ProxyParse::Header(len) => assert!(len <= packet.len()),
        ProxyParse::Absent | ProxyParse::Malformed => {}
    }
});
