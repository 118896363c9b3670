//! Batch normalisation (batch or running statistics) fused with an optional ReLU, forward and
//! backward in one pass each over the data, parallel over channels.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, lane_sum, map_planes};

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

/// `y = relu?(gamma * (x - mean) * invstd + beta)` with the statistics fixed in the op.
pub(crate) struct BatchNormOp {
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// Whether the statistics came from this batch (their gradient then flows into `dx`).
    batch_stats: bool,
    relu: bool,
}

impl BatchNormOp {
    /// The op for per-channel `mean` and biased `var` (see [`batch_norm`]).
    pub(crate) fn new(mean: &[f32], var: &[f32], eps: f64, batch_stats: bool, relu: bool) -> Self {
        let invstd = var
            .iter()
            .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
            .collect();
        Self {
            mean: mean.to_vec(),
            invstd,
            batch_stats,
            relu,
        }
    }

    /// The forward pass over a contiguous `[n, c, plane]` slice.
    pub(crate) fn apply(
        &self,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        dims: (usize, usize, usize),
    ) -> Vec<f32> {
        let (_, c, plane) = dims;
        map_planes(dims.0 * c, plane, |idx, out| {
            let (ci, start) = (idx % c, idx * plane);
            let scale = gamma[ci] * self.invstd[ci];
            let shift = beta[ci] - self.mean[ci] * scale;
            let src = &x[start..start + out.len()];
            if self.relu {
                out.iter_mut()
                    .zip(src)
                    .for_each(|(o, &v)| _ = o.write((v * scale + shift).max(0.0)));
            } else {
                out.iter_mut()
                    .zip(src)
                    .for_each(|(o, &v)| _ = o.write(v * scale + shift));
            }
        })
    }

    /// Per channel `sum(g)` (the shift's gradient) then `sum(g * xhat)` (the scale's), `[2, c]`,
    /// `g` the gradient reaching the normalised value, from the forward's input `x`, output `y`
    /// and output gradient `dy`.
    pub(crate) fn sums(
        &self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        (n, c, plane): (usize, usize, usize),
    ) -> Vec<f32> {
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ci| {
                let (mean, invstd) = (self.mean[ci], self.invstd[ci]);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for img in 0..n {
                    let start = (img * c + ci) * plane;
                    let (x, y, dy) = (
                        &x[start..start + plane],
                        &y[start..start + plane],
                        &dy[start..start + plane],
                    );
                    sg += lane_sum(plane, |i| reaching(self.relu, y[i], dy[i]));
                    sgx += lane_sum(plane, |i| reaching(self.relu, y[i], dy[i]) * (x[i] - mean))
                        * invstd as f64;
                }
                (sg, sgx)
            })
            .collect();
        let mut out: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
        out.extend(sums.iter().map(|s| s.1 as f32));
        out
    }

    /// The input gradient from `(x, y, dy)` as for [`BatchNormOp::sums`], the scale `gamma` and
    /// those sums.
    pub(crate) fn input_grad(
        &self,
        (x, y, dy): (&[f32], &[f32], &[f32]),
        gamma: &[f32],
        (sum_g, sum_gx): (&[f32], &[f32]),
        (n, c, plane): (usize, usize, usize),
    ) -> Vec<f32> {
        let count = (n * plane).max(1) as f32;
        map_planes(n * c, plane, |idx, out| {
            let (ci, start) = (idx % c, idx * plane);
            let (mean, invstd) = (self.mean[ci], self.invstd[ci]);
            let k = gamma[ci] * invstd;
            let (x, y, dy) = (
                &x[start..start + out.len()],
                &y[start..start + out.len()],
                &dy[start..start + out.len()],
            );
            if self.batch_stats {
                let mean_g = sum_g[ci] / count;
                let mean_gx = sum_gx[ci] / count;
                for (t, o) in out.iter_mut().enumerate() {
                    let xhat = (x[t] - mean) * invstd;
                    o.write(k * (reaching(self.relu, y[t], dy[t]) - mean_g - xhat * mean_gx));
                }
            } else {
                for (t, o) in out.iter_mut().enumerate() {
                    o.write(k * reaching(self.relu, y[t], dy[t]));
                }
            }
        })
    }
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
        let y = self.apply(x, gamma, beta, (n, c, h * w));
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
        let out = self.fwd.sums(x, y, dy, (n, c, h * w));
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
        let dx = self.fwd.input_grad(
            (x, y, dy),
            &self.gamma,
            (self.sum_g, self.sum_gx),
            (n, c, h * w),
        );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Per-channel batch mean and biased variance (accumulated in f64) of a contiguous
/// `[n, c, plane]` slice.
pub(crate) fn batch_mean_var(
    x: &[f32],
    (n, c, plane): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let stats = mean_var(x, n, c, plane);
    (
        stats.iter().map(|s| s.0 as f32).collect(),
        stats.iter().map(|s| s.1 as f32).collect(),
    )
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
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        BatchNormOp::new(mean, var, eps, batch_stats, relu),
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
