//! Exact primality: deterministic Miller-Rabin below 2^64, Baillie-PSW above.
//!
//! The big-number path runs on dashu's modular arithmetic, whose
//! multiplication is subquadratic; a 4,300-digit number (Python's `int()`
//! limit) is what it is sized for.

use dashu_int::UBig;
use dashu_int::fast_div::ConstDivisor;
use dashu_int::modular::Reduced;
use dashu_int::ops::{BitTest, SquareRoot};

/// Primes used for trial division before any modular exponentiation.
const SMALL_PRIMES: [u32; 54] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109,
    113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193, 197, 199, 211, 223, 227, 229, 233, 239,
    241, 251,
];

/// Whether `n` is prime: exact below 2^64; above, Baillie-PSW (a strong
/// probable prime to base 2 and a strong Lucas probable prime), to which
/// no counterexample is known.
pub fn is_prime(n: &UBig) -> bool {
    if let Ok(small) = u64::try_from(n) {
        return is_prime_u64(small);
    }
    if SMALL_PRIMES.iter().any(|&p| n % p == 0) {
        return false;
    }
    let ring = ConstDivisor::new(n.clone());
    strong_probable_prime_base_2(n, &ring) && strong_lucas_probable_prime(n, &ring)
}

/// Deterministic Miller-Rabin for every u64 (the seven bases of Jim Sinclair).
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

/// `n = d * 2^s` with `d` odd.
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

/// Miller-Rabin to base 2. Raising 2 to a power needs only squarings and
/// doublings (a doubling is an addition), so no multiplication by the base.
fn strong_probable_prime_base_2(n: &UBig, ring: &ConstDivisor) -> bool {
    let n_minus_1 = n - UBig::ONE;
    let s = n_minus_1.trailing_zeros().unwrap_or(0);
    let d = &n_minus_1 >> s;
    let one = ring.reduce(UBig::ONE);
    let minus_one = ring.reduce(n_minus_1);
    let mut x = one.clone();
    for bit in (0..d.bit_len()).rev() {
        x = x.sqr();
        if d.bit(bit) {
            x = x.dbl();
        }
    }
    if x == one || x == minus_one {
        return true;
    }
    for _ in 1..s {
        x = x.sqr();
        if x == minus_one {
            return true;
        }
    }
    false
}

/// The strong Lucas probable-prime test with Selfridge's parameters (P = 1,
/// Q = (1 - D) / 4, D the first of 5, -7, 9, -11, ... with Jacobi(D/n) =
/// -1), computed on the Lucas V sequence alone, so nothing is halved:
/// with n + 1 = d * 2^s, n passes if U_d = 0 (which holds exactly when
/// 2 V_{d+1} = P V_d, D being invertible mod n), or V_{d*2^r} = 0 for some
/// 0 <= r < s.
fn strong_lucas_probable_prime(n: &UBig, ring: &ConstDivisor) -> bool {
    if n.sqrt().sqr() == *n {
        return false; // No D with Jacobi(D/n) = -1 exists for a square.
    }
    let mut d: i64 = 5;
    loop {
        match jacobi_small(d, n) {
            -1 => break,
            0 if UBig::from(d.unsigned_abs()) != *n => return false,
            _ => d = if d > 0 { -(d + 2) } else { -d + 2 },
        }
    }
    let q = (1 - d) / 4;
    // Multiplying by the small Q costs a short multiplication and a
    // reduction, not a full modular multiplication.
    let times_q = |x: &Reduced<'_>| {
        let product = ring.reduce(x.residue() * UBig::from(q.unsigned_abs()));
        if q < 0 { -product } else { product }
    };
    let m = n + UBig::ONE;
    let s = m.trailing_zeros().unwrap_or(0);
    let k = &m >> s;

    // The ladder holds V_j, V_{j+1} and Q^j, starting at j = 0; P = 1.
    let two = ring.reduce(UBig::from(2u8));
    let (mut v, mut v_next, mut qj) = (two.clone(), ring.reduce(UBig::ONE), ring.reduce(UBig::ONE));
    for bit in (0..k.bit_len()).rev() {
        // V_{2j+1} = V_j V_{j+1} - P Q^j, the same for either bit.
        let v_odd = &v * &v_next - &qj;
        if k.bit(bit) {
            // j -> 2j + 1: V_{2j+2} = V_{j+1}^2 - 2 Q^{j+1}.
            v_next = v_next.sqr() - times_q(&qj).dbl();
            v = v_odd;
            qj = times_q(&qj.sqr());
        } else {
            // j -> 2j: V_{2j} = V_j^2 - 2 Q^j.
            v = v.sqr() - qj.clone().dbl();
            v_next = v_odd;
            qj = qj.sqr();
        }
    }
    let zero = ring.reduce(UBig::ZERO);
    if v_next.dbl() == v || v == zero {
        return true;
    }
    for _ in 1..s {
        v = v.sqr() - qj.clone().dbl();
        if v == zero {
            return true;
        }
        qj = qj.sqr();
    }
    false
}

/// Jacobi(a/n) for a small `a` and a big odd `n`, by quadratic reciprocity:
/// only `n`'s residues mod 8 and mod |a| are needed.
fn jacobi_small(a: i64, n: &UBig) -> i32 {
    let n_mod_8 = (n % 8u32) as u64;
    let mut result = 1;
    // (-1/n) = -1 exactly when n = 3 mod 4.
    if a < 0 && n_mod_8 % 4 == 3 {
        result = -result;
    }
    let mut a = a.unsigned_abs();
    if a == 0 {
        return 0; // n > 1 divides 0
    }
    // (2/n) = -1 exactly when n = 3 or 5 mod 8.
    while a.is_multiple_of(2) {
        a /= 2;
        if n_mod_8 == 3 || n_mod_8 == 5 {
            result = -result;
        }
    }
    if a == 1 {
        return result;
    }
    // Reciprocity for odd a and n: (a/n) = (n/a), negated when both are 3 mod 4.
    if a % 4 == 3 && n_mod_8 % 4 == 3 {
        result = -result;
    }
    result * jacobi_u64(n % a, a)
}

/// Jacobi(a/n) for odd n, on machine words.
fn jacobi_u64(mut a: u64, mut n: u64) -> i32 {
    let mut result = 1;
    a %= n;
    while a != 0 {
        while a.is_multiple_of(2) {
            a /= 2;
            if n % 8 == 3 || n % 8 == 5 {
                result = -result;
            }
        }
        std::mem::swap(&mut a, &mut n);
        if a % 4 == 3 && n % 4 == 3 {
            result = -result;
        }
        a %= n;
    }
    if n == 1 { result } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn big(s: &str) -> UBig {
        s.parse().unwrap()
    }

    fn trial_division(n: u64) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn small_numbers_match_trial_division() {
        for n in 0..20_000u64 {
            assert_eq!(is_prime_u64(n), trial_division(n), "{n}");
            assert_eq!(is_prime(&UBig::from(n)), trial_division(n), "{n}");
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
        let mersenne = |p: usize| (UBig::ONE << p) - UBig::ONE;
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
        let n = UBig::from(n);
        let ring = ConstDivisor::new(n.clone());
        strong_probable_prime_base_2(&n, &ring) && strong_lucas_probable_prime(&n, &ring)
    }

    /// The strong Lucas test alone, against its known pseudoprimes (OEIS
    /// A217255): below 20,000 it passes exactly the primes and these.
    #[test]
    fn the_lucas_test_alone_passes_primes_and_exactly_its_known_pseudoprimes() {
        const PSEUDOPRIMES: [u64; 5] = [5459, 5777, 10877, 16109, 18971];
        for n in (301..20_000u64).step_by(2) {
            let big = UBig::from(n);
            let passes = strong_lucas_probable_prime(&big, &ConstDivisor::new(big.clone()));
            assert_eq!(passes, trial_division(n) || PSEUDOPRIMES.contains(&n), "{n}");
        }
    }

    #[test]
    fn jacobi_symbols_match_eulers_criterion() {
        for p in [1_000_003u64, 998_244_353] {
            for a in -50i64..50 {
                let residue = a.rem_euclid(p as i64) as u64;
                let euler = pow_mod(residue, (p - 1) / 2, p);
                let expected = match euler {
                    0 => 0,
                    1 => 1,
                    _ => -1,
                };
                assert_eq!(jacobi_small(a, &UBig::from(p)), expected, "({a}/{p})");
            }
        }
    }

    #[test]
    fn factorial_and_large_primes() {
        // 1477! + 1 (4,042 digits) is prime; 1477! + 3 is not.
        let factorial = (1..=1477u32).fold(UBig::ONE, |f, k| f * UBig::from(k));
        assert!(is_prime(&(&factorial + UBig::ONE)));
        assert!(!is_prime(&(&factorial + UBig::from(3u8))));
    }
}
