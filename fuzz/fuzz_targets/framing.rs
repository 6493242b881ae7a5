//! Framed messages cut in the serving loop: never a panic, and a stream
//! read in any pieces gives the same messages (or the same refusal) as the
//! stream read whole, for lines and both length prefixes, with messages
//! over the maximum refused or taken in pieces of at most the maximum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::Framing;
use socketserver::fuzzing::framed_messages;

fuzz_target!(|input: (u8, Vec<u16>, &[u8])| {
    let (kind, splits, stream) = input;
    let (framing, max) = match kind % 3 {
        0 => (Framing::lines(64), 64),
        1 => (Framing::u16_prefixed(300), 300),
        _ => (Framing::u32_prefixed(300), 300),
    };
    let framing = if kind & 0x80 != 0 { framing.in_pieces() } else { framing };
    let mut splits: Vec<usize> = splits.into_iter().map(usize::from).collect();
    splits.sort_unstable();
    let whole = framed_messages(&framing, stream, &[]);
    let pieces = framed_messages(&framing, stream, &splits);
    assert_eq!(whole, pieces, "{framing:?} split at {splits:?}");
    if let Ok(messages) = &whole {
        assert!(messages.iter().all(|m| m.len() <= max), "{framing:?}: a message over {max}");
    }
});
