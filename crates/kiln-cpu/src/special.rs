//! `exp`, `erf` and `tanh` written as plain f64 arithmetic, so that a loop over them
//! vectorises: a library call per element was a tenth (`exp`: softmax, GELU's gradient,
//! sigmoid) and a third (`erf`: GELU and its gradient) of a transformer step on one
//! core, and `tanh` 30% of an LSTM step. The result is the same bits with or without
//! the CPU's vector units: the polynomials use fused multiply-adds, which round once on
//! every CPU (in hardware, or in the C library's `fma` where there is none), and the
//! rest is plain IEEE arithmetic.

/// `log2(e)`, rounded to f64.
const LOG2_E: f64 = std::f64::consts::LOG2_E;
/// `ln 2` split in two: the high part has 32 significant bits, so `k * LN2_HI` is exact
/// for every `k` this function meets, and the low part carries the rest.
const LN2_HI: f64 = 0.6931471803691238;
const LN2_LO: f64 = 1.9082149292705877e-10;
/// Adding then subtracting `1.5 * 2^52` rounds a float of magnitude below `2^51` to an
/// integer (ties to even), and leaves that integer in the low bits of the sum.
const ROUND: f64 = 6755399441055744.0;
/// Past these, `e^x` is infinite or zero in f64; clamping keeps `k` small enough for
/// the two-step scaling below to overflow or underflow on its own.
const CLAMP: f64 = 800.0;
/// Terms of the Taylor series of `e^r` for `|r| <= ln(2) / 2`: the first left out,
/// `r^14 / 14!`, is below 5e-18.
const TERMS: usize = 14;

/// `1 / (n + from)!` for `n < N`, highest power first: a Taylor series' coefficients,
/// each the one before divided by the next integer.
const fn reciprocal_factorials<const N: usize>(from: usize) -> [f64; N] {
    let mut c = [0.0; N];
    let mut f = 1.0;
    let mut k = 2;
    while k <= from {
        f /= k as f64;
        k += 1;
    }
    let mut n = 0;
    while n < N {
        c[N - 1 - n] = f;
        f /= (n + from + 1) as f64;
        n += 1;
    }
    c
}

/// The series' coefficients `1 / n!` for `n < TERMS`, highest power first.
const TAYLOR: [f64; TERMS] = reciprocal_factorials(0);

/// `e^x` within 1 ulp of the C library's (a test checks the whole range), with
/// NaN, infinities, overflow and subnormal results as `f64::exp` gives them.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // `clamp` keeps NaN, which then poisons the result.
    let x = x.clamp(-CLAMP, CLAMP);
    // x = k ln 2 + r with |r| <= ln(2) / 2, then e^x = 2^k e^r.
    let k = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = polynomial(&TAYLOR, r);
    // 2^k in two halves: each is a normal float for |k| <= 1154, where one 2^k would
    // not be, and the second multiplication rounds into the subnormals or overflows.
    // Integer k stays a float (exact) and reaches the exponent bits through ROUND, so
    // the loop needs no float-to-integer conversion, which older vector units lack.
    let half = (k * 0.5 + ROUND) - ROUND;
    let power = |e: f64| {
        let e = (e + ROUND).to_bits().wrapping_sub(ROUND.to_bits());
        f64::from_bits(e.wrapping_add(1023) << 52)
    };
    p * power(half) * power(k - half)
}

// From `tools/fit_erf.py` (Chebyshev fits in 50-digit arithmetic):
/// erf(x) / x in `s = (x^2 - 2) / 2`, highest power first.
const NEAR: [f64; 18] = [
    -1.8874163743967482e-12,
    1.7218858155484183e-11,
    -1.401554063331593e-10,
    1.1331611787961273e-09,
    -8.617665144205791e-09,
    6.11973590542225e-08,
    -4.045094947367635e-07,
    2.475801058763217e-06,
    -1.3946273727597251e-05,
    7.180100878143417e-05,
    -0.0003351435335293146,
    0.0014050914235853634,
    -0.005234875836158027,
    0.017128344571823145,
    -0.04866277744915509,
    0.11947913860985163,
    -0.2611118609312454,
    0.674933236039655,
];
/// erfc(x) e^(x^2) in `s = x - 4` (over 2), highest power first.
const FAR: [f64; 21] = [
    2.289129018275158e-09,
    -6.7237580409382605e-09,
    7.51985535709463e-09,
    -2.0848628708497824e-08,
    8.400637713845437e-08,
    -2.3270040011180073e-07,
    6.024756248132528e-07,
    -1.618701135767133e-06,
    4.314825741710838e-06,
    -1.1275073990509855e-05,
    2.9011515082962187e-05,
    -7.352008568773549e-05,
    0.00018330777006575385,
    -0.000449327170817165,
    0.0010819615443804634,
    -0.002557084145437522,
    0.005925639504306034,
    -0.013449456615099843,
    0.029861732979897134,
    -0.06476701219002746,
    0.13699945762506138,
];

/// Horner's rule over `c`, highest power first, in fused multiply-adds: one rounding a
/// step, and one instruction where the CPU has them. The result is the same bits where
/// it does not (the baseline copy calls the C library's `fma`, which rounds once too),
/// only slower.
#[inline(always)]
fn polynomial<const N: usize>(c: &[f64; N], s: f64) -> f64 {
    c[1..].iter().fold(c[0], |acc, &k| acc.mul_add(s, k))
}

/// The error function, with no branch: both pieces are computed and one selected. Within
/// 2.2e-16 of the exact value as `tools/fit_erf.py` evaluates it; a test holds it within
/// 3.5e-16 of libm's `erf` (itself within about 1.1e-16). NaN gives NaN.
#[inline(always)]
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let near = near_erf(x);
    // `clamp` keeps NaN, so NaN reaches `far`.
    let clamped = ax.clamp(2.0, 6.0);
    let tail = exp(-clamped * clamped) * polynomial(&FAR, (clamped - 4.0) * 0.5);
    let far = if ax >= 6.0 { 1.0 } else { 1.0 - tail };
    if ax < 2.0 {
        near
    } else {
        far.copysign(x)
    }
}

/// The piece of `erf` for `|x| < 2`.
#[inline(always)]
fn near_erf(x: f64) -> f64 {
    x * polynomial(&NEAR, (x * x - 2.0) * 0.5)
}

/// `erf(x)` for `|x| < 2`, bitwise, and NaN elsewhere: the near piece alone, a third of
/// the work. A loop over mostly small arguments computes this first, then computes
/// again with `erf` any block where it gave NaN.
#[inline(always)]
pub fn erf_near(x: f64) -> f64 {
    if x.abs() < 2.0 {
        near_erf(x)
    } else {
        f64::NAN
    }
}

/// Below this `|x|`, `tanh` takes `e^y - 1` (`y = -2|x|`) from its series: there
/// `1 - e^y` would cancel. From here on `e^y <= e^-1`, and the subtraction loses at most
/// one bit.
const TANH_SERIES_BELOW: f64 = 0.5;
/// Terms of the series `(e^y - 1) / y = sum of y^n / (n + 1)!` for `|y| <= 1`: the first
/// left out, `1 / 20!`, is below 5e-19.
const EXPM1_TERMS: usize = 19;

/// The series' coefficients `1 / (n + 1)!` for `n < EXPM1_TERMS`, highest power first.
const EXPM1_SERIES: [f64; EXPM1_TERMS] = reciprocal_factorials(1);

/// The hyperbolic tangent, with no branch: `(1 - e^y) / (1 + e^y)` at `y = -2|x|`, the
/// sign put back last. Below `TANH_SERIES_BELOW` it is `-u / (2 + u)` with `u = e^y - 1`
/// from its series, where `1 - e^y` would cancel; both are computed and one selected. A
/// test holds it within 3 ulp of the C library's `tanh`; NaN gives NaN, zero keeps its
/// sign, and large arguments give +-1 exactly, as the library's does.
#[inline(always)]
pub fn tanh(x: f64) -> f64 {
    let a = x.abs();
    let y = -2.0 * a;
    let u = y * polynomial(&EXPM1_SERIES, y);
    let t = exp(y);
    let (num, den) = if a < TANH_SERIES_BELOW {
        (-u, 2.0 + u)
    } else {
        (1.0 - t, 1.0 + t)
    };
    (num / den).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many representable f64 values lie between `a` and `b` (both finite, same sign).
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn exp_is_within_one_ulp_of_the_c_library_everywhere() {
        let mut worst = (0, 0.0);
        // Dense over the whole finite range, plus the points where the reduction's k
        // changes (odd multiples of ln(2) / 2) and the edges of overflow and underflow.
        let sweep = (-7_460_000..=7_100_000).map(|i| i as f64 * 1e-4);
        let edges = (-1080..=1030).flat_map(|k| {
            let t = (k as f64 + 0.5) * std::f64::consts::LN_2;
            [t, t.next_up(), t.next_down()]
        });
        for x in sweep.chain(edges) {
            let (got, want) = (exp(x), x.exp());
            if want == 0.0 || want.is_infinite() {
                assert_eq!(got, want, "exp({x:e})");
                continue;
            }
            // Subnormal results carry fewer bits: there 1 ulp is 2^-1074, as in the
            // normal range.
            let u = ulps(got, want);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 1, "{} ulps at exp({:e})", worst.0, worst.1);
    }

    #[test]
    fn erf_is_within_3_5e_16_of_libm_everywhere() {
        // libm's erf is itself within about 1.1e-16 of the exact value.
        let mut worst = (0.0, 0.0);
        let sweep = (-7_000_000..=7_000_000).map(|i| i as f64 * 1e-6);
        let seams = [2.0f64, 6.0].into_iter().flat_map(|e| {
            let mut near = vec![e, -e];
            let (mut up, mut down) = (e, e);
            for _ in 0..100 {
                (up, down) = (up.next_up(), down.next_down());
                near.extend([up, down, -up, -down]);
            }
            near
        });
        for x in sweep.chain(seams) {
            let d = (erf(x) - libm::erf(x)).abs();
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(
            worst.0 <= 2.3e-16 + 1.2e-16,
            "{:e} off at erf({})",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn erf_keeps_the_special_values() {
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert_eq!(erf(0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(erf(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(erf(6.5), 1.0);
        assert_eq!(erf(-30.0), -1.0);
    }

    #[test]
    fn tanh_is_within_3_ulp_of_the_c_library_everywhere() {
        let mut worst = (0, 0.0);
        // Dense up to where tanh is 1 in f64, the seam between the two ways of finding
        // e^y - 1, and tiny and subnormal arguments.
        let sweep = (-2_000_000..=2_000_000).map(|i| i as f64 * 1e-5);
        let seam = (0..200).flat_map(|i| {
            let (mut up, mut down) = (TANH_SERIES_BELOW, TANH_SERIES_BELOW);
            for _ in 0..i {
                (up, down) = (up.next_up(), down.next_down());
            }
            [up, down, -up, -down]
        });
        let tiny = (-1074..-20).map(|e| 1.37 * 2f64.powi(e));
        for x in sweep.chain(seam).chain(tiny) {
            let (got, want) = (tanh(x), x.tanh());
            let u = if got.signum() == want.signum() {
                ulps(got, want)
            } else {
                u64::MAX
            };
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 3, "{} ulps at tanh({:e})", worst.0, worst.1);
    }

    #[test]
    fn tanh_keeps_the_special_values() {
        assert!(tanh(f64::NAN).is_nan());
        assert_eq!(tanh(f64::INFINITY), 1.0);
        assert_eq!(tanh(f64::NEG_INFINITY), -1.0);
        assert_eq!(tanh(0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(tanh(25.0), 1.0);
        assert_eq!(tanh(-800.0), -1.0);
        assert_eq!(tanh(1e-300), 1e-300);
    }

    #[test]
    fn exp_keeps_the_special_values() {
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(709.8), f64::INFINITY);
        assert_eq!(exp(709.7), 709.7f64.exp());
        assert_eq!(exp(-745.2), 0.0);
        assert!(exp(-745.0) > 0.0, "the smallest subnormal");
    }
}
