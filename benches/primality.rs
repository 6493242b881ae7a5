//! `cargo bench --bench primality`: the prime example's worst case, one
//! 4,300-digit number, against Python's own `pow(2, n - 1, n)` on the same
//! number in the same run.
//!
//! Two numbers: the first odd number of 4,300 digits with no prime factor
//! below 1,000 (composite: one Miller-Rabin round decides it, the cost an
//! attacker can make every request pay), and the prime 1477! + 1 (4,042
//! digits: the whole Baillie-PSW test runs). A third row shows what
//! `prime serve --max-digits 1000` bounds the worst case to (a prime, so
//! the whole test runs).

#[allow(dead_code)]
#[path = "../examples/prime/primality.rs"]
mod primality;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dashu_int::UBig;

const RUNS: usize = 3;

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let composite = first_without_small_factors(UBig::from(10u8).pow(4299) + UBig::ONE);
    let capped = first_without_small_factors(UBig::from(10u8).pow(999) + UBig::ONE);
    let prime = (1..=1477u32).fold(UBig::ONE, |f, k| f * UBig::from(k)) + UBig::ONE;
    println!("{:<44} {:>12} {:>16} {:>8}", "number", "is_prime", "python pow(2,n-1,n)", "ratio");
    let cases = [
        ("4,300-digit composite, no factor < 1000", &composite, false),
        ("1477! + 1 (prime, 4,042 digits)", &prime, true),
        ("1,000 digits, no factor < 1000 (a prime)", &capped, true),
    ];
    for (name, n, expected) in cases {
        let ours = median(|| {
            let start = Instant::now();
            assert_eq!(primality::is_prime(n), expected, "{name}");
            start.elapsed()
        });
        let line = match python_pow_seconds(n) {
            Some(python) => {
                format!("{:>11.3}s {:>15.3}s {:>7.3}x", ours.as_secs_f64(), python, ours.as_secs_f64() / python)
            }
            None => format!("{:>11.3}s {:>16} {:>8}", ours.as_secs_f64(), "(no python3)", "-"),
        };
        println!("{name:<44} {line}");
    }
}

fn first_without_small_factors(mut n: UBig) -> UBig {
    let small: Vec<u32> = (3..1000u32).filter(|&p| (2..p).take_while(|d| d * d <= p).all(|d| p % d != 0)).collect();
    while small.iter().any(|&p| &n % p == 0) {
        n += UBig::from(2u8);
    }
    n
}

fn median(mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run()).collect();
    times.sort();
    times[RUNS / 2]
}

/// Python's median time for `pow(2, n - 1, n)`, the core of any primality
/// test it would run; `None` without python3.
fn python_pow_seconds(n: &UBig) -> Option<f64> {
    let script = format!(
        "import sys, time\nn = int(sys.stdin.read(), 16)\nts = []\nfor _ in range({RUNS}):\n    t = time.perf_counter(); pow(2, n - 1, n); ts.append(time.perf_counter() - t)\nprint(sorted(ts)[{}])\n",
        RUNS / 2
    );
    let mut python =
        Command::new("python3").args(["-c", &script]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().ok()?;
    python.stdin.take()?.write_all(format!("{n:x}").as_bytes()).ok()?;
    let output = python.wait_with_output().ok()?;
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}
