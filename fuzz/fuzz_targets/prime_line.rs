//! The prime service's line parser (Python's `int()`): never a panic; a line
//! fed in two pieces reads as the line fed whole; a value read is the
//! line's digits, underscores and leading zeros aside.
#![no_main]

#[path = "../../examples/prime/parse.rs"]
#[allow(dead_code)]
mod parse;

use libfuzzer_sys::fuzz_target;
use parse::LineParser;

fuzz_target!(|input: (usize, &[u8])| {
    let (split, line) = input;
    let mut whole = LineParser::new(parse::MAX_DIGITS);
    whole.feed(line);
    let value = whole.finish();
    let split = split % (line.len() + 1);
    let mut pieces = LineParser::new(parse::MAX_DIGITS);
    pieces.feed(&line[..split]);
    pieces.feed(&line[split..]);
    assert_eq!(pieces.finish(), value, "split at {split}");
    if let Some(int) = value {
        let digits: String = line.iter().filter(|b| b.is_ascii_digit()).map(|&b| char::from(b)).collect();
        let digits = digits.trim_start_matches('0');
        let expected = if digits.is_empty() { "0" } else { digits };
        assert_eq!(int.magnitude.to_string(), expected);
        assert!(line.iter().all(|&b| b.is_ascii_digit() || b"_+- \t\n\x0b\x0c\r".contains(&b)));
    }
});
