//! The 2x2 stride-2 up-convolution as one op: a GEMM per tile of input rows and a scatter.
//!
//! With kernel = stride = 2 every output pixel sees exactly one input pixel, so the forward is
//! `Y4 = W^T X` (`[out*4, in] x [in, pixels]`) with each row `(o, a, b)` of `Y4` scattered to
//! output pixels `(2i + a, 2j + b)`. The candle formulation of the same product (permute,
//! reshape, matmul, reshape, permute, broadcast add; [`crate::layers::UpConv2x2`] off the fast
//! path) copies the maps several times and, in the backward pass, makes candle accumulate a
//! gradient for every one of those intermediate tensors into fresh zeros; here the op is one
//! node with its own backward.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::conv::linear_backward;
use super::cpu_path::kernel_paths;
use super::{accumulate_over, contiguous_f32, sgemm, with_scratch, written_by, SharedMut};

/// Input pixels per tile (whole input rows): the `[out*4, pixels]` tile of a 64-channel layer
/// is 512 KB, within one core's L2.
const TILE_PIXELS: usize = 512;

/// Input `[n, c, h, w]`, weight `[c, o, 2, 2]`, output `[n, o, 2h, 2w]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpGeom {
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
}

impl UpGeom {
    /// The geometry of input `[n, c, h, w]` and weight `[c, o, 2, 2]`, or an error naming both.
    pub(crate) fn new(
        (n, c, h, w): (usize, usize, usize, usize),
        (c_k, o, kh, kw): (usize, usize, usize, usize),
    ) -> candle_core::Result<Self> {
        if c != c_k || kh != 2 || kw != 2 {
            candle_core::bail!(
                "unet upconv2x2: input [{n}, {c}, {h}, {w}] and weight [{c_k}, {o}, {kh}, {kw}] \
                 are not a 2x2 up-convolution ([in, out, 2, 2] with in = {c})"
            );
        }
        Ok(Self { n, c, o, h, w })
    }

    /// The output's `[n, o, 2h, 2w]`.
    pub(crate) fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.o, 2 * self.h, 2 * self.w)
    }

    /// Rows of `Y4`: `(o, a, b)`.
    fn taps(&self) -> usize {
        self.o * 4
    }

    fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// Input rows `row0..row0 + rows` of image `img`.
#[derive(Debug, Clone, Copy)]
struct UpTile {
    img: usize,
    row0: usize,
    rows: usize,
}

impl UpTile {
    /// Its first input pixel and its pixel count.
    fn pixels(&self, g: &UpGeom) -> (usize, usize) {
        (self.row0 * g.w, self.rows * g.w)
    }
}

/// Whole input rows, about [`TILE_PIXELS`] pixels a tile, and at least one tile per thread.
fn up_tiles(g: &UpGeom, threads: usize) -> Vec<UpTile> {
    if g.n == 0 || g.h == 0 || g.w == 0 {
        return Vec::new();
    }
    let per_image =
        g.h.min(g.plane().div_ceil(TILE_PIXELS).max(threads.div_ceil(g.n)));
    let rows = g.h.div_ceil(per_image);
    (0..g.n)
        .flat_map(|img| {
            (0..g.h).step_by(rows).map(move |row0| UpTile {
                img,
                row0,
                rows: rows.min(g.h - row0),
            })
        })
        .collect()
}

/// Copies the output gradient of `tile` into `y4` as `[out*4, pixels]` (the inverse of the
/// forward's scatter).
fn gather_tile(dy: &[f32], g: &UpGeom, tile: UpTile, y4: &mut [f32]) {
    let (_, len) = tile.pixels(g);
    let (w, wo, ho) = (g.w, 2 * g.w, 2 * g.h);
    for o in 0..g.o {
        let plane = &dy[(tile.img * g.o + o) * ho * wo..][..ho * wo];
        for i in 0..tile.rows {
            for a in 0..2 {
                let src = &plane[(2 * (tile.row0 + i) + a) * wo..][..wo];
                let (even, odd) = y4[(o * 4 + a * 2) * len..][..2 * len].split_at_mut(len);
                let (even, odd) = (&mut even[i * w..][..w], &mut odd[i * w..][..w]);
                for (j, pair) in src.chunks_exact(2).enumerate() {
                    even[j] = pair[0];
                    odd[j] = pair[1];
                }
            }
        }
    }
}

/// Runs `f(tile, first_pixel, pixels, y4)` for every tile in parallel, `y4` the thread's
/// `[taps, pixels]` scratch buffer.
fn for_each_up_tile(g: &UpGeom, f: impl Fn(UpTile, usize, usize, &mut [f32]) + Sync) {
    up_tiles(g, rayon::current_num_threads())
        .par_iter()
        .for_each(|&tile| {
            let (start, len) = tile.pixels(g);
            with_scratch(g.taps() * len, |y4| f(tile, start, len, y4));
        });
}

/// `y = upconv(x)`, `[n, o, 2h, 2w]`.
pub(crate) fn upconv_forward(x: &[f32], weight: &[f32], bias: &[f32], g: &UpGeom) -> Vec<f32> {
    let (taps, plane) = (g.taps(), g.plane());
    let (ho, wo) = (2 * g.h, 2 * g.w);
    let path = kernel_paths().forward;
    let fill = |out: SharedMut| {
        for_each_up_tile(g, |tile, start, len, y4| {
            let x_img = &x[tile.img * g.c * plane..];
            // SAFETY: y4 is [taps, len]; lhs is W^T, element (t, ci) at weight[ci*taps + t];
            // rhs the [c, len] pixels of the tile with row stride plane.
            unsafe {
                sgemm(
                    path,
                    (taps, len, g.c),
                    (y4.as_mut_ptr(), len, 1),
                    false,
                    (weight.as_ptr(), 1, taps),
                    (x_img[start..].as_ptr(), plane, 1),
                )
            }
            for (o, &b) in bias.iter().enumerate() {
                for i in 0..tile.rows {
                    for a in 0..2 {
                        let row = (tile.img * g.o + o) * ho + 2 * (tile.row0 + i) + a;
                        // SAFETY: output rows 2*row0..2*(row0 + rows) of every channel of
                        // image img belong to this tile alone.
                        let dst = unsafe { out.ptr().add(row * wo) };
                        let even = &y4[(o * 4 + a * 2) * len + i * g.w..][..g.w];
                        let odd = &y4[(o * 4 + a * 2 + 1) * len + i * g.w..][..g.w];
                        for j in 0..g.w {
                            // SAFETY: columns 2j and 2j + 1 < wo of that row.
                            unsafe {
                                dst.add(2 * j).write(even[j] + b);
                                dst.add(2 * j + 1).write(odd[j] + b);
                            }
                        }
                    }
                }
            }
        });
    };
    // SAFETY: the tiles cover every input row of every image, and each writes both output rows
    // of its input rows, all columns, every channel.
    unsafe { written_by(g.n * g.o * ho * wo, fill) }
}

/// The input gradient `[n, c, h, w]`: `W [c, o*4] x dY4 [o*4, pixels]` per tile.
pub(crate) fn upconv_input_grad(dy: &[f32], weight: &[f32], g: &UpGeom) -> Vec<f32> {
    let (taps, plane) = (g.taps(), g.plane());
    let path = kernel_paths().input_grad;
    let fill = |out: SharedMut| {
        for_each_up_tile(g, |tile, start, len, y4| {
            gather_tile(dy, g, tile, y4);
            // SAFETY: dst is the tile's [c, len] pixels of image img in dx (row stride
            // plane), written by this tile alone; lhs the row-major [c, taps] weight; rhs
            // the [taps, len] gathered gradient.
            unsafe {
                sgemm(
                    path,
                    (g.c, len, taps),
                    (out.ptr().add(tile.img * g.c * plane + start), plane, 1),
                    false,
                    (weight.as_ptr(), taps, 1),
                    (y4.as_ptr(), len, 1),
                )
            }
        });
    };
    // SAFETY: the tiles cover every pixel of every image, and each product writes all `c`
    // channels of its pixels without reading the destination.
    unsafe { written_by(g.n * g.c * plane, fill) }
}

/// The weight gradient `[c, o, 2, 2]`: `X [c, pixels] x dY4^T [pixels, o*4]`, each thread
/// accumulating its share of the tiles, summed at the end.
pub(crate) fn upconv_weight_grad(x: &[f32], dy: &[f32], g: &UpGeom) -> Vec<f32> {
    let (taps, plane) = (g.taps(), g.plane());
    let tiles = up_tiles(g, rayon::current_num_threads());
    let path = kernel_paths().weight_grad;
    accumulate_over(&tiles, g.c * taps, |acc, tile| {
        let (start, len) = tile.pixels(g);
        with_scratch(taps * len, |y4| {
            gather_tile(dy, g, tile, y4);
            let x_img = &x[tile.img * g.c * plane..];
            // SAFETY: acc is [c, taps]; lhs the tile's [c, len] pixels (row stride plane); rhs
            // the transposed view [len, taps] of the gathered gradient.
            unsafe {
                sgemm(
                    path,
                    (g.c, taps, len),
                    (acc.as_mut_ptr(), taps, 1),
                    true,
                    (x_img[start..].as_ptr(), plane, 1),
                    (y4.as_ptr(), 1, len),
                )
            }
        });
    })
}

struct UpConvOp;

impl CustomOp3 for UpConvOp {
    fn name(&self) -> &'static str {
        "unet-upconv2x2"
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
        let g = UpGeom::new(l1.shape().dims4()?, l2.shape().dims4()?)?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let bias = contiguous_f32(s3, l3, self.name())?;
        if bias.len() != g.o {
            candle_core::bail!(
                "unet upconv2x2: bias has {} entries, want {}",
                bias.len(),
                g.o
            );
        }
        let y = upconv_forward(x, weight, bias, &g);
        Ok((
            CpuStorage::F32(y),
            Shape::from((g.n, g.o, 2 * g.h, 2 * g.w)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        linear_backward(x, weight, dy, &UpInputGradOp, &UpWeightGradOp)
    }
}

/// `(n, o, h, w)` for an output gradient `[n, o, 2h, 2w]`: the batch, the output channels and
/// the input's sides; an error naming `op` for an odd side.
fn input_dims_of(dy: &Layout, op: &str) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (n, o, ho, wo) = dy.shape().dims4()?;
    if ho % 2 != 0 || wo % 2 != 0 {
        candle_core::bail!("{op}: output gradient {:?} has an odd side", dy.shape());
    }
    Ok((n, o, ho / 2, wo / 2))
}

struct UpInputGradOp;

impl CustomOp2 for UpInputGradOp {
    fn name(&self) -> &'static str {
        "unet-upconv2x2-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, o, h, w) = input_dims_of(l1, self.name())?;
        let (c, o_k, _, _) = l2.shape().dims4()?;
        if o != o_k {
            candle_core::bail!("unet upconv2x2 input grad: bad shapes {l1:?} {l2:?}");
        }
        let g = UpGeom::new((n, c, h, w), l2.shape().dims4()?)?;
        let dy = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let dx = upconv_input_grad(dy, weight, &g);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

struct UpWeightGradOp;

impl CustomOp2 for UpWeightGradOp {
    fn name(&self) -> &'static str {
        "unet-upconv2x2-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (n_dy, o, h_dy, w_dy) = input_dims_of(l2, self.name())?;
        if (n_dy, h_dy, w_dy) != (n, h, w) {
            candle_core::bail!("unet upconv2x2 weight grad: bad shapes {l1:?} {l2:?}");
        }
        let g = UpGeom::new((n, c, h, w), (c, o, 2, 2))?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        let dw = upconv_weight_grad(x, dy, &g);
        Ok((CpuStorage::F32(dw), Shape::from((c, o, 2, 2))))
    }
}

/// The 2x2 stride-2 up-convolution of `x` (`[n, in, h, w]`) with `weight` (`[in, out, 2, 2]`,
/// PyTorch's `ConvTranspose2d` layout) and `bias` (`[out]`): `[n, out, 2h, 2w]`. Contiguous f32
/// CPU tensors only (see [`super::fast_path_for`]); [`crate::layers::UpConv2x2`] falls back to
/// candle's ops for anything else.
pub fn upconv2x2(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, UpConvOp)
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::kernels::tests::{assert_close, probe_backward, random};
    use crate::kernels::with_fast_ops;
    use crate::layers::UpConv2x2;

    fn check(n: usize, c: usize, o: usize, h: usize, w: usize) {
        let seed = (n * 1000 + c * 100 + o * 10 + h * 3 + w) as u64;
        let layer = UpConv2x2 {
            weight: Var::from_tensor(&random(&[c, o, 2, 2], seed)).unwrap(),
            bias: Var::from_tensor(&random(&[o], seed + 1)).unwrap(),
        };
        let x = Var::from_tensor(&random(&[n, c, h, w], seed + 2)).unwrap();
        let probe = random(&[n, o, 2 * h, 2 * w], seed + 3);
        let run = |fast: bool| {
            with_fast_ops(fast, || {
                let y = candle_core::Module::forward(&layer, x.as_tensor()).unwrap();
                let grads = probe_backward(&y, &probe);
                let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
                (y, g(&x), g(&layer.weight), g(&layer.bias))
            })
        };
        let (got, stock) = (run(true), run(false));
        let what = format!("n{n} c{c} o{o} {h}x{w}");
        assert_close(&got.0, &stock.0, &format!("{what} forward"));
        assert_close(&got.1, &stock.1, &format!("{what} input grad"));
        assert_close(&got.2, &stock.2, &format!("{what} weight grad"));
        assert_close(&got.3, &stock.3, &format!("{what} bias grad"));
    }

    #[test]
    fn upconv_matches_the_matmul_form() {
        check(1, 1, 1, 1, 1);
        check(2, 3, 5, 7, 5);
        check(3, 1, 4, 4, 9);
        check(1, 6, 2, 33, 20); // several tiles per image
        check(2, 16, 8, 40, 31);
    }

    #[test]
    fn upconv_refuses_a_kernel_that_is_not_2x2() {
        let x = random(&[1, 2, 4, 4], 1);
        let weight = random(&[2, 3, 3, 3], 2);
        let bias = random(&[3], 3);
        let err = upconv2x2(&x, &weight, &bias).unwrap_err().to_string();
        assert!(err.contains("not a 2x2 up-convolution"), "{err}");
    }
}
