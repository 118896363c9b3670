//! Stride-1 square-kernel convolution: tiled im2col + single-threaded GEMMs on Rayon's threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_path::{kernel_paths, ConvProduct};
use super::winograd::{conv_algorithm, winograd_forward, winograd_weight_grad, ConvAlgorithm};
use super::{
    accumulate_over, contiguous_f32, fast_ops_enabled, fast_path_for, image_runs, lane_sum, sgemm,
    with_outer_scratch, with_scratch, written_by, ImageRun, SharedMut,
};

/// Output pixels per im2col tile: 576 x 512 floats (a 64-channel 3x3 tile) is ~1.2 MB, about
/// one core's L2 (the tile sizes measured are in docs/RESULTS.md).
const TILE_COLS: usize = 512;

/// The shape of one convolution: input `[n, c, h, w]`, kernel `[o, c, k, k]`, zero padding `pad`,
/// output `[n, o, ho, wo]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) k: usize,
    pub(super) pad: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
}

impl Geom {
    /// The geometry of input `[n, c, h, w]` and kernel `[o, c, k, k]`, or an error naming both.
    pub(crate) fn new(
        (n, c, h, w): (usize, usize, usize, usize),
        (o, c_k, k, k2): (usize, usize, usize, usize),
        pad: usize,
    ) -> candle_core::Result<Self> {
        if c != c_k || k != k2 || k == 0 || pad >= k || h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!(
                "unet conv2d: input [{n}, {c}, {h}, {w}], kernel [{o}, {c_k}, {k}, {k2}], padding {pad} \
                 is not a square-kernel convolution with padding < kernel size"
            );
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            k,
            pad,
            ho: h + 2 * pad - k + 1,
            wo: w + 2 * pad - k + 1,
        })
    }

    /// The output's `[n, o, ho, wo]`.
    pub(crate) fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.o, self.ho, self.wo)
    }

    /// Output pixels per image: the GEMM's column count.
    pub(crate) fn cols(&self) -> usize {
        self.ho * self.wo
    }

    /// Rows of the im2col matrix: the GEMM's reduction length.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// A 1x1 kernel without padding reads the input directly: no im2col.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.pad == 0
    }
}

/// A run of output pixels `start..start + len` of image `img`.
type Tile = ImageRun;

/// Cuts every image's output pixels into tiles of at most [`TILE_COLS`], and into at least
/// enough tiles overall that every thread has work.
fn tiles(g: &Geom, threads: usize) -> Vec<Tile> {
    image_runs(g.n, g.cols(), TILE_COLS, threads)
}

/// Writes the im2col tile `[c*k*k, tile.len]` (row-major) of image `x_img` into `col`, with
/// zeros where the kernel overlaps the padding.
fn im2col_tile(x_img: &[f32], g: &Geom, tile: Tile, col: &mut [f32]) {
    let (h, w, k, pad, wo) = (g.h, g.w, g.k, g.pad, g.wo);
    for ci in 0..g.c {
        let plane = &x_img[ci * h * w..(ci + 1) * h * w];
        for a in 0..k {
            for b in 0..k {
                let row = ((ci * k + a) * k + b) * tile.len;
                let row = &mut col[row..row + tile.len];
                let mut t = 0;
                let mut p = tile.start;
                while t < tile.len {
                    let (i, j0) = (p / wo, p % wo);
                    let seg = (wo - j0).min(tile.len - t);
                    let dst = &mut row[t..t + seg];
                    let yy = (i + a) as isize - pad as isize;
                    if yy < 0 || yy >= h as isize {
                        dst.fill(0.0);
                    } else {
                        let src = &plane[yy as usize * w..(yy as usize + 1) * w];
                        // Input column of output column j: j + b - pad, valid in [0, w).
                        let lo = (pad.saturating_sub(b)).clamp(j0, j0 + seg);
                        let hi = (w + pad - b).clamp(lo, j0 + seg);
                        if hi == lo {
                            dst.fill(0.0);
                        } else {
                            dst[..lo - j0].fill(0.0);
                            dst[lo - j0..hi - j0].copy_from_slice(&src[lo + b - pad..hi + b - pad]);
                            dst[hi - j0..].fill(0.0);
                        }
                    }
                    t += seg;
                    p += seg;
                }
            }
        }
    }
}

/// Runs `f(rhs, rhs_row_stride)` with the `[c*k*k, tile.len]` matrix of `tile` (row-major with
/// the given row stride, unit column stride): the input itself for a pointwise kernel, else the
/// thread's im2col buffer.
fn with_col_tile<R>(x: &[f32], g: &Geom, tile: Tile, f: impl FnOnce(*const f32, usize) -> R) -> R {
    let x_img = &x[tile.img * g.c * g.h * g.w..(tile.img + 1) * g.c * g.h * g.w];
    if g.pointwise() {
        return f(x_img[tile.start..].as_ptr(), g.h * g.w);
    }
    with_scratch(g.rows() * tile.len, |col| {
        im2col_tile(x_img, g, tile, col);
        f(col.as_ptr(), tile.len)
    })
}

/// `y = conv(x, weight) + bias`, `y` as `[n, o, ho, wo]`.
pub(crate) fn conv_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    conv_product(x, weight, bias, g, ConvProduct::Forward)
}

/// [`conv_forward`] as `product` (the input gradient is the same correlation), on that
/// product's gemm path and algorithm.
fn conv_product(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    product: ConvProduct,
) -> Vec<f32> {
    let path = kernel_paths().of(product);
    if conv_algorithm(product, g.c, g.o, g.k) == ConvAlgorithm::Winograd {
        return winograd_forward(x, weight, bias, g, path);
    }
    let cols = g.cols();
    let fill = |out: SharedMut| {
        tiles(g, rayon::current_num_threads())
            .par_iter()
            .for_each(|&tile| {
                // SAFETY: the tile's columns of image `tile.img` lie inside `y`, and no other tile
                // writes them.
                let dst = unsafe { out.ptr().add(tile.img * g.o * cols + tile.start) };
                if let Some(bias) = bias {
                    for (oi, &b) in bias.iter().enumerate() {
                        for t in 0..tile.len {
                            // SAFETY: row `oi` of the tile, inside `y` as above.
                            unsafe { dst.add(oi * cols + t).write(b) };
                        }
                    }
                }
                with_col_tile(x, g, tile, |rhs, rhs_rs| {
                    // SAFETY: dst is [o, len] with row stride cols; lhs the [o, rows] weights; rhs
                    // the [rows, len] tile; all in bounds.
                    unsafe {
                        sgemm(
                            path,
                            (g.o, tile.len, g.rows()),
                            (dst, cols, 1),
                            bias.is_some(),
                            (weight.as_ptr(), g.rows(), 1),
                            (rhs, rhs_rs, 1),
                        )
                    }
                });
            });
    };
    // SAFETY: the tiles cover every column of every image, and each writes all `o` rows of
    // its columns: the bias first, or the product without reading the destination.
    unsafe { written_by(g.n * g.o * cols, fill) }
}

/// The input gradient `[n, c, h, w]`: the output gradient correlated with the flipped kernel,
/// transposed to `[c, o, k, k]`, with padding `k - 1 - pad`.
pub(crate) fn conv_input_grad(dy: &[f32], weight: &[f32], g: &Geom) -> Vec<f32> {
    let k = g.k;
    let mut flipped = vec![0f32; weight.len()];
    for oi in 0..g.o {
        for ci in 0..g.c {
            for a in 0..k {
                for b in 0..k {
                    flipped[((ci * g.o + oi) * k + (k - 1 - a)) * k + (k - 1 - b)] =
                        weight[((oi * g.c + ci) * k + a) * k + b];
                }
            }
        }
    }
    let back = Geom {
        n: g.n,
        c: g.o,
        h: g.ho,
        w: g.wo,
        o: g.c,
        k,
        pad: k - 1 - g.pad,
        ho: g.h,
        wo: g.w,
    };
    conv_product(dy, &flipped, None, &back, ConvProduct::InputGrad)
}

/// The weight gradient `[o, c, k, k]`: `dY [o, pixels] x col^T [pixels, c*k*k]`, each thread
/// accumulating its share of the tiles into its own matrix, summed at the end.
///
/// Both factors run along the pixels they sum over, which gemm packs slowly on the left. For
/// layers of up to 64 output channels (and more than one input channel) the tile of `dY` is
/// therefore transposed to `[pixels, o]` first and the product accumulated as `dW^T`: the
/// same sums in the same order, faster there and slower for 128+ channels (docs/RESULTS.md).
pub(crate) fn conv_weight_grad(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    let path = kernel_paths().weight_grad;
    if conv_algorithm(ConvProduct::WeightGrad, g.c, g.o, g.k) == ConvAlgorithm::Winograd {
        return winograd_weight_grad(x, dy, g, path);
    }
    let (cols, rows) = (g.cols(), g.rows());
    let tiles = tiles(g, rayon::current_num_threads());
    let transposed = g.o <= 64 && rows >= 16;
    let acc = accumulate_over(&tiles, g.o * rows, |acc, tile| {
        let lhs = &dy[(tile.img * g.o) * cols + tile.start..];
        if !transposed {
            with_col_tile(x, g, tile, |rhs, rhs_rs| {
                // SAFETY: acc is [o, rows]; lhs the [o, len] slice of dY with row stride cols;
                // rhs the transposed [len, rows] view of the tile.
                unsafe {
                    sgemm(
                        path,
                        (g.o, rows, tile.len),
                        (acc.as_mut_ptr(), rows, 1),
                        true,
                        (lhs.as_ptr(), cols, 1),
                        (rhs, 1, rhs_rs),
                    )
                }
            });
            return;
        }
        with_outer_scratch(g.o * tile.len, |dy_t| {
            for oi in 0..g.o {
                for (p, &v) in lhs[oi * cols..][..tile.len].iter().enumerate() {
                    dy_t[p * g.o + oi] = v;
                }
            }
            with_col_tile(x, g, tile, |rhs, rhs_rs| {
                // SAFETY: acc is [rows, o] (dW^T), so element (oi, r) of the [o, rows] product
                // sits at r * o + oi; dy_t is [len, o]; rhs the transposed [len, rows] view of
                // the tile.
                unsafe {
                    sgemm(
                        path,
                        (g.o, rows, tile.len),
                        (acc.as_mut_ptr(), 1, g.o),
                        true,
                        (dy_t.as_ptr(), 1, g.o),
                        (rhs, 1, rhs_rs),
                    )
                }
            });
        });
    });
    if !transposed {
        return acc;
    }
    let mut dw = vec![0f32; g.o * rows];
    for (r, row) in acc.chunks_exact(g.o).enumerate() {
        for (oi, &v) in row.iter().enumerate() {
            dw[oi * rows + r] = v;
        }
    }
    dw
}

/// Per-channel sums of an `[n, c, h, w]` map (the bias gradient).
pub(crate) fn channel_sums(dy: &[f32], n: usize, c: usize, plane: usize) -> Vec<f32> {
    (0..c)
        .into_par_iter()
        .map(|ci| {
            (0..n)
                .map(|img| {
                    let p = &dy[(img * c + ci) * plane..][..plane];
                    lane_sum(plane, |i| p[i])
                })
                .sum::<f64>() as f32
        })
        .collect()
}

/// Forward op `(x, weight, bias) -> y` with its backward.
struct Conv2dOp {
    padding: usize,
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "unet-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.shape().dims4()?, l2.shape().dims4()?, self.padding)?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let bias = contiguous_f32(s3, l3, self.name())?;
        if bias.len() != g.o {
            candle_core::bail!("unet conv2d: bias has {} entries, want {}", bias.len(), g.o);
        }
        let y = conv_forward(x, weight, Some(bias), &g);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let k = weight.dim(2)?;
        let padding = self.padding;
        linear_backward(
            x,
            weight,
            dy,
            &InputGradOp { padding },
            &WeightGradOp { padding, k },
        )
    }
}

/// The backward of a linear op with a per-channel bias (convolution, up-convolution): the
/// input gradient `input_grad(dy, weight)` only where `x` needs one (the network's input does
/// not: its product is skinny and slow), the weight gradient `weight_grad(x, dy)`, and the
/// bias gradient as per-channel sums of `dy`.
pub(super) fn linear_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    input_grad: &impl CustomOp2,
    weight_grad: &impl CustomOp2,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let dy = dy.contiguous()?;
    let dx = if x.track_op() {
        Some(dy.apply_op2_no_bwd(weight, input_grad)?)
    } else {
        None
    };
    let dw = x.apply_op2_no_bwd(&dy, weight_grad)?;
    let db = dy.apply_op1_no_bwd(&ChannelSumOp)?;
    Ok((dx, Some(dw), Some(db)))
}

/// `(dy, weight) -> dx`.
struct InputGradOp {
    padding: usize,
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "unet-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, o, ho, wo) = l1.shape().dims4()?;
        let (o_k, c, k, _) = l2.shape().dims4()?;
        if o != o_k || ho + k < 1 + 2 * self.padding || wo + k < 1 + 2 * self.padding {
            candle_core::bail!("unet conv2d input grad: bad shapes {l1:?} {l2:?}");
        }
        let (h, w) = (ho + k - 1 - 2 * self.padding, wo + k - 1 - 2 * self.padding);
        let g = Geom::new((n, c, h, w), l2.shape().dims4()?, self.padding)?;
        let dy = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let dx = conv_input_grad(dy, weight, &g);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

/// `(x, dy) -> dweight`.
struct WeightGradOp {
    padding: usize,
    k: usize,
}

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "unet-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (n_dy, o, ho, wo) = l2.shape().dims4()?;
        let g = Geom::new((n, c, h, w), (o, c, self.k, self.k), self.padding)?;
        if n_dy != n || ho != g.ho || wo != g.wo {
            candle_core::bail!("unet conv2d weight grad: bad shapes {l1:?} {l2:?}");
        }
        let x = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        let dw = conv_weight_grad(x, dy, &g);
        Ok((CpuStorage::F32(dw), Shape::from((o, c, self.k, self.k))))
    }
}

/// `[n, c, h, w] -> [c]`, the sum over everything but the channel (the bias gradient).
struct ChannelSumOp;

impl CustomOp1 for ChannelSumOp {
    fn name(&self) -> &'static str {
        "unet-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let dy = contiguous_f32(s, l, self.name())?;
        Ok((
            CpuStorage::F32(channel_sums(dy, n, c, h * w)),
            Shape::from(c),
        ))
    }
}

/// A stride-1 convolution with a square kernel, zero `padding` on each side and a bias:
/// `x [n, c, h, w]`, `weight [o, c, k, k]`, `bias [o]` -> `[n, o, h + 2p - k + 1, w + 2p - k + 1]`.
///
/// With fast ops enabled, runs the tiled kernels (with their own backward) for f32 CPU tensors
/// when `padding < k`, cuDNN for f32/f16/bf16 CUDA tensors when built with the `cudnn` feature
/// and cuDNN can be initialised ([`super::cudnn::conv2d`]), and [`conv2d_gemm`] for everything
/// else (CUDA otherwise, and f16 on the CPU, where candle's input gradient is a naive loop);
/// with fast ops off, candle's `conv2d` plus a broadcast bias.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let k = weight.dim(2)?;
    if fast_path_for(x) && weight.dim(3)? == k && padding < k {
        return x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            Conv2dOp { padding },
        );
    }
    if fast_ops_enabled() && (!x.device().is_cpu() || x.dtype() != DType::F32) {
        #[cfg(feature = "cudnn")]
        if super::cudnn::usable_for(x) && weight.dim(3)? == k {
            return super::cudnn::conv2d(x, weight, bias, padding);
        }
        return conv2d_gemm(x, weight, bias, padding);
    }
    let y = x.conv2d(weight, padding, 1, 1, 1)?;
    y.broadcast_add(&bias.reshape((1, (), 1, 1))?)
}

/// [`conv2d`] as an explicit im2col built from the `k * k` shifted views of the padded input
/// and one batched matrix product with the `[o, c * k * k]` kernel, all in candle's own
/// differentiable ops, so it runs on any device and its backward is two matrix products (and
/// the adjoints of the views).
///
/// Why: on an H200 (141 GB), a train step of the full-width 572x572 U-Net at batch 3 in f32 ran
/// out of memory with candle 0.11's CUDA `conv2d`, both with its own backward and with a GEMM
/// backward behind its forward (which also ran a small-net training out of memory in its second
/// epoch). In this form the same step peaks at 50 GB and the small net at 6.4 GB
/// (docs/RESULTS.md). It keeps the `[n, c * k * k, h * w]` columns for the backward (k^2 times
/// the input).
pub fn conv2d_gemm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (o, c_k, k, k_w) = weight.dims4()?;
    if c_k != c || k_w != k {
        candle_core::bail!(
            "conv2d_gemm: kernel {:?} does not fit input {:?} (square kernels only)",
            weight.dims(),
            x.dims()
        );
    }
    if h + 2 * padding < k || w + 2 * padding < k {
        candle_core::bail!(
            "conv2d_gemm: a {h}x{w} input with padding {padding} is smaller than the kernel {k}"
        );
    }
    let xp = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let (ho, wo) = (h + 2 * padding + 1 - k, w + 2 * padding + 1 - k);
    let columns = if k == 1 {
        xp.reshape((n, c, ho * wo))?
    } else {
        let mut shifts = Vec::with_capacity(k * k);
        for dy in 0..k {
            for dx in 0..k {
                shifts.push(xp.narrow(2, dy, ho)?.narrow(3, dx, wo)?);
            }
        }
        // [n, c, k*k, ho, wo]: row `ci * k * k + dy * k + dx`, the kernel's own flattening.
        Tensor::stack(&shifts, 2)?.reshape((n, c * k * k, ho * wo))?
    };
    let y = weight.reshape((o, c * k * k))?.broadcast_matmul(&columns)?;
    y.reshape((n, o, ho, wo))?
        .broadcast_add(&bias.reshape((1, o, 1, 1))?)
}

/// The input gradient of [`conv2d`] for output gradient `dy`: the fast tiled correlation with
/// the flipped kernel when it applies, else candle's own backward (`conv_transpose2d`).
pub fn conv2d_input_grad(
    dy: &Tensor,
    weight: &Tensor,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let k = weight.dim(2)?;
    if fast_path_for(dy) && weight.dim(3)? == k && padding < k {
        return dy
            .contiguous()?
            .apply_op2_no_bwd(&weight.contiguous()?, &InputGradOp { padding });
    }
    dy.conv_transpose2d(weight, padding, 0, 1, 1)
}

/// The weight gradient of [`conv2d`] (kernel size `k`) for input `x` and output gradient `dy`:
/// the fast tiled `dY x col^T` when it applies, else candle's own backward formula.
pub fn conv2d_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    k: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    if fast_path_for(x) && padding < k {
        return x
            .contiguous()?
            .apply_op2_no_bwd(&dy.contiguous()?, &WeightGradOp { padding, k });
    }
    let grad = x
        .transpose(0, 1)?
        .conv2d(&dy.transpose(0, 1)?, padding, 1, 1, 1)?
        .transpose(0, 1)?;
    grad.narrow(2, 0, k)?.narrow(3, 0, k)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::kernels::tests::{assert_close, probe_backward, random};
    use crate::kernels::with_fast_ops;

    /// A convolution with [`conv2d`]'s signature.
    type ConvFn = fn(&Tensor, &Tensor, &Tensor, usize) -> candle_core::Result<Tensor>;

    /// `candidate`, run with the fast ops on or off, against candle's stock convolution:
    /// forward and all three gradients, for one geometry `[n, c, o, h, w, k, pad]`.
    fn check_against_stock(candidate: ConvFn, fast: bool, seed: u64, dims: [usize; 7]) {
        let [n, c, o, h, w, k, pad] = dims;
        let x = Var::from_tensor(&random(&[n, c, h, w], seed)).unwrap();
        let weight = Var::from_tensor(&random(&[o, c, k, k], seed + 1)).unwrap();
        let bias = Var::from_tensor(&random(&[o], seed + 2)).unwrap();
        let probe = random(&[n, o, h + 2 * pad + 1 - k, w + 2 * pad + 1 - k], seed + 3);
        let run = |conv: ConvFn, fast: bool| {
            with_fast_ops(fast, || {
                let y = conv(x.as_tensor(), weight.as_tensor(), &bias, pad).unwrap();
                let grads = probe_backward(&y, &probe);
                let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
                (y, g(&x), g(&weight), g(&bias))
            })
        };
        let (got, stock) = (run(candidate, fast), run(conv2d, false));
        let what = format!("n{n} c{c} o{o} {h}x{w} k{k} p{pad}");
        assert_close(&got.0, &stock.0, &format!("{what} forward"));
        assert_close(&got.1, &stock.1, &format!("{what} input grad"));
        assert_close(&got.2, &stock.2, &format!("{what} weight grad"));
        assert_close(&got.3, &stock.3, &format!("{what} bias grad"));
    }

    /// The fast kernels against stock.
    fn check(n: usize, c: usize, o: usize, h: usize, w: usize, k: usize, pad: usize) {
        let seed = (n * 1000 + c * 100 + o * 10 + h + w + k + pad) as u64;
        check_against_stock(conv2d, true, seed, [n, c, o, h, w, k, pad]);
    }

    /// [`conv2d_gemm`] against stock.
    fn check_gemm(n: usize, c: usize, o: usize, h: usize, w: usize, k: usize, pad: usize) {
        let seed = (n * 1000 + c * 100 + o * 10 + h + w + k + pad) as u64 + 77;
        check_against_stock(conv2d_gemm, false, seed, [n, c, o, h, w, k, pad]);
    }

    #[test]
    fn conv_gemm_matches_stock() {
        check_gemm(2, 3, 5, 9, 7, 3, 0);
        check_gemm(3, 1, 4, 8, 11, 3, 1);
        check_gemm(1, 4, 2, 5, 6, 1, 0);
        check_gemm(2, 2, 3, 3, 3, 3, 0);
    }

    #[test]
    fn conv_gemm_refuses_a_map_smaller_than_the_kernel() {
        let x = random(&[1, 2, 2, 2], 1);
        let weight = random(&[1, 2, 3, 3], 2);
        let bias = random(&[1], 3);
        let err = conv2d_gemm(&x, &weight, &bias, 0).unwrap_err().to_string();
        assert!(err.contains("smaller than the kernel"), "{err}");
        assert!(conv2d_gemm(&x, &weight, &bias, 1).is_ok());
    }

    #[test]
    fn conv3x3_valid_matches_stock() {
        check(2, 3, 5, 9, 7, 3, 0);
        check(1, 1, 1, 3, 3, 3, 0);
        check(3, 1, 4, 13, 11, 3, 0);
    }

    #[test]
    fn conv3x3_same_matches_stock() {
        check(2, 3, 5, 9, 7, 3, 1);
        check(1, 1, 2, 1, 1, 3, 1);
        check(2, 4, 1, 5, 12, 3, 1);
        // The weight gradient's two layouts: transposed up to 64 output channels, not above.
        check(2, 2, 64, 6, 5, 3, 1);
        check(2, 2, 65, 6, 5, 3, 1);
    }

    #[test]
    fn conv1x1_matches_stock() {
        check(2, 3, 2, 5, 7, 1, 0);
        check(1, 1, 1, 1, 1, 1, 0);
    }

    #[test]
    fn conv_spanning_many_tiles_matches_stock() {
        // 40 x 30 = 1200 output pixels per image: three tiles, one ending mid-row.
        check(2, 6, 7, 42, 32, 3, 0);
        check(1, 8, 3, 40, 37, 3, 1);
    }

    #[test]
    fn public_gradients_match_stock() {
        for (pad, h) in [(0usize, 8usize), (1, 7)] {
            let x = random(&[2, 3, h, h + 1], 11);
            let w = random(&[4, 3, 3, 3], 12);
            let dy = random(&[2, 4, h + 2 * pad - 2, h + 2 * pad - 1], 13);
            let run = |fast: bool| {
                with_fast_ops(fast, || {
                    (
                        conv2d_input_grad(&dy, &w, pad).unwrap(),
                        conv2d_weight_grad(&x, &dy, 3, pad).unwrap(),
                    )
                })
            };
            let (fast, stock) = (run(true), run(false));
            assert_close(&fast.0, &stock.0, "input grad");
            assert_close(&fast.1, &stock.1, "weight grad");
        }
    }

    #[test]
    fn tiles_cover_every_pixel_once() {
        for (n, ho, wo, threads) in [(1, 1, 1, 2), (2, 30, 41, 2), (1, 700, 3, 4), (3, 5, 5, 8)] {
            let g = Geom {
                n,
                c: 1,
                h: ho,
                w: wo,
                o: 1,
                k: 1,
                pad: 0,
                ho,
                wo,
            };
            let tiles = tiles(&g, threads);
            let mut seen = vec![0u8; n * ho * wo];
            for t in &tiles {
                assert!(t.len <= TILE_COLS && t.len > 0);
                for p in t.start..t.start + t.len {
                    seen[t.img * ho * wo + p] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1));
            assert!(tiles.len() >= threads.min(n * ho * wo));
        }
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let x = Tensor::zeros((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 5, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(with_fast_ops(true, || conv2d(&x, &w, &b, 0)).is_err());
    }
}
