//! Exact primality: deterministic Miller-Rabin below 2^64, Baillie-PSW above.

use num_bigint::{BigInt, BigUint};
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};

/// Primes used for trial division before any modular exponentiation.
const SMALL_PRIMES: [u32; 54] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109,
    113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193, 197, 199, 211, 223, 227, 229, 233, 239,
    241, 251,
];

/// Is `n` prime? Exact below 2^64 (a proven deterministic base set); above,
/// the Baillie-PSW test, which has no known counterexample and has been
/// checked exhaustively below 2^64.
pub fn is_prime(n: &BigUint) -> bool {
    if let Some(small) = n.to_u64() {
        return is_prime_u64(small);
    }
    if SMALL_PRIMES.iter().any(|&p| (n % p).is_zero()) {
        return false;
    }
    strong_probable_prime(n, &BigUint::from(2u32)) && strong_lucas_probable_prime(n)
}

/// Deterministic for every u64: these seven bases have no strong pseudoprime
/// below 2^64 (Jim Sinclair's set).
pub fn is_prime_u64(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in SMALL_PRIMES {
        let p = u64::from(p);
        if n == p {
            return true;
        }
        if n.is_multiple_of(p) {
            return false;
        }
    }
    let (d, s) = odd_part(n - 1);
    [2u64, 325, 9375, 28178, 450775, 9780504, 1795265022].iter().all(|&base| {
        let a = base % n;
        if a == 0 {
            return true;
        }
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            return true;
        }
        (1..s).any(|_| {
            x = mul_mod(x, x, n);
            x == n - 1
        })
    })
}

fn odd_part(mut d: u64) -> (u64, u32) {
    let s = d.trailing_zeros();
    d >>= s;
    (d, s)
}

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    (u128::from(a) * u128::from(b) % u128::from(m)) as u64
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut result = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            result = mul_mod(result, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    result
}

/// Miller-Rabin to one base, on big odd `n`.
fn strong_probable_prime(n: &BigUint, base: &BigUint) -> bool {
    let n_minus_1 = n - 1u32;
    let s = n_minus_1.trailing_zeros().unwrap_or(0);
    let d = &n_minus_1 >> s;
    let mut x = base.modpow(&d, n);
    if x.is_one() || x == n_minus_1 {
        return true;
    }
    for _ in 1..s {
        x = &x * &x % n;
        if x == n_minus_1 {
            return true;
        }
    }
    false
}

/// The strong Lucas test with Selfridge's parameters (method A), on big odd `n`.
fn strong_lucas_probable_prime(n: &BigUint) -> bool {
    let root = n.sqrt();
    if &root * &root == *n {
        return false; // No D with Jacobi(D/n) = -1 exists for a square.
    }
    let n_int = BigInt::from(n.clone());
    let mut d: i64 = 5;
    loop {
        match jacobi(&BigInt::from(d).mod_floor(&n_int), &n_int) {
            -1 => break,
            0 if BigInt::from(d.abs()) != n_int => return false,
            _ => d = if d > 0 { -(d + 2) } else { -d + 2 },
        }
    }
    let (p, q) = (BigInt::one(), BigInt::from((1 - d) / 4));
    let d = BigInt::from(d);
    let m: BigInt = &n_int + 1u32;
    let s = m.trailing_zeros().unwrap_or(0);
    let k = &m >> s;

    let reduce = |x: BigInt| x.mod_floor(&n_int);
    let halve = |x: BigInt| {
        let x = if x.is_odd() { x + &n_int } else { x };
        reduce(x >> 1)
    };
    let (mut u, mut v, mut qk) = (BigInt::one(), p.clone(), reduce(q.clone()));
    for bit in (0..k.bits() - 1).rev() {
        u = reduce(&u * &v);
        v = reduce(&v * &v - 2 * &qk);
        qk = reduce(&qk * &qk);
        if k.bit(bit) {
            let next_u = halve(&p * &u + &v);
            v = halve(&d * &u + &p * &v);
            u = next_u;
            qk = reduce(&qk * &q);
        }
    }
    if u.is_zero() || v.is_zero() {
        return true;
    }
    for _ in 1..s {
        v = reduce(&v * &v - 2 * &qk);
        if v.is_zero() {
            return true;
        }
        qk = reduce(&qk * &qk);
    }
    false
}

/// The Jacobi symbol (a/n) for odd positive n and 0 <= a < n.
fn jacobi(a: &BigInt, n: &BigInt) -> i32 {
    let (mut a, mut n) = (a.clone(), n.clone());
    let mut result = 1;
    while !a.is_zero() {
        let twos = a.trailing_zeros().unwrap_or(0);
        a >>= twos;
        let n_mod_8 = (&n % 8u32).to_u32().unwrap_or(0);
        if twos % 2 == 1 && (n_mod_8 == 3 || n_mod_8 == 5) {
            result = -result;
        }
        if (&a % 4u32).to_u32() == Some(3) && (&n % 4u32).to_u32() == Some(3) {
            result = -result;
        }
        std::mem::swap(&mut a, &mut n);
        a = a.mod_floor(&n);
    }
    if n.is_one() { result } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn big(s: &str) -> BigUint {
        s.parse().unwrap()
    }

    fn trial_division(n: u64) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn small_numbers_match_trial_division() {
        for n in 0..20_000u64 {
            assert_eq!(is_prime_u64(n), trial_division(n), "{n}");
            assert_eq!(is_prime(&BigUint::from(n)), trial_division(n), "{n}");
        }
    }

    #[test]
    fn around_2_32_and_2_64() {
        assert!(is_prime_u64(4_294_967_291)); // largest prime below 2^32
        assert!(is_prime_u64(4_294_967_311)); // smallest prime above 2^32
        assert!(!is_prime_u64(4_294_967_297)); // 2^32 + 1 = 641 * 6700417
        assert!(is_prime_u64(18_446_744_073_709_551_557)); // largest prime below 2^64
        assert!(!is_prime_u64(u64::MAX));
        assert!(is_prime(&big("18446744073709551629"))); // smallest prime above 2^64
        assert!(!is_prime(&big("18446744073709551617"))); // 2^64 + 1 = 274177 * 67280421310721
    }

    #[test]
    fn mersenne_numbers() {
        let mersenne = |p: u32| (BigUint::one() << p) - 1u32;
        for p in [61, 89, 107, 127, 521, 607] {
            assert!(is_prime(&mersenne(p)), "2^{p}-1 is prime");
        }
        for p in [67, 101, 128, 257] {
            assert!(!is_prime(&mersenne(p)), "2^{p}-1 is composite");
        }
        assert!(!is_prime_u64((1 << 50) - 1));
        assert!(!is_prime_u64(1 << 50));
    }

    #[test]
    fn carmichael_numbers_and_strong_pseudoprimes_are_composite() {
        for n in [561u64, 1105, 1729, 2465, 2821, 6601, 8911, 41041, 825265, 321197185, 5394826801, 232250619601] {
            assert!(!is_prime_u64(n), "Carmichael {n}");
        }
        // Strong pseudoprimes to base 2, and to bases 2..=11 and 2..=37.
        for n in [2047u64, 3277, 4033, 4681, 8321, 3215031751, 2152302898747, 3474749660383, 341550071728321] {
            assert!(!is_prime_u64(n), "strong pseudoprime {n}");
        }
        assert!(!is_prime(&big("3825123056546413051"))); // spsp to bases 2..=23
        assert!(!is_prime(&big("318665857834031151167461"))); // spsp to bases 2..=37
        assert!(!is_prime(&big("3317044064679887385961981"))); // spsp to bases 2..=41
    }

    #[test]
    fn large_semiprimes_and_squares_are_composite() {
        let p = big("170141183460469231731687303715884105727"); // 2^127 - 1
        let q = big("18446744073709551629");
        assert!(!is_prime(&(&p * &q)));
        assert!(!is_prime(&(&p * &p)));
        assert!(!is_prime(&(&q * &q)));
    }

    proptest! {
        #[test]
        fn u64_path_agrees_with_big_path(n in any::<u64>()) {
            prop_assert_eq!(is_prime_u64(n), strong_probable_prime_path(n));
        }

        #[test]
        fn matches_trial_division(n in 0u64..2_000_000_000) {
            prop_assert_eq!(is_prime_u64(n), trial_division(n));
        }
    }

    /// Runs the big-number tests on a u64 (odd, not divisible by small primes).
    fn strong_probable_prime_path(n: u64) -> bool {
        if n < 300 || SMALL_PRIMES.iter().any(|&p| n.is_multiple_of(u64::from(p))) {
            return is_prime_u64(n);
        }
        let n = BigUint::from(n);
        strong_probable_prime(&n, &BigUint::from(2u32)) && strong_lucas_probable_prime(&n)
    }
}
