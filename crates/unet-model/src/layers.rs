//! The building blocks, each a small struct of our own: its forward calls the fast custom ops of
//! [`crate::kernels`] where they apply, without the network code knowing.

use candle_core::{DType, Device, Module, Tensor, Var};

use crate::Result;

/// PyTorch's batch-norm epsilon.
pub const BN_EPS: f64 = 1e-5;
/// PyTorch's batch-norm momentum: `running = (1 - m) * running + m * batch_stat`.
pub const BN_MOMENTUM: f64 = 0.1;

/// A parameter in the dtype of the map it meets: a no-op in f32, the mixed-precision cast
/// otherwise (differentiable: the gradient reaches the f32 master weight as f32).
pub fn in_dtype_of(v: &Var, x: &Tensor) -> candle_core::Result<Tensor> {
    v.as_tensor().to_dtype(x.dtype())
}

/// A 2-D convolution with bias, stride 1, square kernel.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[out, in, k, k]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
    /// Zero padding on each side.
    pub padding: usize,
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // The tiled CPU kernels when they apply, candle's conv2d otherwise.
        crate::kernels::conv2d(
            x,
            &in_dtype_of(&self.weight, x)?,
            &in_dtype_of(&self.bias, x)?,
            self.padding,
        )
    }
}

/// Batch normalisation over N, H, W per channel, with learnable scale and shift and running
/// statistics (buffers, not trainable) updated in training as PyTorch does (unbiased variance).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    /// Scale, `[C]`.
    pub weight: Var,
    /// Shift, `[C]`.
    pub bias: Var,
    /// Running mean, `[C]` (a buffer).
    pub running_mean: Var,
    /// Running variance, `[C]` (a buffer).
    pub running_var: Var,
}

impl BatchNorm2d {
    /// Normalises with batch statistics (`train`) or the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(x32) = self.in_own_dtype(x)? {
            return Ok(self.forward_t(&x32, train)?.to_dtype(x.dtype())?);
        }
        if crate::kernels::fast_path_for(x) && x.rank() == 4 {
            return self.forward_fast(x, train, false);
        }
        self.forward_stock(x, train)
    }

    /// [`BatchNorm2d::forward_t`] followed by a ReLU, fused into one pass (and one backward
    /// pass) on the CPU.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(x32) = self.in_own_dtype(x)? {
            return Ok(self.forward_relu_t(&x32, train)?.to_dtype(x.dtype())?);
        }
        if crate::kernels::fast_path_for(x) && x.rank() == 4 {
            return self.forward_fast(x, train, true);
        }
        Ok(self.forward_stock(x, train)?.relu()?)
    }

    /// `x` cast to the parameters' dtype when it differs: under mixed precision, batch
    /// normalisation (statistics and normalisation) runs in f32, as PyTorch's
    /// `keep_batchnorm_fp32`.
    fn in_own_dtype(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let own = self.weight.dtype();
        Ok(match x.dtype() == own {
            true => None,
            false => Some(x.to_dtype(own)?),
        })
    }

    /// The fused CPU kernel; the running statistics are updated as in the stock path.
    fn forward_fast(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (mean, var) = if train {
            let (n, c, h, w) = x.dims4()?;
            let values = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            self.train_statistics(&values, (n, c, h * w))?
        } else {
            let stat = |v: &Var| v.as_tensor().to_dtype(DType::F32)?.to_vec1::<f32>();
            (stat(&self.running_mean)?, stat(&self.running_var)?)
        };
        Ok(crate::kernels::batch_norm(
            x,
            self.weight.as_tensor(),
            self.bias.as_tensor(),
            (&mean, &var),
            BN_EPS,
            train,
            relu,
        )?)
    }

    /// The per-channel mean and biased variance of a contiguous `[n, c, plane]` batch (f32 on
    /// the CPU), with the running statistics updated from them: what training-mode batch
    /// normalisation starts with, here and in the direct training step.
    pub(crate) fn train_statistics(
        &self,
        x: &[f32],
        (n, c, plane): (usize, usize, usize),
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mean, var) = crate::kernels::batch_mean_var(x, (n, c, plane));
        let device = self.running_mean.device();
        self.update_running(
            &Tensor::from_slice(&mean, c, device)?,
            &Tensor::from_slice(&var, c, device)?,
            n * plane,
        )?;
        Ok((mean, var))
    }

    /// PyTorch's update of the running statistics from a batch's mean and biased variance
    /// (`[C]` each) over `count` values per channel; it stores the unbiased variance.
    pub(crate) fn update_running(
        &self,
        batch_mean: &Tensor,
        batch_var: &Tensor,
        count: usize,
    ) -> Result<()> {
        let unbias = if count > 1 {
            count as f64 / (count as f64 - 1.0)
        } else {
            1.0
        };
        let batch_mean = batch_mean.to_dtype(self.running_mean.dtype())?;
        let batch_var = (batch_var.to_dtype(self.running_var.dtype())? * unbias)?;
        let new_mean =
            ((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (batch_mean * BN_MOMENTUM)?)?;
        let new_var =
            ((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (batch_var * BN_MOMENTUM)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }

    /// candle's stock ops.
    fn forward_stock(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        let shape = (1, c, 1, 1);
        let (mean, var) = if train {
            let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred
                .sqr()?
                .mean_keepdim(0)?
                .mean_keepdim(2)?
                .mean_keepdim(3)?;
            // Running statistics carry no gradient.
            self.update_running(
                &mean.detach().flatten_all()?,
                &var.detach().flatten_all()?,
                x.elem_count() / c,
            )?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().reshape(shape)?,
                self.running_var.as_tensor().reshape(shape)?,
            )
        };
        let scale = self
            .weight
            .as_tensor()
            .reshape(shape)?
            .broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
        let shift = self.bias.as_tensor().reshape(shape)?;
        Ok(x.broadcast_sub(&mean)?
            .broadcast_mul(&scale)?
            .broadcast_add(&shift)?)
    }
}

/// The paper's 2x2 up-convolution with stride 2 (PyTorch's `ConvTranspose2d(in, out, 2, 2)`).
///
/// With kernel = stride = 2 each output pixel sees exactly one input pixel, so the op is one
/// matrix product `[N*H*W, in] x [in, out*4]` and a reshuffle: exact, differentiable, and much
/// faster than candle's general transposed convolution. On the fast path (f32 on the CPU, see
/// [`crate::kernels`]) it is one custom op, [`crate::kernels::upconv2x2`], instead of candle's
/// permutes, reshapes and matmul; on CUDA with the `cudnn` feature, cuDNN's transposed
/// convolution (`kernels::cudnn::upconv2x2`) when cuDNN can be initialised.
#[derive(Debug, Clone)]
pub struct UpConv2x2 {
    /// `[in, out, 2, 2]`, PyTorch's layout.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
}

impl Module for UpConv2x2 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if crate::kernels::fast_path_for(x) {
            return crate::kernels::upconv2x2(x, &self.weight, &self.bias);
        }
        #[cfg(feature = "cudnn")]
        if crate::kernels::cudnn::usable_for(x) {
            let (weight, bias) = (in_dtype_of(&self.weight, x)?, in_dtype_of(&self.bias, x)?);
            return crate::kernels::cudnn::upconv2x2(x, &weight, &bias);
        }
        let (n, c_in, h, w) = x.dims4()?;
        let c_out = self.weight.dim(1)?;
        let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * w, c_in))?;
        let kernel = in_dtype_of(&self.weight, x)?.reshape((c_in, c_out * 4))?;
        let y = rows.matmul(&kernel)?; // [n*h*w, out*2*2]
        let y = y
            .reshape((n, h, w, c_out, 2, 2))?
            .permute((0, 3, 1, 4, 2, 5))? // n, out, h, dy, w, dx
            .reshape((n, c_out, 2 * h, 2 * w))?;
        y.broadcast_add(&in_dtype_of(&self.bias, x)?.reshape((1, c_out, 1, 1))?)
    }
}

/// The `[out, in]` matrix of 1-D linear interpolation from `n_in` to `2 * n_in` samples with
/// PyTorch's `align_corners` semantics:
/// - `true`: output `i` samples input position `i * (n_in - 1) / (n_out - 1)`;
/// - `false`: output `i` samples `(i + 0.5) / 2 - 0.5`, clamped at 0 (pixel edges coincide).
pub fn interpolation_matrix(n_in: usize, align_corners: bool) -> Vec<f64> {
    let n_out = 2 * n_in;
    let mut m = vec![0.0; n_out * n_in];
    for i in 0..n_out {
        let src = if align_corners {
            if n_out > 1 {
                i as f64 * (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
            } else {
                0.0
            }
        } else {
            ((i as f64 + 0.5) * 0.5 - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let frac = src - i0 as f64;
        m[i * n_in + i0] += 1.0 - frac;
        m[i * n_in + i1] += frac;
    }
    m
}

/// Bilinear 2x upsampling of an NCHW tensor, as two matrix products with fixed interpolation
/// matrices (so it has a backward pass, unlike candle's `upsample_bilinear2d`).
pub fn upsample_bilinear2x(x: &Tensor, align_corners: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let matrix = |len: usize| -> Result<Tensor> {
        let m = interpolation_matrix(len, align_corners);
        Ok(Tensor::from_vec(m, (2 * len, len), x.device())?
            .to_dtype(x.dtype())?
            .t()?)
    };
    // Along W: [n*c*h, w] x [w, 2w].
    let y = x.reshape((n * c * h, w))?.matmul(&matrix(w)?)?;
    // Along H: bring H last, [n*c*2w, h] x [h, 2h], and back.
    let y = y
        .reshape((n, c, h, 2 * w))?
        .transpose(2, 3)?
        .contiguous()?
        .reshape((n * c * 2 * w, h))?
        .matmul(&matrix(h)?)?
        .reshape((n, c, 2 * w, 2 * h))?
        .transpose(2, 3)?
        .contiguous()?;
    Ok(y)
}

/// 2x2 max-pool with stride 2.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    // The CPU kernel (first-maximum backward) when it applies, candle's max_pool2d otherwise.
    Ok(crate::kernels::max_pool2x2(x)?)
}

/// The centre `h x w` crop of an NCHW map (offsets rounded down).
pub fn centre_crop(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, xh, xw) = x.dims4()?;
    if xh == h && xw == w {
        return Ok(x.clone());
    }
    Ok(x.narrow(2, (xh - h) / 2, h)?.narrow(3, (xw - w) / 2, w)?)
}

/// Inverted drop-out: zeroes entries with probability `p` and scales the rest by `1 / (1 - p)`.
pub fn dropout(x: &Tensor, p: f64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    Ok((x * dropout_mask(x.dims(), p, x.dtype(), x.device())?)?)
}

/// The mask [`dropout`] multiplies by: `0` with probability `p`, `1 / (1 - p)` elsewhere, drawn
/// from candle's generator as `candle_nn::ops::dropout` draws it.
pub fn dropout_mask(dims: &[usize], p: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    let p = p as f32;
    if !(0.0..1.0).contains(&p) {
        return Err(candle_core::Error::Msg(format!(
            "dropout probability has to be in [0, 1), got {p}"
        ))
        .into());
    }
    let rand = Tensor::rand(0f32, 1f32, dims, device)?;
    let scale = 1.0 / (1.0 - p as f64);
    let threshold = Tensor::new(p, device)?.broadcast_as(dims)?;
    Ok((rand.ge(&threshold)?.to_dtype(dtype)? * scale)?)
}

/// Numerically stable log-softmax over the channel axis of NCHW logits.
pub fn log_softmax_channels(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// The seeded generator of He initialisation (SplitMix64 stepped from the raw seed): candle
/// cannot seed its CPU generator.
///
/// It differs on purpose from `unet_augment::SplitMix64`, which mixes the seed before the first
/// step: this stream is the one every committed model and parity fixture was initialised with,
/// and `unet-model` depends on no augmentation crate.
#[derive(Debug, Clone)]
pub struct InitRng(u64);

impl InitRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box-Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = self.next_open01();
        let u2 = self.next_open01();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A tensor of `len` normal samples with standard deviation `std`, from `rng`.
pub fn seeded_normal(
    rng: &mut InitRng,
    shape: &[usize],
    std: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|_| (rng.next_normal() * std) as f32).collect();
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(values: Vec<f32>, shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn upconv_matches_direct_definition() {
        // out[n, o, 2h+a, 2w+b] = sum_c x[n, c, h, w] * W[c, o, a, b] + bias[o]
        let (n, ci, co, h, w) = (2, 3, 2, 3, 4);
        let xs: Vec<f32> = (0..n * ci * h * w)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let ws: Vec<f32> = (0..ci * co * 4).map(|i| (i as f32 * 0.91).cos()).collect();
        let bs = vec![0.5f32, -0.25];
        let up = UpConv2x2 {
            weight: var(ws.clone(), &[ci, co, 2, 2]),
            bias: var(bs.clone(), &[co]),
        };
        let x = Tensor::from_vec(xs.clone(), (n, ci, h, w), &Device::Cpu).unwrap();
        let y = up.forward(&x).unwrap();
        assert_eq!(y.dims(), &[n, co, 2 * h, 2 * w]);
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for b in 0..n {
            for o in 0..co {
                for yy in 0..2 * h {
                    for xx in 0..2 * w {
                        let mut want = bs[o];
                        for c in 0..ci {
                            want += xs[((b * ci + c) * h + yy / 2) * w + xx / 2]
                                * ws[((c * co + o) * 2 + yy % 2) * 2 + xx % 2];
                        }
                        let got = y[((b * co + o) * 2 * h + yy) * 2 * w + xx];
                        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn interpolation_rows_sum_to_one_and_hit_corners() {
        for n in [1usize, 2, 5] {
            for align in [false, true] {
                let m = interpolation_matrix(n, align);
                for row in m.chunks(n) {
                    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                }
                // The first output pixel is the first input pixel in both conventions.
                assert_eq!(m[0], 1.0);
                // The last output pixel is the last input pixel.
                assert_eq!(m[(2 * n - 1) * n + n - 1], 1.0);
            }
        }
        // align_corners=false, n=2: outputs sample 0, 0.25, 0.75, 1 (clamped at the ends).
        let m = interpolation_matrix(2, false);
        assert_eq!(m, vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]);
    }

    #[test]
    fn bilinear_upsample_has_a_gradient() {
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 12.0, &Device::Cpu)
                .unwrap()
                .reshape((1, 1, 3, 4))
                .unwrap(),
        )
        .unwrap();
        let y = upsample_bilinear2x(x.as_tensor(), false).unwrap();
        assert_eq!(y.dims(), &[1, 1, 6, 8]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap();
        // Each input pixel spreads a total weight of 4 over the 2x-upsampled output.
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().all(|v| (v - 4.0).abs() < 1e-5), "{g:?}");
    }

    #[test]
    fn seeded_normal_is_reproducible_and_standard() {
        let a = seeded_normal(
            &mut InitRng::new(7),
            &[10_000],
            2.0,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let b = seeded_normal(
            &mut InitRng::new(7),
            &[10_000],
            2.0,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert_eq!(a, b);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.06, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "{var}");
    }
}
