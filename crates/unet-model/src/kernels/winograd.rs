//! Winograd F(2x2, 3x3) for the 3x3 stride-1 convolutions on the CPU (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2x2 output tile is `A^T [(G g G^T) ⊙ (B^T d B)] A` of its 4x4 input tile `d` and the
//! 3x3 kernel `g`. Summed over input channels, the 16 element-wise products become 16 matrix
//! products `M[ξ] = U[ξ] V[ξ]`, `[o, c] x [c, tiles]`, which replace im2col's
//! `[o, 9c] x [9c, pixels]`: 16 multiply-adds per 4 outputs and input channel instead of 36,
//! 2.25 times fewer. The weight gradient is the adjoint of the same factorisation,
//! `G^T [sum over tiles (A dY A^T) ⊙ (B^T d B)] G`, 16 products `[o, tiles] x [tiles, c]`.
//! The input gradient is a forward convolution (of the output gradient with the flipped kernel)
//! and runs through [`winograd_forward`] as it is.
//!
//! The transforms add and subtract, and halve the kernel: F(2x2, 3x3) is the variant whose
//! rounding stays within a few float epsilons of the direct sum (the larger tiles, F(4x4, 3x3),
//! lose digits), so its results match im2col's to 1e-5 but not bit for bit.
//! [`ConvAlgorithm`] says which of the two runs, and when.

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::conv::Geom;
use super::cpu_path::{ConvProduct, GemmPath};
use super::{
    accumulate_over, image_runs, sgemm, with_outer_scratch, with_scratch, written_by, ImageRun,
    SharedMut,
};

/// Positions ξ of a 4x4 transformed tile: one matrix product each.
const POSITIONS: usize = 16;

/// Floats of one transformed operand `[c, tiles]` per position that a block of tiles aims
/// at: 128 KB, so one position's product works out of L2.
const BLOCK_FLOATS: usize = 32 * 1024;

/// Transformed values (input and output gradient together) per block of the weight gradient:
/// 32 MB, enough for all the tiles of the 1024-channel layers at once.
const GRADIENT_BLOCK_FLOATS: usize = 8 << 20;

/// The largest `dU` (16 matrices `[o, c]`) that each thread sums a copy of: 1 MB, up to
/// 128 x 128 channels.
const PRIVATE_SUMS_FLOATS: usize = POSITIONS * 128 * 128;

/// Channels (in and out) from which [`ConvAlgorithm::rule_for`] picks Winograd for the forward
/// and input-gradient products: below, their reduction (the input channels) is too short for
/// the saved multiplies to pay for the transforms (docs/RESULTS.md, "Winograd").
pub const WINOGRAD_MIN_CHANNELS: usize = 32;

/// The same for the weight gradient, whose products are smaller still (`[o, c]` per position).
pub const WINOGRAD_MIN_CHANNELS_WEIGHT_GRAD: usize = 64;

/// How a 3x3 convolution's products are formed on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// im2col columns and one `[o, 9c] x [9c, pixels]` product per tile of pixels.
    Im2col,
    /// Winograd F(2x2, 3x3): 16 `[o, c] x [c, tiles]` products per block of 2x2 tiles.
    Winograd,
}

impl ConvAlgorithm {
    /// Both, in the order the tests force them.
    pub const ALL: [ConvAlgorithm; 2] = [ConvAlgorithm::Im2col, ConvAlgorithm::Winograd];

    /// The name used in `UNET_CPU_CONV` and in `unet bench`'s JSON.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Im2col => "im2col",
            ConvAlgorithm::Winograd => "winograd",
        }
    }

    /// The measured rule: Winograd for 3x3 kernels with at least [`WINOGRAD_MIN_CHANNELS`]
    /// input and output channels ([`WINOGRAD_MIN_CHANNELS_WEIGHT_GRAD`] for the weight
    /// gradient), im2col for everything else. The same for every CPU and path: measured on
    /// an AMD EPYC Zen 4, where both of its paths agreed (docs/RESULTS.md).
    pub fn rule_for(product: ConvProduct, c: usize, o: usize, k: usize) -> ConvAlgorithm {
        let least = match product {
            ConvProduct::WeightGrad => WINOGRAD_MIN_CHANNELS_WEIGHT_GRAD,
            ConvProduct::Forward | ConvProduct::InputGrad => WINOGRAD_MIN_CHANNELS,
        };
        match k == 3 && c.min(o) >= least {
            true => ConvAlgorithm::Winograd,
            false => ConvAlgorithm::Im2col,
        }
    }
}

impl std::fmt::Display for ConvAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A forced algorithm, or `None` for the rule.
type Forced = Option<ConvAlgorithm>;

/// `UNET_CPU_CONV` (`auto`, `im2col` or `winograd`) for the whole process, read once; a value
/// not in that list is the rule, with one warning on stderr.
pub fn process_conv_algorithm() -> Forced {
    static FORCED: OnceLock<Forced> = OnceLock::new();
    *FORCED.get_or_init(|| {
        let value = std::env::var("UNET_CPU_CONV").ok()?;
        match forced_from_env(&value) {
            Ok(forced) => forced,
            Err(why) => {
                eprintln!("warning: UNET_CPU_CONV={value:?}: {why}; using the rule");
                None
            }
        }
    })
}

/// The algorithm `UNET_CPU_CONV=value` forces (`None`: the rule), or why it cannot be read.
fn forced_from_env(value: &str) -> Result<Forced, &'static str> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    ConvAlgorithm::ALL
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(value))
        .map(Some)
        .ok_or("expected auto, im2col or winograd")
}

thread_local! {
    static THREAD_FORCED: Cell<Option<Forced>> = const { Cell::new(None) };
}

/// The algorithm for `product` of a convolution of `c` input and `o` output channels and
/// kernel size `k` called from this thread: the [`with_conv_algorithm`] override if one is
/// active, else `UNET_CPU_CONV`, else [`ConvAlgorithm::rule_for`]. Winograd is only ever
/// used for 3x3.
pub fn conv_algorithm(product: ConvProduct, c: usize, o: usize, k: usize) -> ConvAlgorithm {
    match current_choice() {
        Some(ConvAlgorithm::Winograd) if k == 3 => ConvAlgorithm::Winograd,
        Some(_) => ConvAlgorithm::Im2col,
        None => ConvAlgorithm::rule_for(product, c, o, k),
    }
}

/// Runs `f` with `forced` (`None`: the rule) for the convolutions called from the current
/// thread, restoring the previous choice afterwards (how the tests run both algorithms).
pub fn with_conv_algorithm<R>(forced: Forced, f: impl FnOnce() -> R) -> R {
    super::with_thread_value(&THREAD_FORCED, Some(forced), f)
}

/// The choice in force for this thread's convolutions: forced (by [`with_conv_algorithm`] or
/// `UNET_CPU_CONV`), or `None` for the rule.
fn current_choice() -> Forced {
    THREAD_FORCED
        .with(Cell::get)
        .unwrap_or_else(process_conv_algorithm)
}

/// What this thread's 3x3 convolutions run as, for summary lines: `Winograd from 32 channels
/// (weight gradient 64)` under the rule, else the forced algorithm.
pub fn describe_conv_choice() -> String {
    match current_choice() {
        None => format!(
            "Winograd from {WINOGRAD_MIN_CHANNELS} channels (weight gradient \
             {WINOGRAD_MIN_CHANNELS_WEIGHT_GRAD})"
        ),
        Some(ConvAlgorithm::Winograd) => "Winograd for every 3x3 convolution".to_string(),
        Some(ConvAlgorithm::Im2col) => "im2col convolutions".to_string(),
    }
}

/// `{"algorithm": "rule" | "im2col" | "winograd", "winograd_min_channels": {...}}`, for JSON
/// lines: the choice in force and the rule's thresholds per product.
pub fn conv_choice_json() -> serde_json::Value {
    serde_json::json!({
        "algorithm": current_choice().map_or("rule", ConvAlgorithm::name),
        "winograd_min_channels": {
            "forward": WINOGRAD_MIN_CHANNELS,
            "input_grad": WINOGRAD_MIN_CHANNELS,
            "weight_grad": WINOGRAD_MIN_CHANNELS_WEIGHT_GRAD,
        },
    })
}

/// The grid of 2x2 output tiles of a geometry (the last row and column may hang over an odd
/// output by one pixel).
#[derive(Debug, Clone, Copy)]
struct TileGrid {
    /// Tile rows.
    rows: usize,
    /// Tile columns.
    cols: usize,
}

impl TileGrid {
    fn of(g: &Geom) -> TileGrid {
        TileGrid {
            rows: g.ho.div_ceil(2),
            cols: g.wo.div_ceil(2),
        }
    }

    /// Tiles per image.
    fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// The block's tiles as runs along one tile row: `f(tile_row, first_col, run, offset)`,
    /// `offset` the run's first tile within the block.
    fn runs(&self, block: Block, mut f: impl FnMut(usize, usize, usize, usize)) {
        let mut done = 0;
        while done < block.len {
            let p = block.start + done;
            let (row, col) = (p / self.cols, p % self.cols);
            let run = (self.cols - col).min(block.len - done);
            f(row, col, run, done);
            done += run;
        }
    }
}

/// Tiles `start..start + len` of image `img`.
type Block = ImageRun;

/// Cuts every image's tiles into blocks of about [`BLOCK_FLOATS`] / `channels` tiles, and into
/// at least enough blocks overall that every thread has work.
fn blocks(g: &Geom, grid: TileGrid, channels: usize, threads: usize) -> Vec<Block> {
    let most = (BLOCK_FLOATS / channels.max(1)).clamp(16, 1024);
    image_runs(g.n, grid.len(), most, threads)
}

/// `U = G g G^T` of every `[o, c]` kernel, as `[o, 16, c]`: position ξ's matrix `[o, c]` starts
/// at `ξ * c` with row stride `16 * c`, so each output channel's share is written in one piece.
fn kernel_transform(weight: &[f32], g: &Geom) -> Vec<f32> {
    let c = g.c;
    let mut u = vec![0f32; g.o * POSITIONS * c];
    u.par_chunks_mut(POSITIONS * c)
        .zip(weight.par_chunks(9 * c))
        .for_each(|(dst, kernels)| {
            for (ci, k) in kernels.chunks_exact(9).enumerate() {
                // G g: four rows of three; then (G g) G^T: each row's three become four.
                let four = |a: f32, b: f32, d: f32| [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                let cols: [[f32; 4]; 3] = std::array::from_fn(|j| four(k[j], k[3 + j], k[6 + j]));
                for r in 0..4 {
                    let row = four(cols[0][r], cols[1][r], cols[2][r]);
                    for (q, value) in row.into_iter().enumerate() {
                        dst[(r * 4 + q) * c + ci] = value;
                    }
                }
            }
        });
    u
}

/// Fills `dst` with input row `y` of `plane` (`h` rows of `w`), columns `x0..x0 + dst.len()`,
/// zero outside the plane.
fn padded_row(plane: &[f32], (h, w): (usize, usize), y: isize, x0: isize, dst: &mut [f32]) {
    if y < 0 || y >= h as isize {
        dst.fill(0.0);
        return;
    }
    let src = &plane[y as usize * w..][..w];
    let lo = (-x0).clamp(0, dst.len() as isize) as usize;
    let hi = (w as isize - x0).clamp(lo as isize, dst.len() as isize) as usize;
    dst[..lo].fill(0.0);
    if hi > lo {
        let from = (x0 + lo as isize) as usize;
        dst[lo..hi].copy_from_slice(&src[from..from + hi - lo]);
    }
    dst[hi..].fill(0.0);
}

/// A transform's working rows for one run of tiles: four (padded) source rows and their four
/// row combinations, each as wide as a tile row needs.
struct RunRows {
    width: usize,
    rows: Vec<f32>,
    combos: Vec<f32>,
}

impl RunRows {
    fn new(grid: TileGrid) -> RunRows {
        let width = 2 * grid.cols + 2;
        RunRows {
            width,
            rows: vec![0f32; 4 * width],
            combos: vec![0f32; 4 * width],
        }
    }
}

/// The two tile transforms of the data: one channel's tiles to their 16 positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TileTransform {
    /// `V = B^T d B` of the input's 4x4 tiles (stride 2, from `pad` before the output).
    Input,
    /// `A dY A^T` of the output gradient's 2x2 tiles (zero past the output).
    Gradient,
}

impl TileTransform {
    /// Pixels of one channel of what it transforms.
    fn plane(self, g: &Geom) -> usize {
        match self {
            TileTransform::Input => g.h * g.w,
            TileTransform::Gradient => g.ho * g.wo,
        }
    }
}

/// `kind` of the block's tiles of one channel `plane` (the input's `h x w`, or the output
/// gradient's `ho x wo`): position ξ's values go to `dst[ξ * position_stride..][..block.len]`.
/// Both are separable, so each runs as row combinations along a whole run of tiles, then the
/// same combinations along each tile's columns.
fn transform_tiles(
    kind: TileTransform,
    plane: &[f32],
    g: &Geom,
    (grid, block): (TileGrid, Block),
    (dst, position_stride): (&mut [f32], usize),
    scratch: &mut RunRows,
) {
    let RunRows {
        width,
        rows,
        combos,
    } = scratch;
    let width = *width;
    let input = kind == TileTransform::Input;
    // Source rows per tile, the first one's offset from the output, and the plane's size.
    let (tile, shift, dims) = match input {
        true => (4, g.pad as isize, (g.h, g.w)),
        false => (2, 0, (g.ho, g.wo)),
    };
    grid.runs(block, |row, col, run, offset| {
        let span = 2 * run + tile - 2;
        let (y0, x0) = ((2 * row) as isize - shift, (2 * col) as isize - shift);
        for (r, dst) in rows.chunks_exact_mut(width).take(tile).enumerate() {
            padded_row(plane, dims, y0 + r as isize, x0, &mut dst[..span]);
        }
        // (The gradient's rows 2 and 3 are stale and unread.)
        let d = |r: usize| &rows[r * width..][..span];
        let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
        for (a, combo) in combos.chunks_exact_mut(width).enumerate() {
            let combo = &mut combo[..span];
            match (input, a) {
                // B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3.
                (true, 0) => (0..span).for_each(|x| combo[x] = d0[x] - d2[x]),
                (true, 1) => (0..span).for_each(|x| combo[x] = d1[x] + d2[x]),
                (true, 2) => (0..span).for_each(|x| combo[x] = d2[x] - d1[x]),
                (true, _) => (0..span).for_each(|x| combo[x] = d1[x] - d3[x]),
                // A d: rows d0, d0 + d1, d0 - d1, -d1.
                (false, 0) => combo.copy_from_slice(d0),
                (false, 1) => (0..span).for_each(|x| combo[x] = d0[x] + d1[x]),
                (false, 2) => (0..span).for_each(|x| combo[x] = d0[x] - d1[x]),
                (false, _) => (0..span).for_each(|x| combo[x] = -d1[x]),
            }
        }
        // The same combinations along each tile's columns, from its first at 2j.
        for xi in 0..POSITIONS {
            let t = &combos[(xi / 4) * width..][..span];
            let out = &mut dst[xi * position_stride + offset..][..run];
            match (input, xi % 4) {
                (true, 0) => (0..run).for_each(|j| out[j] = t[2 * j] - t[2 * j + 2]),
                (true, 1) => (0..run).for_each(|j| out[j] = t[2 * j + 1] + t[2 * j + 2]),
                (true, 2) => (0..run).for_each(|j| out[j] = t[2 * j + 2] - t[2 * j + 1]),
                (true, _) => (0..run).for_each(|j| out[j] = t[2 * j + 1] - t[2 * j + 3]),
                (false, 0) => (0..run).for_each(|j| out[j] = t[2 * j]),
                (false, 1) => (0..run).for_each(|j| out[j] = t[2 * j] + t[2 * j + 1]),
                (false, 2) => (0..run).for_each(|j| out[j] = t[2 * j] - t[2 * j + 1]),
                (false, _) => (0..run).for_each(|j| out[j] = -t[2 * j + 1]),
            }
        }
    });
}

/// [`transform_tiles`] of every channel of `source` (one image's), into `buffer` laid out as
/// `planes` says, one channel after another on this thread.
fn transform_channels(
    kind: TileTransform,
    source: &[f32],
    g: &Geom,
    at: (TileGrid, Block),
    (buffer, planes): (&mut [f32], Planes),
    scratch: &mut RunRows,
) {
    for (ch, plane) in source.chunks_exact(kind.plane(g)).enumerate() {
        let dst = (&mut buffer[ch * planes.row..], planes.position);
        transform_tiles(kind, plane, g, at, dst, scratch);
    }
}

/// `y = conv(x, weight) + bias` for a 3x3 kernel, as [`super::conv::conv_forward`] computes it,
/// by Winograd F(2x2, 3x3) with its products on `path`.
pub(crate) fn winograd_forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    path: GemmPath,
) -> Vec<f32> {
    debug_assert_eq!(g.k, 3, "Winograd F(2x2, 3x3) is for 3x3 kernels");
    let grid = TileGrid::of(g);
    let u = kernel_transform(weight, g);
    let blocks = blocks(g, grid, g.c.max(g.o), rayon::current_num_threads());
    let (c, o, ho, wo) = (g.c, g.o, g.ho, g.wo);
    let fill = |out: SharedMut| {
        blocks.par_iter().for_each(|&block| {
            let len = block.len;
            let x_img = &x[block.img * c * g.h * g.w..][..c * g.h * g.w];
            with_outer_scratch(POSITIONS * o * len, |m| {
                with_scratch(POSITIONS * c * len, |v| {
                    let mut scratch = RunRows::new(grid);
                    let planes = Planes::position_major(c, len);
                    let dst = (&mut *v, planes);
                    transform_channels(
                        TileTransform::Input,
                        x_img,
                        g,
                        (grid, block),
                        dst,
                        &mut scratch,
                    );
                    for xi in 0..POSITIONS {
                        // SAFETY: m[xi] is [o, len], u[xi] [o, c], v[xi] [c, len], all
                        // row-major and inside their buffers; m is this thread's own.
                        unsafe {
                            sgemm(
                                path,
                                (o, len, c),
                                (m[xi * o * len..].as_mut_ptr(), len, 1),
                                false,
                                (u[xi * c..].as_ptr(), POSITIONS * c, 1),
                                (v[xi * c * len..].as_ptr(), len, 1),
                            )
                        }
                    }
                });
                // A^T M A, plus the bias, into the output pixels the tiles cover.
                let y_img = block.img * o * ho * wo;
                let mut sums = vec![0f32; 8 * grid.cols];
                let mut pixels = vec![0f32; 4 * grid.cols];
                for oi in 0..o {
                    let b = bias.map_or(0.0, |b| b[oi]);
                    grid.runs(block, |row, col, run, offset| {
                        let m = |xi: usize| &m[xi * o * len + oi * len + offset..][..run];
                        // A^T m: per column q, rows m0 + m1 + m2 and m1 - m2 - m3.
                        let (s0, s1) = sums.split_at_mut(4 * grid.cols);
                        for q in 0..4 {
                            let (m0, m1, m2, m3) = (m(q), m(4 + q), m(8 + q), m(12 + q));
                            let top = &mut s0[q * run..][..run];
                            let bottom = &mut s1[q * run..][..run];
                            for j in 0..run {
                                top[j] = m0[j] + m1[j] + m2[j];
                                bottom[j] = m1[j] - m2[j] - m3[j];
                            }
                        }
                        // (A^T m) A: the same along each tile's columns, two output rows.
                        let (even, odd) = pixels.split_at_mut(2 * grid.cols);
                        for (sums, dst) in [(&*s0, &mut *even), (&*s1, &mut *odd)] {
                            let (t0, t1) = (&sums[..run], &sums[run..2 * run]);
                            let (t2, t3) = (&sums[2 * run..3 * run], &sums[3 * run..4 * run]);
                            let dst = &mut dst[..2 * run];
                            for j in 0..run {
                                dst[2 * j] = t0[j] + t1[j] + t2[j] + b;
                                dst[2 * j + 1] = t1[j] - t2[j] - t3[j] + b;
                            }
                        }
                        let x0 = 2 * col;
                        let width = (2 * run).min(wo - x0);
                        for (r, values) in [&*even, &*odd].into_iter().enumerate() {
                            let yy = 2 * row + r;
                            if yy < ho {
                                let at = y_img + (oi * ho + yy) * wo + x0;
                                // SAFETY: pixels (yy, x0..x0 + width) of channel oi of this
                                // image lie inside y, and only this block's tiles write them.
                                unsafe {
                                    std::ptr::copy_nonoverlapping(
                                        values.as_ptr(),
                                        out.ptr().add(at),
                                        width,
                                    )
                                };
                            }
                        }
                    });
                }
            });
        });
    };
    // SAFETY: the blocks cover every tile of every image, the tiles every output pixel, and
    // each block writes all `o` channels of its pixels.
    unsafe { written_by(g.n * o * ho * wo, fill) }
}

/// Where position ξ's `[channels, tiles]` matrix of a transformed block sits: at `ξ * position`,
/// rows `row` apart.
#[derive(Debug, Clone, Copy)]
struct Planes {
    position: usize,
    row: usize,
}

impl Planes {
    /// `[ξ, channel, tile]`: each position's matrix in one piece.
    fn position_major(channels: usize, len: usize) -> Planes {
        Planes {
            position: channels * len,
            row: len,
        }
    }

    /// `[channel, ξ, tile]`: each channel's 16 rows in one piece.
    fn channel_major(len: usize) -> Planes {
        Planes {
            position: len,
            row: POSITIONS * len,
        }
    }
}

/// `dU[ξ] += dM[ξ] V[ξ]^T` for one position ξ of a block of `len` tiles: `du_xi` is `[o, c]`,
/// `dm` and `v` the block's transforms.
fn gradient_product(
    path: GemmPath,
    (o, c, len): (usize, usize, usize),
    (du_xi, xi): (&mut [f32], usize),
    (dm, dm_planes): (&[f32], Planes),
    (v, v_planes): (&[f32], Planes),
) {
    let end = |p: Planes, rows: usize| xi * p.position + (rows - 1) * p.row + len;
    assert!(du_xi.len() >= o * c && dm.len() >= end(dm_planes, o) && v.len() >= end(v_planes, c));
    // SAFETY: du_xi is [o, c]; dm[xi] [o, len] and v[xi] [c, len] (read as its transpose
    // [len, c]) at their planes' offsets and row strides; all inside their buffers (the
    // assertion), du_xi the caller's own.
    unsafe {
        sgemm(
            path,
            (o, c, len),
            (du_xi.as_mut_ptr(), c, 1),
            true,
            (dm[xi * dm_planes.position..].as_ptr(), dm_planes.row, 1),
            (v[xi * v_planes.position..].as_ptr(), 1, v_planes.row),
        )
    }
}

/// The weight gradient `[o, c, 3, 3]` of a 3x3 convolution, as
/// [`super::conv::conv_weight_grad`] computes it, by the adjoint of Winograd F(2x2, 3x3):
/// `dU[ξ] = sum over tiles (A dY A^T)[ξ] V[ξ]^T`, then `G^T dU G`.
///
/// Narrow layers (`dU` up to [`PRIVATE_SUMS_FLOATS`]) sum as the im2col weight gradient does:
/// each thread transforms and multiplies its own cache-sized blocks into its own `dU`, and the
/// copies are added at the end. Wider layers would copy too much (16 times the kernel: 64 MB
/// per thread for 1024 channels), so their tiles go in blocks of at most
/// [`GRADIENT_BLOCK_FLOATS`] transformed values: a block's transforms run in parallel over
/// channels, then its 16 products in parallel over positions, each adding to its own `dU[ξ]`.
pub(crate) fn winograd_weight_grad(x: &[f32], dy: &[f32], g: &Geom, path: GemmPath) -> Vec<f32> {
    let sums = match POSITIONS * g.o * g.c <= PRIVATE_SUMS_FLOATS {
        true => GradientSums::PerThread,
        false => GradientSums::Shared {
            most: (GRADIENT_BLOCK_FLOATS / (POSITIONS * (g.c + g.o))).max(1),
        },
    };
    weight_grad_summed(x, dy, g, path, sums)
}

/// How [`winograd_weight_grad`] sums over the tiles.
#[derive(Debug, Clone, Copy)]
enum GradientSums {
    /// Each thread its own blocks into its own `dU`.
    PerThread,
    /// Blocks of at most `most` tiles, each block's products in parallel over positions.
    Shared { most: usize },
}

/// [`winograd_weight_grad`], summed as `sums` says.
fn weight_grad_summed(
    x: &[f32],
    dy: &[f32],
    g: &Geom,
    path: GemmPath,
    sums: GradientSums,
) -> Vec<f32> {
    debug_assert_eq!(g.k, 3, "Winograd F(2x2, 3x3) is for 3x3 kernels");
    let grid = TileGrid::of(g);
    let (c, o, ho, wo) = (g.c, g.o, g.ho, g.wo);
    let image = |img: usize| {
        (
            &x[img * c * g.h * g.w..][..c * g.h * g.w],
            &dy[img * o * ho * wo..][..o * ho * wo],
        )
    };
    let du = if let GradientSums::Shared { most } = sums {
        let per_image = grid.len();
        let mut du = vec![0f32; POSITIONS * o * c];
        let (mut v, mut dm) = (Vec::new(), Vec::new());
        for img in 0..g.n {
            let (x_img, dy_img) = image(img);
            for start in (0..per_image).step_by(most) {
                let block = Block {
                    img,
                    start,
                    len: most.min(per_image - start),
                };
                let len = block.len;
                v.resize(c * POSITIONS * len, 0.0);
                dm.resize(o * POSITIONS * len, 0.0);
                let transforms = [
                    (TileTransform::Input, x_img, &mut v),
                    (TileTransform::Gradient, dy_img, &mut dm),
                ];
                for (kind, source, buffer) in transforms {
                    buffer
                        .par_chunks_mut(POSITIONS * len)
                        .zip(source.par_chunks(kind.plane(g)))
                        .for_each_init(
                            || RunRows::new(grid),
                            |scratch, (dst, plane)| {
                                let dst = (dst, len);
                                transform_tiles(kind, plane, g, (grid, block), dst, scratch)
                            },
                        );
                }
                let (v, dm) = (&v, &dm);
                let planes = Planes::channel_major(len);
                du.par_chunks_mut(o * c)
                    .enumerate()
                    .for_each(|(xi, du_xi)| {
                        gradient_product(path, (o, c, len), (du_xi, xi), (dm, planes), (v, planes))
                    });
            }
        }
        du
    } else {
        let blocks = blocks(g, grid, c.max(o), rayon::current_num_threads());
        accumulate_over(&blocks, POSITIONS * o * c, |du, block| {
            let len = block.len;
            let (x_img, dy_img) = image(block.img);
            let mut scratch = RunRows::new(grid);
            with_outer_scratch(o * POSITIONS * len, |dm| {
                with_scratch(c * POSITIONS * len, |v| {
                    let (v_planes, dm_planes) = (
                        Planes::position_major(c, len),
                        Planes::position_major(o, len),
                    );
                    let at = (grid, block);
                    let (input, gradient) = (TileTransform::Input, TileTransform::Gradient);
                    transform_channels(input, x_img, g, at, (&mut *v, v_planes), &mut scratch);
                    transform_channels(
                        gradient,
                        dy_img,
                        g,
                        at,
                        (&mut *dm, dm_planes),
                        &mut scratch,
                    );
                    for (xi, du_xi) in du.chunks_exact_mut(o * c).enumerate() {
                        let (dm, v) = ((&*dm, dm_planes), (&*v, v_planes));
                        gradient_product(path, (o, c, len), (du_xi, xi), dm, v);
                    }
                })
            })
        })
    };
    // G^T dU G for every (o, c): four rows of four become three of three.
    let plane = o * c;
    let mut dw = vec![0f32; plane * 9];
    dw.par_chunks_mut(9).enumerate().for_each(|(idx, out)| {
        let e = |a: usize, b: usize| du[(a * 4 + b) * plane + idx];
        // G^T dU: rows u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3.
        let rows: [[f32; 4]; 3] = std::array::from_fn(|p| {
            std::array::from_fn(|b| {
                let (u0, u1, u2, u3) = (e(0, b), e(1, b), e(2, b), e(3, b));
                [u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3][p]
            })
        });
        for (p, [u0, u1, u2, u3]) in rows.into_iter().enumerate() {
            out[p * 3] = u0 + 0.5 * (u1 + u2);
            out[p * 3 + 1] = 0.5 * (u1 - u2);
            out[p * 3 + 2] = 0.5 * (u1 + u2) + u3;
        }
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{conv_forward, conv_input_grad, conv_weight_grad};
    use crate::kernels::cpu_path::{with_kernel_paths, KernelPaths};

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every element of `got` within `tol` of `want`'s largest magnitude.
    fn assert_near(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    /// The three products by Winograd against im2col, on every SIMD path, for one geometry.
    fn check(n: usize, c: usize, o: usize, h: usize, w: usize, pad: usize) {
        let g = Geom::new((n, c, h, w), (o, c, 3, 3), pad).unwrap();
        let seed = (n * 7 + c * 5 + o * 3 + h * 2 + w + pad) as u64;
        let x = values(n * c * h * w, seed);
        let weight = values(o * c * 9, seed + 1);
        let bias = values(o, seed + 2);
        let dy = values(n * o * g.ho * g.wo, seed + 3);
        let run = |algorithm| {
            with_conv_algorithm(Some(algorithm), || {
                (
                    conv_forward(&x, &weight, Some(&bias), &g),
                    conv_input_grad(&dy, &weight, &g),
                    conv_weight_grad(&x, &dy, &g),
                )
            })
        };
        for path in GemmPath::ALL.into_iter().filter(|p| p.available()) {
            with_kernel_paths(KernelPaths::all(path), || {
                let what = format!("{path} n{n} c{c} o{o} {h}x{w} p{pad}");
                let (fast, direct) = (run(ConvAlgorithm::Winograd), run(ConvAlgorithm::Im2col));
                assert_near(&fast.0, &direct.0, 1e-5, &format!("{what} forward"));
                assert_near(&fast.1, &direct.1, 1e-5, &format!("{what} input grad"));
                assert_near(&fast.2, &direct.2, 1e-5, &format!("{what} weight grad"));
            });
        }
    }

    #[test]
    fn winograd_matches_im2col_valid_and_same() {
        // Odd and even outputs (a tile hanging over the edge), one pixel, two images.
        check(1, 1, 1, 3, 3, 0);
        check(2, 3, 5, 9, 8, 0);
        check(1, 4, 2, 8, 11, 1);
        check(2, 2, 3, 1, 1, 1);
        check(1, 5, 4, 7, 6, 1);
    }

    #[test]
    fn winograd_matches_im2col_over_many_blocks() {
        // 64 channels: blocks of 512 tiles, so a 70x70 output spans several, ending mid-row.
        check(1, 64, 40, 72, 72, 0);
        check(2, 40, 64, 35, 33, 1);
    }

    #[test]
    fn both_ways_of_summing_the_weight_gradient_match_im2col() {
        // Blocks of 3 tiles cut every image's 4x5 tiles mid-row; 1000 takes an image at once.
        let g = Geom::new((2, 5, 9, 10), (6, 5, 3, 3), 1).unwrap();
        let x = values(2 * 5 * 9 * 10, 31);
        let dy = values(2 * 6 * 9 * 10, 32);
        let direct = with_conv_algorithm(Some(ConvAlgorithm::Im2col), || {
            conv_weight_grad(&x, &dy, &g)
        });
        for path in GemmPath::ALL.into_iter().filter(|p| p.available()) {
            for sums in [
                GradientSums::PerThread,
                GradientSums::Shared { most: 3 },
                GradientSums::Shared { most: 1000 },
            ] {
                let got = weight_grad_summed(&x, &dy, &g, path, sums);
                assert_near(&got, &direct, 1e-5, &format!("{path}, {sums:?}"));
            }
        }
    }

    /// The forward convolution in f64, summed directly: the reference both algorithms round
    /// away from.
    fn exact_forward(x: &[f32], weight: &[f32], g: &Geom) -> Vec<f64> {
        let mut y = vec![0f64; g.n * g.o * g.ho * g.wo];
        for img in 0..g.n {
            for oi in 0..g.o {
                for i in 0..g.ho {
                    for j in 0..g.wo {
                        let mut sum = 0f64;
                        for ci in 0..g.c {
                            for a in 0..3 {
                                for b in 0..3 {
                                    let (yy, xx) = (
                                        (i + a) as isize - g.pad as isize,
                                        (j + b) as isize - g.pad as isize,
                                    );
                                    if yy < 0 || xx < 0 || yy >= g.h as isize || xx >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((img * g.c + ci) * g.h + yy as usize) * g.w
                                        + xx as usize];
                                    sum += f64::from(xv)
                                        * f64::from(weight[((oi * g.c + ci) * 3 + a) * 3 + b]);
                                }
                            }
                        }
                        y[((img * g.o + oi) * g.ho + i) * g.wo + j] = sum;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn winograd_rounds_about_as_little_as_im2col() {
        // A wide reduction (256 channels), where the rounding of both shows.
        let g = Geom::new((1, 256, 14, 13), (4, 256, 3, 3), 1).unwrap();
        let (x, weight) = (values(256 * 14 * 13, 5), values(4 * 256 * 9, 6));
        let exact = exact_forward(&x, &weight, &g);
        let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs()));
        let error = |algorithm| {
            let y = with_conv_algorithm(Some(algorithm), || conv_forward(&x, &weight, None, &g));
            y.iter()
                .zip(&exact)
                .fold(0f64, |m, (&y, e)| m.max((f64::from(y) - e).abs()))
                / scale
        };
        let (winograd, im2col) = (error(ConvAlgorithm::Winograd), error(ConvAlgorithm::Im2col));
        eprintln!("largest error relative to the largest output: winograd {winograd:e}, im2col {im2col:e}");
        assert!(
            winograd < 4e-6 && winograd <= 4.0 * im2col,
            "winograd {winograd:e}, im2col {im2col:e}"
        );
    }

    #[test]
    fn blocks_cover_every_tile_once() {
        for (n, ho, wo, channels, threads) in
            [(1, 1, 1, 1, 2), (2, 61, 40, 64, 2), (1, 9, 700, 1024, 4)]
        {
            let g = Geom::new((n, 1, ho + 2, wo + 2), (1, 1, 3, 3), 0).unwrap();
            let grid = TileGrid::of(&g);
            let blocks = blocks(&g, grid, channels, threads);
            let mut seen = vec![0u8; n * grid.len()];
            for b in &blocks {
                assert!(b.len > 0);
                let mut covered = 0;
                grid.runs(*b, |row, col, run, offset| {
                    assert_eq!(offset, covered);
                    assert!(col + run <= grid.cols);
                    for j in 0..run {
                        seen[b.img * grid.len() + row * grid.cols + col + j] += 1;
                    }
                    covered += run;
                });
                assert_eq!(covered, b.len);
            }
            assert!(seen.iter().all(|&s| s == 1));
            assert!(blocks.len() >= threads.min(n * grid.len()));
        }
    }

    #[test]
    fn the_rule_takes_winograd_for_wide_3x3_layers_only() {
        use ConvProduct::{Forward, InputGrad, WeightGrad};
        let (wide, wider) = (WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS_WEIGHT_GRAD);
        for product in [Forward, InputGrad] {
            assert_eq!(
                ConvAlgorithm::rule_for(product, wide, wide, 3),
                ConvAlgorithm::Winograd
            );
            assert_eq!(
                ConvAlgorithm::rule_for(product, wide - 1, wide, 3),
                ConvAlgorithm::Im2col
            );
            assert_eq!(
                ConvAlgorithm::rule_for(product, wide, wide - 1, 3),
                ConvAlgorithm::Im2col
            );
            assert_eq!(
                ConvAlgorithm::rule_for(product, wide, wide, 1),
                ConvAlgorithm::Im2col
            );
        }
        assert_eq!(
            ConvAlgorithm::rule_for(WeightGrad, wider, wider, 3),
            ConvAlgorithm::Winograd
        );
        assert_eq!(
            ConvAlgorithm::rule_for(WeightGrad, wider - 1, wider, 3),
            ConvAlgorithm::Im2col
        );
        // Forcing Winograd never applies it to a kernel it is not for.
        with_conv_algorithm(Some(ConvAlgorithm::Winograd), || {
            assert_eq!(conv_algorithm(WeightGrad, 1, 1, 3), ConvAlgorithm::Winograd);
            assert_eq!(conv_algorithm(Forward, 64, 64, 1), ConvAlgorithm::Im2col);
        });
        with_conv_algorithm(Some(ConvAlgorithm::Im2col), || {
            assert_eq!(conv_algorithm(Forward, 64, 64, 3), ConvAlgorithm::Im2col);
        });
        assert_eq!(
            forced_from_env(" Winograd "),
            Ok(Some(ConvAlgorithm::Winograd))
        );
        assert_eq!(forced_from_env("auto"), Ok(None));
        assert!(forced_from_env("fft").is_err());
    }
}
