//! Deriche's 4th-order recursive Gaussian (Deriche 1993, "Recursively implementing the
//! Gaussian and its derivatives"): an approximation of the exact FIR of [`crate::gaussian`]
//! whose cost does not grow with sigma, used for the dense elastic field when asked for
//! ([`crate::FieldSmoothing::Recursive`]).
//!
//! The Gaussian is approximated for `x >= 0` by two damped cosines,
//! `g(x) ~ sum_i (a_i cos(w_i x / s) + b_i sin(w_i x / s)) exp(-l_i x / s)`, i.e. four complex
//! exponentials, so it splits into a causal 4th-order recursion over `x[n], x[n-1], ...` and an
//! anticausal one over `x[n+1], x[n+2], ...`, summed. Both start from zero state at the ends:
//! that is exact for scipy's `mode="constant", cval=0` (the input is 0 outside the plane), so
//! no padding is needed. Against scipy's kernel (truncated at 4 sigma, normalised) the impulse
//! response differs by 3.5e-4 in relative L2 norm for sigma 10..15; f32 rounding adds ~1e-3
//! relative on smoothed noise. The field test bounds the whole difference.
//!
//! Arithmetic: f32 `+ - *` in a fixed order (no FMA, no platform libm: the coefficients come
//! from the crate's portable `exp`/`sin_cos` in f64), so results are the same on every CPU.
//! Both axes run as row-by-row recursions over whole rows (SIMD across x); axis 1 by
//! transposing.

use crate::rng;
use crate::scratch;

/// Deriche's 1993 fit of the Gaussian: `(a, b, w, l)` of the two damped-cosine terms, for
/// unit sigma (the overall factor is removed by normalising the discrete sum to 1).
const TERMS: [(f64, f64, f64, f64); 2] = [
    (1.680, 3.735, 0.6318, 1.783),
    (-0.6803, -0.2598, 1.997, 1.723),
];

/// Coefficients of the two recursions (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Deriche {
    /// Causal feed-forward: `n[k]` multiplies `x[i - k]`, k = 0..3.
    causal: [f32; 4],
    /// Anticausal feed-forward: `m[k]` multiplies `x[i + 1 + k]`, k = 0..3.
    anticausal: [f32; 4],
    /// Feedback, both directions: `d[k]` multiplies the output `k + 1` steps back.
    feedback: [f32; 4],
}

#[derive(Clone, Copy)]
struct Complex(f64, f64);

impl Complex {
    fn mul(self, o: Complex) -> Complex {
        Complex(self.0 * o.0 - self.1 * o.1, self.0 * o.1 + self.1 * o.0)
    }
    fn add(self, o: Complex) -> Complex {
        Complex(self.0 + o.0, self.1 + o.1)
    }
}

/// Multiply the polynomial `poly` (in `z^-1`) by `1 - p z^-1`.
fn times_root(poly: &[Complex], p: Complex) -> Vec<Complex> {
    let mut out = vec![Complex(0.0, 0.0); poly.len() + 1];
    for (k, &c) in poly.iter().enumerate() {
        out[k] = out[k].add(c);
        out[k + 1] = out[k + 1].add(c.mul(Complex(-p.0, -p.1)));
    }
    out
}

impl Deriche {
    /// The recursions for `sigma > 0` (pixels).
    pub(crate) fn new(sigma: f64) -> Self {
        // h[i] = sum_j A_j p_j^i for i >= 0, with the four poles p_j (two conjugate pairs).
        let mut terms = Vec::with_capacity(4);
        for &(a, b, w, l) in &TERMS {
            let (s, c) = rng::sin_cos(w / sigma);
            let r = rng::exp(-l / sigma);
            let pole = Complex(r * c, r * s);
            terms.push((Complex(a / 2.0, -b / 2.0), pole));
            terms.push((Complex(a / 2.0, b / 2.0), Complex(pole.0, -pole.1)));
        }
        // H+(z) = sum_j A_j / (1 - p_j z^-1) = N(z^-1) / D(z^-1).
        let mut denominator = vec![Complex(1.0, 0.0)];
        for &(_, p) in &terms {
            denominator = times_root(&denominator, p);
        }
        let mut numerator = [0.0f64; 4];
        for (j, &(a, _)) in terms.iter().enumerate() {
            let mut others = vec![Complex(1.0, 0.0)];
            for (k, &(_, p)) in terms.iter().enumerate() {
                if k != j {
                    others = times_root(&others, p);
                }
            }
            for (n, c) in numerator.iter_mut().zip(&others) {
                *n += a.mul(*c).0;
            }
        }
        // The feedback as the f32 values the recursion will use: the DC gain is a ratio of
        // small sums (1 + sum d ~ 1e-3 for sigma 15), so it is normalised with these.
        let d: [f64; 4] = std::array::from_fn(|k| denominator[k + 1].0 as f32 as f64);
        // The anticausal part h[-i] = h[i], i >= 1: m_k = n_k - d_k n_0 (m_4 = -d_4 n_0).
        let m: [f64; 4] = std::array::from_fn(|k| {
            let n_k = if k + 1 < 4 { numerator[k + 1] } else { 0.0 };
            n_k - d[k] * numerator[0]
        });
        // Normalise the whole discrete response to sum 1, like scipy's kernel.
        let d_sum = 1.0 + d.iter().sum::<f64>();
        let total = (numerator.iter().sum::<f64>() + m.iter().sum::<f64>()) / d_sum;
        Self {
            causal: numerator.map(|v| (v / total) as f32),
            anticausal: m.map(|v| (v / total) as f32),
            feedback: d.map(|v| v as f32),
        }
    }
}

/// Filter a `width` x `height` plane along axis 0 (down the columns): `dst` = causal +
/// anticausal responses, zero outside the plane. Whole rows at a time, so it vectorises
/// (AVX2 when the CPU has it: no FMA, so the same bits either way).
fn filter_axis0(src: &[f32], dst: &mut [f32], width: usize, height: usize, c: &Deriche) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the callee is safe Rust.
            unsafe { filter_axis0_avx2(src, dst, width, height, c) };
            return;
        }
    }
    filter_axis0_generic(src, dst, width, height, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn filter_axis0_avx2(
    src: &[f32],
    dst: &mut [f32],
    width: usize,
    height: usize,
    c: &Deriche,
) {
    filter_axis0_generic(src, dst, width, height, c);
}

#[inline(always)]
fn filter_axis0_generic(src: &[f32], dst: &mut [f32], width: usize, height: usize, c: &Deriche) {
    let zero = vec![0.0f32; width];
    let row = |i: isize| -> &[f32] {
        if i < 0 || i >= height as isize {
            &zero
        } else {
            &src[i as usize * width..][..width]
        }
    };
    let [n0, n1, n2, n3] = c.causal;
    let [d1, d2, d3, d4] = c.feedback;
    // Causal, top to bottom, straight into dst.
    for i in 0..height {
        let (done, rest) = dst.split_at_mut(i * width);
        let out = &mut rest[..width];
        let prev = |k: usize| -> &[f32] {
            if i >= k {
                &done[(i - k) * width..][..width]
            } else {
                &zero
            }
        };
        let (y1, y2, y3, y4) = (prev(1), prev(2), prev(3), prev(4));
        let ii = i as isize;
        let (x0, x1, x2, x3) = (row(ii), row(ii - 1), row(ii - 2), row(ii - 3));
        for j in 0..width {
            out[j] = n0 * x0[j] + n1 * x1[j] + n2 * x2[j] + n3 * x3[j]
                - d1 * y1[j]
                - d2 * y2[j]
                - d3 * y3[j]
                - d4 * y4[j];
        }
    }
    // Anticausal, bottom to top, in a ring of five rows, added to dst.
    let [m1, m2, m3, m4] = c.anticausal;
    let mut ring: [Vec<f32>; 5] = std::array::from_fn(|_| vec![0.0f32; width]);
    for i in (0..height).rev() {
        let ii = i as isize;
        let (x1, x2, x3, x4) = (row(ii + 1), row(ii + 2), row(ii + 3), row(ii + 4));
        let (head, tail) = ring.split_at_mut(1);
        let out = &mut head[0][..width];
        let (y1, y2, y3, y4) = (
            &tail[0][..width],
            &tail[1][..width],
            &tail[2][..width],
            &tail[3][..width],
        );
        for j in 0..width {
            out[j] = m1 * x1[j] + m2 * x2[j] + m3 * x3[j] + m4 * x4[j]
                - d1 * y1[j]
                - d2 * y2[j]
                - d3 * y3[j]
                - d4 * y4[j];
        }
        for (d, &a) in dst[i * width..][..width].iter_mut().zip(out.iter()) {
            *d += a;
        }
        // a[i] becomes "one step back" for row i - 1; the oldest row is reused.
        ring.rotate_right(1);
    }
}

/// `dst[x * height + y] = src[y * width + x] * gain`, in 8 x 8 tiles: eight lines on each
/// side stay in L1 even at power-of-two strides, which map to few cache sets.
fn transpose_scaled(src: &[f32], dst: &mut [f32], width: usize, height: usize, gain: f32) {
    const TILE: usize = 8;
    for y0 in (0..height).step_by(TILE) {
        for x0 in (0..width).step_by(TILE) {
            for y in y0..(y0 + TILE).min(height) {
                for x in x0..(x0 + TILE).min(width) {
                    dst[x * height + y] = src[y * width + x] * gain;
                }
            }
        }
    }
}

/// Smooth a `width` x `height` plane along both axes with the recursive Gaussian, times
/// `gain`, into `dst` (row-major). The input comes *transposed*: `src_transposed[x * height +
/// y]` is pixel `(x, y)`, so the axis-1 pass runs first as an axis-0 pass over it and one
/// transpose (which also applies the gain) suffices. For noise that costs nothing: the
/// generator simply fills the transposed layout.
pub(crate) fn smooth_recursive_transposed(
    src_transposed: &[f32],
    dst: &mut [f32],
    width: usize,
    height: usize,
    coefficients: &Deriche,
    gain: f32,
) {
    let n = width * height;
    let mut along_x = scratch::take(n);
    let mut row_major = scratch::take(n);
    filter_axis0(src_transposed, &mut along_x, height, width, coefficients);
    transpose_scaled(&along_x, &mut row_major, height, width, gain);
    filter_axis0(&row_major, dst, width, height, coefficients);
    scratch::give(along_x);
    scratch::give(row_major);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::gaussian_kernel;

    /// The 1-D impulse response against scipy's truncated, normalised kernel.
    #[test]
    fn impulse_response_is_close_to_the_exact_kernel() {
        for sigma in [2.0f32, 10.0, 15.0] {
            let exact = gaussian_kernel(sigma, 4.0).unwrap();
            let r = exact.len() / 2;
            let len = exact.len() + 40;
            let mut impulse = vec![0.0f32; len];
            impulse[20 + r] = 1.0;
            let mut response = vec![0.0f32; len];
            // A column plane (width 1): axis 0 is the 1-D signal.
            filter_axis0(&impulse, &mut response, 1, len, &Deriche::new(sigma as f64));
            let peak = exact[r];
            let mut err2 = 0.0f64;
            let mut norm2 = 0.0f64;
            for (i, &v) in response.iter().enumerate() {
                let k = i as isize - 20;
                let e = if (0..exact.len() as isize).contains(&k) {
                    exact[k as usize]
                } else {
                    0.0
                };
                assert!(
                    (v - e).abs() < 2e-3 * peak,
                    "sigma {sigma}, tap {i}: {v} vs {e}"
                );
                err2 += ((v - e) as f64).powi(2);
                norm2 += (e as f64).powi(2);
            }
            assert!(
                (err2 / norm2).sqrt() < 2e-3,
                "sigma {sigma}: {}",
                (err2 / norm2).sqrt()
            );
            // The DC gain: f32 feedback coefficients leave ~1e-4 (0.0004 px on a 4 px field).
            let total: f32 = response.iter().sum();
            assert!((total - 1.0).abs() < 5e-4, "sigma {sigma}: sum {total}");
        }
    }

    #[test]
    fn transpose_round_trips() {
        let (w, h) = (37, 45);
        let src: Vec<f32> = (0..w * h).map(|i| i as f32).collect();
        let (mut t, mut back) = (vec![0.0; w * h], vec![0.0; w * h]);
        transpose_scaled(&src, &mut t, w, h, 1.0);
        assert_eq!(t[3 * h + 5], src[5 * w + 3]);
        transpose_scaled(&t, &mut back, h, w, 2.0);
        assert!(back.iter().zip(&src).all(|(b, s)| *b == 2.0 * s));
    }
}
