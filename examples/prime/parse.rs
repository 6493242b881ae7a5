//! Reading an integer exactly the way Python's `int()` reads bytes.

use dashu_int::UBig;

/// Python's default `sys.get_int_max_str_digits()`: longer inputs are rejected.
pub const MAX_DIGITS: usize = 4300;

/// A parsed integer: its sign and magnitude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Int {
    pub negative: bool,
    pub magnitude: UBig,
}

/// Python's whitespace for bytes (`bytes.isspace`): space and \t \n \v \f \r.
fn is_space(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

/// Parses `line` as Python's `int(line)` would: surrounding whitespace,
/// an optional sign, decimal digits with single underscores between them,
/// at most [`MAX_DIGITS`] digits. `None` where Python raises `ValueError`.
#[allow(dead_code, reason = "the benches' std-loop baseline and the tests share this file")]
pub fn parse_int(line: &[u8]) -> Option<Int> {
    let mut parser = LineParser::new(MAX_DIGITS);
    parser.feed(line);
    parser.finish()
}

/// Where a line is, as Python's `int()` would read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Only whitespace so far.
    Leading,
    /// A sign, no digit yet.
    Signed,
    /// In the digits; `after_digit` is false right after an underscore.
    Digits { after_digit: bool },
    /// Whitespace after the digits.
    Trailing,
    /// Not an integer, whatever follows.
    Invalid,
}

/// Python's `int()` fed a line piece by piece, so a line of any length is
/// read in memory bounded by the digit limit: only the digits are kept.
#[derive(Debug, Clone)]
pub struct LineParser {
    max_digits: usize,
    state: State,
    negative: bool,
    digits: Vec<u8>,
    /// Bytes fed since the line began.
    len: usize,
}

impl LineParser {
    /// A parser that accepts at most `max_digits` digits, as Python's
    /// `sys.set_int_max_str_digits(max_digits)` would.
    pub fn new(max_digits: usize) -> Self {
        LineParser { max_digits, state: State::Leading, negative: false, digits: Vec::new(), len: 0 }
    }

    /// Reads the next piece of the line (without its newline).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        for &b in bytes {
            self.state = match (self.state, b) {
                (State::Invalid, _) => return,
                (State::Leading | State::Trailing, b) if is_space(b) => self.state,
                (State::Leading, b'-' | b'+') => {
                    self.negative = b == b'-';
                    State::Signed
                }
                (State::Leading | State::Signed | State::Digits { .. }, b'0'..=b'9') => {
                    if self.digits.len() == self.max_digits {
                        State::Invalid
                    } else {
                        self.digits.push(b);
                        State::Digits { after_digit: true }
                    }
                }
                (State::Digits { after_digit: true }, b'_') => State::Digits { after_digit: false },
                (State::Digits { after_digit: true }, b) if is_space(b) => State::Trailing,
                _ => State::Invalid,
            };
        }
    }

    /// Whether anything was fed since the line began.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes fed since the line began.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True once no ending can make the line an integer.
    pub fn is_invalid(&self) -> bool {
        self.state == State::Invalid
    }

    /// The line's value, `None` where Python raises `ValueError`; the
    /// parser is ready for the next line.
    pub fn finish(&mut self) -> Option<Int> {
        let state = std::mem::replace(&mut self.state, State::Leading);
        let negative = std::mem::take(&mut self.negative);
        self.len = 0;
        let value = match state {
            State::Digits { after_digit: true } | State::Trailing => {
                let digits = std::str::from_utf8(&self.digits).ok()?;
                UBig::from_str_radix(digits, 10).ok().map(|magnitude| Int { negative, magnitude })
            }
            _ => None,
        };
        self.digits.clear();
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(s: &str) -> Option<String> {
        parse_int(s.as_bytes())
            .map(|i| format!("{}{}", if i.negative && i.magnitude != UBig::ZERO { "-" } else { "" }, i.magnitude))
    }

    #[test]
    fn accepts_what_python_accepts() {
        for (input, expected) in [
            ("4", "4"),
            ("  17\n", "17"),
            ("\t-5\r\n", "-5"),
            ("+29", "29"),
            ("1_000", "1000"),
            ("1_0_0", "100"),
            ("007", "7"),
            ("-0", "0"),
            ("\x0b42\x0c", "42"),
            ("1125899906842624", "1125899906842624"),
            ("340282366920938463463374607431768211457", "340282366920938463463374607431768211457"),
        ] {
            assert_eq!(value(input).as_deref(), Some(expected), "{input:?}");
        }
    }

    #[test]
    fn rejects_what_python_rejects() {
        for input in [
            "", " ", "\n", "4j", "1.0", "0x10", "1e3", "1__0", "_1", "1_", "+_1", "- 5", "+-5", "--5", "+", "-", "1 2",
            "5\0", "٣", "0b1", "inf", "nan", "1,000",
        ] {
            assert_eq!(value(input), None, "{input:?}");
        }
    }

    #[test]
    fn a_line_fed_in_pieces_reads_as_the_whole_line() {
        let line = b"  -1_234_567  ";
        for split in 0..=line.len() {
            let mut parser = LineParser::new(MAX_DIGITS);
            parser.feed(&line[..split]);
            parser.feed(&line[split..]);
            assert_eq!(parser.finish(), parse_int(line), "split at {split}");
            // Ready for the next line, sign included.
            parser.feed(b"7");
            assert_eq!(parser.finish(), parse_int(b"7"));
        }
    }

    #[test]
    fn whitespace_padding_of_any_length_is_accepted_as_python_does() {
        let mut parser = LineParser::new(MAX_DIGITS);
        let padding = vec![b' '; 1 << 20];
        parser.feed(&padding);
        parser.feed("9".repeat(MAX_DIGITS).as_bytes());
        parser.feed(&padding);
        assert!(!parser.is_invalid());
        assert!(parser.finish().is_some());
    }

    #[test]
    fn a_lower_digit_limit_is_honoured() {
        let mut parser = LineParser::new(3);
        parser.feed(b"1_2_3");
        assert!(parser.finish().is_some());
        parser.feed(b"1234");
        assert!(parser.is_invalid());
        assert!(parser.finish().is_none());
    }

    #[test]
    fn digit_limit_is_pythons() {
        let at_limit = "9".repeat(MAX_DIGITS);
        assert!(parse_int(at_limit.as_bytes()).is_some());
        assert!(parse_int(format!("-{at_limit}").as_bytes()).is_some());
        assert!(parse_int(format!("{at_limit}9").as_bytes()).is_none());
        // Underscores do not count as digits.
        let with_separator = format!("{}_9", "9".repeat(MAX_DIGITS - 1));
        assert!(parse_int(with_separator.as_bytes()).is_some());
    }

    /// A reference model written straight from Python's documentation:
    /// strip, optional sign, `_`-separated groups of digits, none empty.
    fn reference(s: &str) -> Option<String> {
        let t = s.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
        let (negative, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let groups: Vec<&str> = body.split('_').collect();
        if groups.iter().any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let digits: String = groups.concat();
        if digits.len() > MAX_DIGITS {
            return None;
        }
        let trimmed = digits.trim_start_matches('0');
        let magnitude = if trimmed.is_empty() { "0" } else { trimmed };
        Some(format!("{}{magnitude}", if negative && magnitude != "0" { "-" } else { "" }))
    }

    proptest! {
        #[test]
        fn matches_the_reference_model(s in "[ \t\n+\\-_0-9j.x]{0,12}") {
            prop_assert_eq!(value(&s), reference(&s));
        }

        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_int(&bytes);
        }
    }

    /// The real oracle: Python's own `int()`, on inputs built to hit every rule.
    #[test]
    fn agrees_with_python_int() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let cases: Vec<String> = {
            let pieces = ["", " ", "\t", "\x0b", "+", "-", "_", "0", "7", "12", "1_2", "j", ".", "x", "e"];
            let mut out = Vec::new();
            for a in pieces {
                for b in pieces {
                    for c in pieces {
                        out.push(format!("{a}{b}{c}"));
                    }
                }
            }
            out
        };
        let script = "import sys\nfor line in sys.stdin.buffer.read().split(b'\\n'):\n    s = bytes.fromhex(line.decode())\n    try:\n        print(int(s))\n    except ValueError:\n        print('E')\n";
        let Ok(mut python) =
            Command::new("python3").args(["-c", script]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()
        else {
            eprintln!("skipped: python3 not found");
            return;
        };
        let input: Vec<String> = cases.iter().map(|c| c.bytes().map(|b| format!("{b:02x}")).collect()).collect();
        python.stdin.take().unwrap().write_all(input.join("\n").as_bytes()).unwrap();
        let output = python.wait_with_output().unwrap();
        assert!(output.status.success());
        let answers = String::from_utf8(output.stdout).unwrap();
        let answers: Vec<&str> = answers.lines().collect();
        assert_eq!(answers.len(), cases.len());
        for (case, python_says) in cases.iter().zip(answers) {
            let ours = value(case).unwrap_or_else(|| "E".into());
            assert_eq!(ours, python_says, "int({case:?})");
        }
    }
}
