//! A portable seeded random number generator and the few transcendental functions it needs.
//!
//! Everything here uses only IEEE-754 operations that are correctly rounded on every platform
//! (`+ - * /`, `sqrt`, `floor`, bit manipulation), never the platform's `libm` (`ln`, `exp`, `sin`
//! differ in the last bit between glibc, macOS and MSVC). So a seed gives the same numbers, and
//! the pipeline the same output, bit for bit, on every platform.

use std::f64::consts::{FRAC_PI_2, LN_2, SQRT_2};

/// The SplitMix64 increment (the golden ratio in 64-bit fixed point).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function: a bijective avalanche of 64 bits.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Derive an independent seed for sub-stream `stream` of `seed` (per step, per sample).
#[inline]
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ mix64(stream.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
}

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, portable and fast.
///
/// ```
/// use unet_augment::SplitMix64;
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let u = a.uniform();
/// assert!((0.0..1.0).contains(&u));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: mix64(seed) }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi] (one draw even when lo == hi, so the stream does not depend on it).
    #[inline]
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        let u = self.uniform();
        if lo == hi {
            lo
        } else {
            lo + (hi - lo) * u
        }
    }

    /// Uniform integer in [0, n) (n > 0), by a 128-bit multiply (bias below 2^-64 * n).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p` (always exactly one draw).
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Fill `out` with uniform values in [-1, 1), two 24-bit values per 64-bit draw.
    pub fn fill_uniform_symmetric(&mut self, out: &mut [f32]) {
        const SCALE: f32 = 1.0 / (1u32 << 23) as f32;
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = self.next_u64();
            pair[0] = (bits >> 40) as f32 * SCALE - 1.0;
            pair[1] = ((bits >> 8) & 0xff_ffff) as f32 * SCALE - 1.0;
        }
        for last in pairs.into_remainder() {
            *last = (self.next_u64() >> 40) as f32 * SCALE - 1.0;
        }
    }

    /// A standard normal deviate: Marsaglia and Tsang's ziggurat (128 layers, Doornik's
    /// ZIGNOR variant), one 64-bit draw in 99% of the calls; tables and tails use the portable
    /// `exp`/`ln` below.
    pub fn normal(&mut self) -> f64 {
        let table = ziggurat();
        loop {
            let bits = self.next_u64();
            let layer = (bits & 0x7f) as usize;
            let u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
            if u.abs() < table.ratio[layer] {
                return u * table.x[layer];
            }
            if layer == 0 {
                return self.normal_tail(u < 0.0);
            }
            let x = u * table.x[layer];
            let f0 = exp(-0.5 * (table.x[layer] * table.x[layer] - x * x));
            let f1 = exp(-0.5 * (table.x[layer + 1] * table.x[layer + 1] - x * x));
            if f1 + self.uniform() * (f0 - f1) < 1.0 {
                return x;
            }
        }
    }

    /// The tail beyond the base layer's edge (Marsaglia 1964).
    fn normal_tail(&mut self, negative: bool) -> f64 {
        loop {
            let x = ln(1.0 - self.uniform()) / ZIG_R;
            let y = ln(1.0 - self.uniform());
            if -2.0 * y >= x * x {
                return if negative { x - ZIG_R } else { ZIG_R - x };
            }
        }
    }
}

/// Right edge of the base layer and the common area of the 128 ziggurat layers (Doornik 2005).
const ZIG_R: f64 = 3.442_619_855_899;
const ZIG_V: f64 = 9.912_563_035_262_17e-3;

struct Ziggurat {
    x: [f64; 129],
    ratio: [f64; 128],
}

fn ziggurat() -> &'static Ziggurat {
    static TABLE: std::sync::OnceLock<Ziggurat> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x = [0.0; 129];
        let mut f = exp(-0.5 * ZIG_R * ZIG_R);
        x[0] = ZIG_V / f;
        x[1] = ZIG_R;
        for i in 2..128 {
            x[i] = (-2.0 * ln(ZIG_V / x[i - 1] + f)).sqrt();
            f = exp(-0.5 * x[i] * x[i]);
        }
        let ratio = std::array::from_fn(|i| x[i + 1] / x[i]);
        Ziggurat { x, ratio }
    })
}

/// Natural logarithm of a positive finite `x`, portable (atanh series, relative error ~1e-16).
pub(crate) fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i64;
    if biased == 0 {
        // Subnormal: scale into the normal range first.
        return ln(x * (1u64 << 54) as f64) - 54.0 * LN_2;
    }
    let mut exponent = biased - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    // ln(m) = 2 atanh(z), |z| <= 0.172, so 12 terms reach ~1e-19.
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut term = z;
    let mut sum = z;
    for k in 1..12 {
        term *= z2;
        sum += term / (2 * k + 1) as f64;
    }
    2.0 * sum + exponent as f64 * LN_2
}

/// e^x, portable (range reduction by ln 2, Taylor series; relative error ~1e-16).
pub(crate) fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    // Cody-Waite reduction (fdlibm's split of ln 2: `k * LN2_HI` is exact for |k| < 2^11).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    let k = (x / LN_2 + 0.5).floor();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..18 {
        term *= r / n as f64;
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// `x^p` for `x >= 0`, portable.
pub(crate) fn powf(x: f64, p: f64) -> f64 {
    if x == 0.0 {
        if p == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        exp(p * ln(x))
    }
}

/// (sin x, cos x), portable (reduction by pi/2, Taylor series); exact (0, 1) at 0.
pub(crate) fn sin_cos(x: f64) -> (f64, f64) {
    let quadrant = (x / FRAC_PI_2 + 0.5).floor();
    let r = x - quadrant * FRAC_PI_2;
    let r2 = r * r;
    let (mut s, mut c) = (r, 1.0);
    let (mut ts, mut tc) = (r, 1.0);
    for n in 1..14 {
        ts *= -r2 / ((2 * n) * (2 * n + 1)) as f64;
        tc *= -r2 / ((2 * n - 1) * (2 * n)) as f64;
        s += ts;
        c += tc;
    }
    match (quadrant as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_math_matches_std() {
        for &x in &[
            1e-300, 1e-5, 0.3, 0.9, 1.0, 1.5, 2.0, 10.0, 12345.678, 1e300,
        ] {
            assert!(
                (ln(x) - x.ln()).abs() <= 1e-14 * x.ln().abs().max(1.0),
                "ln {x}"
            );
        }
        for &x in &[-700.0, -20.0, -1.0, -0.3, 0.0, 0.4, 1.0, 5.5, 300.0] {
            assert!((exp(x) - x.exp()).abs() <= 1e-14 * x.exp(), "exp {x}");
        }
        for i in -40..=40 {
            let x = i as f64 * 0.173;
            let (s, c) = sin_cos(x);
            assert!(
                (s - x.sin()).abs() < 1e-14 && (c - x.cos()).abs() < 1e-14,
                "sin_cos {x}"
            );
        }
        assert_eq!(sin_cos(0.0), (0.0, 1.0));
        assert!((powf(0.25, 0.5) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn known_stream_is_stable() {
        // SplitMix64's published first output for state 0 after one increment.
        let mut rng = SplitMix64 { state: 0 };
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut rng = SplitMix64::new(42);
        let n = 200_000;
        let (mut s1, mut s2, mut s4) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let z = rng.normal();
            s1 += z;
            s2 += z * z;
            s4 += z * z * z * z;
        }
        let n = n as f64;
        assert!((s1 / n).abs() < 0.01);
        assert!((s2 / n - 1.0).abs() < 0.015);
        assert!((s4 / n - 3.0).abs() < 0.1);
        // Tails: P(|z| > 3) = 0.0027 and P(|z| > 3.5) = 0.000465 (past the base layer).
        let (mut beyond3, mut beyond35) = (0, 0);
        for _ in 0..400_000 {
            let z = rng.normal().abs();
            beyond3 += (z > 3.0) as usize;
            beyond35 += (z > 3.5) as usize;
        }
        assert!(
            (beyond3 as f64 / 400_000.0 - 0.0027).abs() < 0.0004,
            "{beyond3}"
        );
        assert!(
            (beyond35 as f64 / 400_000.0 - 0.000465).abs() < 0.00015,
            "{beyond35}"
        );
        let mut buf = vec![0.0f32; 100_001];
        rng.fill_uniform_symmetric(&mut buf);
        assert!(buf.iter().all(|v| (-1.0..1.0).contains(v)));
        let var = buf.iter().map(|&v| (v * v) as f64).sum::<f64>() / buf.len() as f64;
        assert!((var - 1.0 / 3.0).abs() < 0.01);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[rng.below(5) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
