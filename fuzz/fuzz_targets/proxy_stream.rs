//! The PROXY header stage on a connection's first bytes: never a panic, a
//! header never longer than the bytes or the 4 KiB limit, and every split
//! point of a header that parses reads as "need more" (a header arrives in
//! pieces), then the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::fuzzing::{ProxyParse, proxy_stream};

fuzz_target!(|bytes: &[u8]| {
    let ProxyParse::Header(len) = proxy_stream(bytes) else { return };
    assert!(len <= bytes.len() && len <= 4096, "a header of {len} bytes from {} bytes", bytes.len());
    for split in 0..len {
        assert_eq!(proxy_stream(&bytes[..split]), ProxyParse::NeedMore, "split at {split} of {len}");
    }
    assert_eq!(proxy_stream(&bytes[..len]), ProxyParse::Header(len));
});
