//! Batch normalisation (batch or running statistics) fused with an optional ReLU, forward and
//! backward in one pass each over the data, parallel over channels.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, lane_sum, SharedMut};

/// Per-channel mean and biased variance of a contiguous `[n, c, plane]` slice (two passes, f64).
fn mean_var(x: &[f32], n: usize, c: usize, plane: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ci| {
            let planes = || (0..n).map(move |img| &x[(img * c + ci) * plane..][..plane]);
            let count = (n * plane).max(1) as f64;
            let mean = planes().map(|p| lane_sum(plane, |i| p[i])).sum::<f64>() / count;
            let m = mean as f32;
            let var = planes()
                .map(|p| lane_sum(plane, |i| (p[i] - m) * (p[i] - m)))
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .collect()
}

/// Runs `f(channel, plane_of_x, plane_of_out)` for every (image, channel) plane in parallel,
/// writing `out` (same shape as `x`).
fn for_each_plane(
    out: &mut [f32],
    (n, c, plane): (usize, usize, usize),
    f: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let dst = SharedMut(out.as_mut_ptr());
    (0..n * c).into_par_iter().for_each(|idx| {
        // SAFETY: plane `idx` of `out`, written by this task only.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(idx * plane), plane) };
        f(idx % c, idx * plane, out);
    });
}

/// `y = relu?(gamma * (x - mean) * invstd + beta)` with the statistics fixed in the op.
struct BatchNormOp {
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// Whether the statistics came from this batch (their gradient then flows into `dx`).
    batch_stats: bool,
    relu: bool,
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "unet-batch-norm"
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
        let (n, c, h, w) = l1.shape().dims4()?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let gamma = contiguous_f32(s2, l2, self.name())?;
        let beta = contiguous_f32(s3, l3, self.name())?;
        if gamma.len() != c || beta.len() != c || self.mean.len() != c {
            candle_core::bail!("unet batch norm: {c} channels, parameters do not fit");
        }
        let mut y = vec![0f32; x.len()];
        for_each_plane(&mut y, (n, c, h * w), |ci, start, out| {
            let scale = gamma[ci] * self.invstd[ci];
            let shift = beta[ci] - self.mean[ci] * scale;
            let src = &x[start..start + out.len()];
            if self.relu {
                out.iter_mut()
                    .zip(src)
                    .for_each(|(o, &v)| *o = (v * scale + shift).max(0.0));
            } else {
                out.iter_mut()
                    .zip(src)
                    .for_each(|(o, &v)| *o = v * scale + shift);
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let sums = x.apply_op3_no_bwd(y, &dy, &BatchNormSumsOp { fwd: self })?;
        let sums_v = sums.to_vec2::<f32>()?;
        let dx = x.apply_op3_no_bwd(
            y,
            &dy,
            &BatchNormInputGradOp {
                fwd: self,
                gamma: gamma.to_vec1::<f32>()?,
                sum_g: &sums_v[0],
                sum_gx: &sums_v[1],
            },
        )?;
        Ok((Some(dx), Some(sums.get(1)?), Some(sums.get(0)?)))
    }
}

/// The three inputs of the backward ops `(x, y, dy)` as slices, checked.
fn backward_inputs<'a>(
    name: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> candle_core::Result<(&'a [f32], &'a [f32], &'a [f32])> {
    if l1.shape() != l2.shape() || l1.shape() != l3.shape() {
        candle_core::bail!("{name}: x, y and dy differ in shape");
    }
    Ok((
        contiguous_f32(s1, l1, name)?,
        contiguous_f32(s2, l2, name)?,
        contiguous_f32(s3, l3, name)?,
    ))
}

/// The gradient reaching the normalised value: `dy`, masked where the fused ReLU clipped.
#[inline]
fn reaching(relu: bool, y: f32, dy: f32) -> f32 {
    if relu && y <= 0.0 {
        0.0
    } else {
        dy
    }
}

/// `(x, y, dy) -> [2, c]`: per channel `sum(g)` (the shift's gradient) and `sum(g * xhat)`
/// (the scale's), `g` the gradient reaching the normalised value.
struct BatchNormSumsOp<'a> {
    fwd: &'a BatchNormOp,
}

impl CustomOp3 for BatchNormSumsOp<'_> {
    fn name(&self) -> &'static str {
        "unet-batch-norm-sums"
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
        let (n, c, h, w) = l1.shape().dims4()?;
        let (x, y, dy) = backward_inputs(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let plane = h * w;
        let op = self.fwd;
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ci| {
                let (mean, invstd) = (op.mean[ci], op.invstd[ci]);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for img in 0..n {
                    let start = (img * c + ci) * plane;
                    let (x, y, dy) = (
                        &x[start..start + plane],
                        &y[start..start + plane],
                        &dy[start..start + plane],
                    );
                    sg += lane_sum(plane, |i| reaching(op.relu, y[i], dy[i]));
                    sgx += lane_sum(plane, |i| reaching(op.relu, y[i], dy[i]) * (x[i] - mean))
                        * invstd as f64;
                }
                (sg, sgx)
            })
            .collect();
        let mut out: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
        out.extend(sums.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// `(x, y, dy) -> dx`.
struct BatchNormInputGradOp<'a> {
    fwd: &'a BatchNormOp,
    gamma: Vec<f32>,
    sum_g: &'a [f32],
    sum_gx: &'a [f32],
}

impl CustomOp3 for BatchNormInputGradOp<'_> {
    fn name(&self) -> &'static str {
        "unet-batch-norm-input-grad"
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
        let (n, c, h, w) = l1.shape().dims4()?;
        let (x, y, dy) = backward_inputs(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let op = self.fwd;
        let count = (n * h * w).max(1) as f32;
        let mut dx = vec![0f32; x.len()];
        for_each_plane(&mut dx, (n, c, h * w), |ci, start, out| {
            let (mean, invstd) = (op.mean[ci], op.invstd[ci]);
            let k = self.gamma[ci] * invstd;
            let (x, y, dy) = (
                &x[start..start + out.len()],
                &y[start..start + out.len()],
                &dy[start..start + out.len()],
            );
            if op.batch_stats {
                let mean_g = self.sum_g[ci] / count;
                let mean_gx = self.sum_gx[ci] / count;
                for (t, o) in out.iter_mut().enumerate() {
                    let xhat = (x[t] - mean) * invstd;
                    *o = k * (reaching(op.relu, y[t], dy[t]) - mean_g - xhat * mean_gx);
                }
            } else {
                for (t, o) in out.iter_mut().enumerate() {
                    *o = k * reaching(op.relu, y[t], dy[t]);
                }
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Per-channel batch mean and biased variance of an f32 CPU NCHW tensor, accumulated in f64.
pub fn channel_mean_var(x: &Tensor) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let (n, c, h, w) = x.dims4()?;
    let values = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let stats = mean_var(&values, n, c, h * w);
    Ok((
        stats.iter().map(|s| s.0 as f32).collect(),
        stats.iter().map(|s| s.1 as f32).collect(),
    ))
}

/// Batch normalisation of an f32 CPU NCHW tensor with per-channel `mean` and (biased) `var`,
/// scale `gamma` and shift `beta`, followed by a ReLU when `relu`. With `batch_stats` the
/// statistics are taken to be this batch's (training: the backward pass differentiates through
/// them); otherwise they are constants (the running statistics of evaluation).
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, var): (&[f32], &[f32]),
    eps: f64,
    batch_stats: bool,
    relu: bool,
) -> candle_core::Result<Tensor> {
    let invstd = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        BatchNormOp {
            mean: mean.to_vec(),
            invstd,
            batch_stats,
            relu,
        },
    )
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use crate::kernels::tests::{assert_close, probe_backward, random};
    use crate::kernels::with_fast_ops;
    use crate::layers::BatchNorm2d;

    fn layer(c: usize, seed: u64) -> BatchNorm2d {
        let var = |t: candle_core::Tensor| Var::from_tensor(&t).unwrap();
        BatchNorm2d {
            weight: var(random(&[c], seed)),
            bias: var(random(&[c], seed + 1)),
            running_mean: var(random(&[c], seed + 2)),
            running_var: var(random(&[c], seed + 3).abs().unwrap()),
        }
    }

    #[test]
    fn batch_norm_relu_matches_stock() {
        for (shape, train, relu) in [
            ([2, 3, 5, 7], true, true),
            ([1, 1, 9, 9], true, false),
            ([3, 4, 3, 2], false, true),
            ([2, 2, 1, 1], true, true),
            ([1, 5, 40, 33], true, true),
        ] {
            let x = Var::from_tensor(&random(&shape, 21)).unwrap();
            let probe = random(&shape, 22);
            let run = |fast: bool| {
                let bn = layer(shape[1], 30);
                with_fast_ops(fast, || {
                    let y = if relu {
                        bn.forward_relu_t(x.as_tensor(), train).unwrap()
                    } else {
                        bn.forward_t(x.as_tensor(), train).unwrap()
                    };
                    let grads = probe_backward(&y, &probe);
                    let g = |t: &candle_core::Tensor| grads.get(t).unwrap().clone();
                    let gx = g(x.as_tensor());
                    let (gw, gb) = (g(bn.weight.as_tensor()), g(bn.bias.as_tensor()));
                    let stats = (
                        bn.running_mean.as_tensor().clone(),
                        bn.running_var.as_tensor().clone(),
                    );
                    (y, gx, gw, gb, stats)
                })
            };
            let (fast, stock) = (run(true), run(false));
            let what = format!("{shape:?} train {train} relu {relu}");
            assert_close(&fast.0, &stock.0, &format!("{what} forward"));
            assert_close(&fast.1, &stock.1, &format!("{what} input grad"));
            assert_close(&fast.2, &stock.2, &format!("{what} scale grad"));
            assert_close(&fast.3, &stock.3, &format!("{what} shift grad"));
            assert_close(&fast.4 .0, &stock.4 .0, &format!("{what} running mean"));
            assert_close(&fast.4 .1, &stock.4 .1, &format!("{what} running var"));
        }
    }
}
