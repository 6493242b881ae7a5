//! Reading an integer exactly the way Python's `int()` reads bytes.

use num_bigint::BigUint;

/// Python's default `sys.get_int_max_str_digits()`: longer inputs are rejected.
pub const MAX_DIGITS: usize = 4300;

/// A parsed integer: its sign and magnitude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Int {
    pub negative: bool,
    pub magnitude: BigUint,
}

/// Python's whitespace for bytes (`bytes.isspace`): space and \t \n \v \f \r.
fn is_space(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

/// Parses `line` as Python's `int(line)` would: surrounding whitespace,
/// an optional sign, decimal digits with single underscores between them,
/// at most [`MAX_DIGITS`] digits. `None` where Python raises `ValueError`.
pub fn parse_int(line: &[u8]) -> Option<Int> {
    let start = line.iter().position(|&b| !is_space(b))?;
    let end = line.iter().rposition(|&b| !is_space(b))? + 1;
    let mut text = &line[start..end];
    let negative = text.first() == Some(&b'-');
    if matches!(text.first(), Some(b'-' | b'+')) {
        text = &text[1..];
    }
    let mut digits = Vec::with_capacity(text.len());
    let mut previous_was_digit = false;
    for &b in text {
        match b {
            b'0'..=b'9' => {
                digits.push(b);
                previous_was_digit = true;
            }
            b'_' if previous_was_digit => previous_was_digit = false,
            _ => return None,
        }
    }
    if !previous_was_digit || digits.len() > MAX_DIGITS {
        return None;
    }
    let magnitude = BigUint::parse_bytes(&digits, 10)?;
    Some(Int { negative, magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(s: &str) -> Option<String> {
        parse_int(s.as_bytes())
            .map(|i| format!("{}{}", if i.negative && i.magnitude.bits() > 0 { "-" } else { "" }, i.magnitude))
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
