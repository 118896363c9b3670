//! Resampling a plane through a coordinate map (for each output pixel, the source coordinate).
//!
//! Conventions (all planes, all interpolations):
//! - Pixel centres sit at integer coordinates; `x` runs along a row, `y` down the columns.
//! - [`BorderMode::Mirror`] reflects about the edge pixels' centres without repeating them
//!   (`d c b | a b c d | c b a`): scipy.ndimage mode `'mirror'`, numpy.pad mode `'reflect'`.
//!   For bilinear interpolation, reflecting the coordinate equals interpolating the mirrored
//!   image, so it matches `scipy.ndimage.map_coordinates(order=1, mode="mirror")`.
//! - [`BorderMode::Constant`]: a coordinate outside `[0, n - 1]` gives the fill value (scipy mode
//!   `'constant'`: no interpolation with the fill value across the edge).
//! - A NaN coordinate gives the fill value in both modes (the pipeline marks "outside" that way).

use crate::error::{Error, Result};
use crate::sample::check_plane_len;

/// How image and weight planes are interpolated. Labels always use nearest neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Nearest neighbour (ties round up: `floor(x + 0.5)`).
    Nearest,
    /// Bilinear (scipy `order=1`).
    #[default]
    Bilinear,
    /// Bicubic convolution (Keys, a = -0.5; interpolating, not scipy's B-spline `order=3`).
    Bicubic,
}

/// What lies outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BorderMode {
    /// Mirror about the edge pixels, no edge duplication (scipy `'mirror'`, numpy `'reflect'`).
    #[default]
    Mirror,
    /// A constant fill value (given separately per plane kind).
    Constant,
}

/// For each pixel of a `width` x `height` output, the source coordinate `(xs[i], ys[i])`.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordMap {
    /// Output width.
    pub width: usize,
    /// Output height.
    pub height: usize,
    /// Source x (column) per output pixel, row-major.
    pub xs: Vec<f32>,
    /// Source y (row) per output pixel, row-major.
    pub ys: Vec<f32>,
}

impl CoordMap {
    /// The identity map of a `width` x `height` image.
    pub fn identity(width: usize, height: usize) -> Self {
        let mut xs = Vec::with_capacity(width * height);
        let mut ys = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                xs.push(x as f32);
                ys.push(y as f32);
            }
        }
        Self {
            width,
            height,
            xs,
            ys,
        }
    }

    fn check(&self) -> Result<()> {
        check_plane_len("xs", self.width * self.height, self.xs.len())?;
        check_plane_len("ys", self.width * self.height, self.ys.len())
    }
}

/// Reflect an index into `[0, n)` (scipy `'mirror'`).
#[inline]
pub(crate) fn mirror_index(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Reflect a coordinate into `[0, n - 1]` (scipy `'mirror'`); NaN stays NaN.
#[inline]
pub(crate) fn mirror_coord(x: f32, n: usize) -> f32 {
    let last = (n - 1) as f32;
    if (0.0..=last).contains(&x) {
        return x;
    }
    if n == 1 {
        return if x.is_nan() { x } else { 0.0 };
    }
    let period = 2.0 * last;
    let m = x.rem_euclid(period);
    if m > last {
        period - m
    } else {
        m
    }
}

/// Apply the border rule to a coordinate: in `[0, n - 1]` afterwards, or NaN for "outside".
#[inline]
pub(crate) fn fold_coord(x: f32, n: usize, border: BorderMode) -> f32 {
    match border {
        BorderMode::Mirror => mirror_coord(x, n),
        BorderMode::Constant => {
            if (0.0..=(n - 1) as f32).contains(&x) {
                x
            } else {
                f32::NAN
            }
        }
    }
}

/// Keys cubic convolution weights (a = -0.5) for taps at offsets -1, 0, 1, 2 from `floor(x)`.
#[inline]
pub(crate) fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.5;
    let near = |s: f32| ((A + 2.0) * s - (A + 3.0)) * s * s + 1.0;
    let far = |s: f32| ((A * s - 5.0 * A) * s + 8.0 * A) * s - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// The planes a resampling moves together; one coordinate computation serves all of them.
pub(crate) struct Planes<'a> {
    pub width: usize,
    pub height: usize,
    /// Interpolated planes with their fill values.
    pub smooth: Vec<(&'a [f32], f32)>,
    /// Nearest-neighbour label plane with its fill value.
    pub label: Option<(&'a [u8], u8)>,
}

/// Marks a NaN ("outside") coordinate in [`SpanScratch::cell`].
const OUTSIDE: usize = usize::MAX;

/// Per-span work arrays of the bilinear path: each output pixel's 2x2 cell (index of its
/// top-left tap, or [`OUTSIDE`]) and fractions, computed once and shared by every plane.
#[derive(Default)]
pub(crate) struct SpanScratch {
    cell: Vec<usize>,
    fx: Vec<f32>,
    fy: Vec<f32>,
}

/// Resample `planes` at the folded coordinates `(xs, ys)` (in range or NaN) of one span of output
/// pixels: smooth plane `k` goes to `smooth_out[k][offset..offset + xs.len()]`, the label plane
/// to `label_out` (the span's slice).
pub(crate) fn resample_span(
    planes: &Planes<'_>,
    (xs, ys): (&[f32], &[f32]),
    interpolation: Interpolation,
    smooth_out: &mut [&mut [f32]],
    offset: usize,
    label_out: Option<&mut [u8]>,
    scratch: &mut SpanScratch,
) {
    let (w, h) = (planes.width, planes.height);
    let len = xs.len();
    if interpolation == Interpolation::Bilinear && w >= 2 && h >= 2 {
        bilinear_cells(w, h, xs, ys, scratch);
        let SpanScratch { cell, fx, fy } = scratch;
        prefetch_cells(planes, cell, true);
        for (&(src, fill), out) in planes.smooth.iter().zip(smooth_out.iter_mut()) {
            bilinear_span(src, w, fill, cell, fx, fy, &mut out[offset..offset + len]);
        }
        if let (Some((src, fill)), Some(out)) = (planes.label, label_out) {
            // floor(x + 0.5) from the cell, exactly: x0 + (fx >= 0.5), clamped cells included.
            for (((o, &c), &fx), &fy) in out.iter_mut().zip(&cell[..len]).zip(&fx[..]).zip(&fy[..])
            {
                *o = if c == OUTSIDE {
                    fill
                } else {
                    // Branch-free: the comparisons are coin flips for a predictor.
                    src[c + (fx >= 0.5) as usize + w * (fy >= 0.5) as usize]
                };
            }
        }
        return;
    }
    if interpolation == Interpolation::Nearest {
        // One index per pixel, shared by every plane (flips and quarter turns land here).
        let cell = &mut scratch.cell;
        cell.resize(len, 0);
        for (c, (&x, &y)) in cell.iter_mut().zip(xs.iter().zip(ys)) {
            *c = if x.is_nan() || y.is_nan() {
                OUTSIDE
            } else {
                // Folded coordinates are >= 0 and < 2^23, so `x + 0.5` is exact and the
                // cast floors.
                (y + 0.5) as u32 as usize * w + (x + 0.5) as u32 as usize
            };
        }
        prefetch_cells(planes, cell, false);
        for (&(src, fill), out) in planes.smooth.iter().zip(smooth_out.iter_mut()) {
            gather(src, cell, fill, &mut out[offset..offset + len]);
        }
        if let (Some((src, fill)), Some(out)) = (planes.label, label_out) {
            gather(src, cell, fill, out);
        }
        return;
    }
    for (&(src, fill), out) in planes.smooth.iter().zip(smooth_out.iter_mut()) {
        let out = &mut out[offset..offset + len];
        match interpolation {
            Interpolation::Nearest => nearest_span(src, w, xs, ys, fill, out),
            Interpolation::Bilinear => bilinear_edge_span(src, w, h, xs, ys, fill, out),
            Interpolation::Bicubic => bicubic_span(src, w, h, xs, ys, fill, out),
        }
    }
    if let (Some((src, fill)), Some(out)) = (planes.label, label_out) {
        nearest_span(src, w, xs, ys, fill, out);
    }
}

/// The 2x2 cells of folded coordinates; `w, h >= 2`. The cell is clamped so its taps are in
/// range: at the last pixel the fraction becomes 1.
#[inline]
fn bilinear_cells(w: usize, h: usize, xs: &[f32], ys: &[f32], scratch: &mut SpanScratch) {
    let len = xs.len();
    scratch.cell.resize(len, 0);
    scratch.fx.resize(len, 0.0);
    scratch.fy.resize(len, 0.0);
    let cells = scratch
        .cell
        .iter_mut()
        .zip(&mut scratch.fx)
        .zip(&mut scratch.fy);
    for (((c, fx), fy), (&x, &y)) in cells.zip(xs.iter().zip(ys)) {
        if x.is_nan() || y.is_nan() {
            (*c, *fx, *fy) = (OUTSIDE, 0.0, 0.0);
            continue;
        }
        // In range and < 2^23 once folded: the u32 cast is exact and cheaper than usize's.
        let x0 = (x as u32 as usize).min(w - 2);
        let y0 = (y as u32 as usize).min(h - 2);
        (*c, *fx, *fy) = (y0 * w + x0, x - x0 as f32, y - y0 as f32);
    }
}

/// Ask for the cache lines of a span's cells in every plane before interpolating them: a
/// warped span wanders over several source rows, which the hardware prefetchers do not
/// predict, and waiting for each line in turn was most of the resampling time. A hint only:
/// it changes no result.
#[inline]
fn prefetch_cells(planes: &Planes<'_>, cell: &[usize], two_rows: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let w = if two_rows { planes.width } else { 0 };
        // Every fourth pixel: neighbours share lines (16 f32 per line) and rows change slowly.
        for &c in cell.iter().step_by(4) {
            if c == OUTSIDE {
                continue;
            }
            for &(src, _) in &planes.smooth {
                // SAFETY: prefetching never faults or writes; the addresses are in the plane
                // anyway (the cell's taps are in range).
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(c) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(c + w) as *const i8);
                }
            }
            if let Some((src, _)) = planes.label {
                // SAFETY: as above.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(c) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(c + w) as *const i8);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (planes, cell, two_rows);
}

/// `out[i] = src[cell[i]]`, or `fill` outside.
#[inline]
fn gather<T: Copy>(src: &[T], cell: &[usize], fill: T, out: &mut [T]) {
    for (o, &c) in out.iter_mut().zip(cell) {
        *o = if c == OUTSIDE { fill } else { src[c] };
    }
}

/// Bilinear interpolation of one plane over precomputed cells.
#[inline]
fn bilinear_span(
    src: &[f32],
    w: usize,
    fill: f32,
    cell: &[usize],
    fx: &[f32],
    fy: &[f32],
    out: &mut [f32],
) {
    for (((o, &c), &fx), &fy) in out.iter_mut().zip(cell).zip(fx).zip(fy) {
        if c == OUTSIDE {
            *o = fill;
            continue;
        }
        let (gx, gy) = (1.0 - fx, 1.0 - fy);
        let top = &src[c..c + 2];
        let bottom = &src[c + w..c + w + 2];
        *o = (top[0] * gx + top[1] * fx) * gy + (bottom[0] * gx + bottom[1] * fx) * fy;
    }
}

/// Nearest neighbour at folded coordinates (`floor(x + 0.5)`; x < 2^23 so `x + 0.5` is exact).
fn nearest_span<T: Copy>(src: &[T], w: usize, xs: &[f32], ys: &[f32], fill: T, out: &mut [T]) {
    for ((o, &x), &y) in out.iter_mut().zip(xs).zip(ys) {
        *o = if x.is_nan() || y.is_nan() {
            fill
        } else {
            // Folded coordinates are >= 0, so the cast truncates = floors.
            src[(y + 0.5) as usize * w + (x + 0.5) as usize]
        };
    }
}

/// Bilinear for planes one pixel wide or high (the taps beyond the edge collapse onto it).
fn bilinear_edge_span(
    src: &[f32],
    w: usize,
    h: usize,
    xs: &[f32],
    ys: &[f32],
    fill: f32,
    out: &mut [f32],
) {
    for ((o, &x), &y) in out.iter_mut().zip(xs).zip(ys) {
        if x.is_nan() || y.is_nan() {
            *o = fill;
            continue;
        }
        let (x0, y0) = (x as usize, y as usize);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let i00 = y0 * w + x0;
        let dx = (x0 + 1 < w) as usize;
        let dy = if y0 + 1 < h { w } else { 0 };
        let (gx, gy) = (1.0 - fx, 1.0 - fy);
        let top = src[i00] * gx + src[i00 + dx] * fx;
        let bottom = src[i00 + dy] * gx + src[i00 + dy + dx] * fx;
        *o = top * gy + bottom * fy;
    }
}

fn bicubic_span(
    src: &[f32],
    w: usize,
    h: usize,
    xs: &[f32],
    ys: &[f32],
    fill: f32,
    out: &mut [f32],
) {
    for ((o, &x), &y) in out.iter_mut().zip(xs).zip(ys) {
        if x.is_nan() || y.is_nan() {
            *o = fill;
            continue;
        }
        let (x0, y0) = (x as usize, y as usize);
        let wx = cubic_weights(x - x0 as f32);
        let wy = cubic_weights(y - y0 as f32);
        let cols: [usize; 4] =
            std::array::from_fn(|k| mirror_index(x0 as isize + k as isize - 1, w));
        let mut v = 0.0;
        for (k, &wr) in wy.iter().enumerate() {
            let r = mirror_index(y0 as isize + k as isize - 1, h) * w;
            let line = &src[r..r + w];
            let mut s = 0.0;
            for (&c, &wc) in cols.iter().zip(&wx) {
                s += line[c] * wc;
            }
            v += s * wr;
        }
        *o = v;
    }
}

/// Resample `planes` through a whole (unfolded) `map` into new planes.
fn resample_map(
    planes: &Planes<'_>,
    map: &CoordMap,
    interpolation: Interpolation,
    border: BorderMode,
) -> (Vec<Vec<f32>>, Vec<u8>) {
    let (w, h) = (planes.width, planes.height);
    let xs: Vec<f32> = map.xs.iter().map(|&x| fold_coord(x, w, border)).collect();
    let ys: Vec<f32> = map.ys.iter().map(|&y| fold_coord(y, h, border)).collect();
    let n = xs.len();
    let mut smooth = vec![vec![0.0f32; n]; planes.smooth.len()];
    let mut label = vec![0u8; if planes.label.is_some() { n } else { 0 }];
    let mut outs: Vec<&mut [f32]> = smooth.iter_mut().map(|p| &mut p[..]).collect();
    let label_out = planes.label.is_some().then_some(&mut label[..]);
    let mut scratch = SpanScratch::default();
    resample_span(
        planes,
        (&xs, &ys),
        interpolation,
        &mut outs,
        0,
        label_out,
        &mut scratch,
    );
    (smooth, label)
}

/// Resample one f32 plane (`src_width` x `src_height`) through `map`; `fill` is used outside
/// the image in [`BorderMode::Constant`] and for NaN coordinates.
///
/// ```
/// use unet_augment::{remap, BorderMode, CoordMap, Interpolation};
/// let src = [0.0, 1.0, 2.0, 3.0]; // 2x2
/// let map = CoordMap { width: 1, height: 1, xs: vec![0.5], ys: vec![0.5] };
/// let out = remap(&src, 2, 2, &map, Interpolation::Bilinear, BorderMode::Mirror, 0.0).unwrap();
/// assert_eq!(out, vec![1.5]);
/// ```
pub fn remap(
    src: &[f32],
    src_width: usize,
    src_height: usize,
    map: &CoordMap,
    interpolation: Interpolation,
    border: BorderMode,
    fill: f32,
) -> Result<Vec<f32>> {
    check_source(src.len(), src_width, src_height)?;
    map.check()?;
    let planes = Planes {
        width: src_width,
        height: src_height,
        smooth: vec![(src, fill)],
        label: None,
    };
    let (mut out, _) = resample_map(&planes, map, interpolation, border);
    Ok(out.pop().unwrap_or_default())
}

/// Resample a label plane through `map` by nearest neighbour, so the output only holds values
/// of the input (and `fill`, for [`BorderMode::Constant`] and NaN coordinates).
pub fn remap_labels(
    src: &[u8],
    src_width: usize,
    src_height: usize,
    map: &CoordMap,
    border: BorderMode,
    fill: u8,
) -> Result<Vec<u8>> {
    check_source(src.len(), src_width, src_height)?;
    map.check()?;
    let planes = Planes {
        width: src_width,
        height: src_height,
        smooth: vec![],
        label: Some((src, fill)),
    };
    let (_, out) = resample_map(&planes, map, Interpolation::Nearest, border);
    Ok(out)
}

fn check_source(len: usize, width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::EmptyImage {
            width,
            height,
            channels: 1,
        });
    }
    check_plane_len("src", width * height, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_index_has_no_edge_duplication() {
        let got: Vec<usize> = (-4..8).map(|i| mirror_index(i, 4)).collect();
        assert_eq!(got, vec![2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(mirror_index(-5, 1), 0);
        assert_eq!(mirror_coord(-0.25, 4), 0.25);
        assert_eq!(mirror_coord(3.5, 4), 2.5);
        assert_eq!(mirror_coord(7.0, 4), 1.0);
        assert!(mirror_coord(f32::NAN, 4).is_nan());
    }

    #[test]
    fn cubic_weights_interpolate_and_sum_to_one() {
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        for t in [0.1f32, 0.5, 0.9] {
            assert!((cubic_weights(t).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn constant_border_fills_outside() {
        let src = [1.0, 2.0, 3.0, 4.0];
        let map = CoordMap {
            width: 3,
            height: 1,
            xs: vec![-0.5, 1.0, f32::NAN],
            ys: vec![0.0, 1.0, 0.0],
        };
        let out = remap(
            &src,
            2,
            2,
            &map,
            Interpolation::Bicubic,
            BorderMode::Constant,
            -1.0,
        )
        .unwrap();
        assert_eq!(out, vec![-1.0, 4.0, -1.0]);
        let labels = remap_labels(&[0, 255, 255, 0], 2, 2, &map, BorderMode::Mirror, 7).unwrap();
        assert_eq!(labels, vec![255, 0, 7]);
        let bad = CoordMap {
            width: 2,
            height: 1,
            xs: vec![0.0],
            ys: vec![0.0, 0.0],
        };
        assert!(remap_labels(&[0; 4], 2, 2, &bad, BorderMode::Mirror, 0).is_err());
        assert!(remap(
            &[0.0; 3],
            2,
            2,
            &map,
            Interpolation::Nearest,
            BorderMode::Mirror,
            0.0
        )
        .is_err());
    }
}
