//! Mixed precision: the format of the forward and backward passes, and dynamic loss scaling.
//!
//! As PyTorch's `autocast` with `keep_batchnorm_fp32`: the master weights, the optimizer state,
//! batch normalisation (statistics and normalisation) and the loss stay in f32; convolutions,
//! up-convolutions, pooling and activations run in the compute format
//! ([`crate::UNet::with_precision`]). For f16, whose range ends at 65504, the loss is multiplied
//! by a [`LossScaler`]'s scale before the backward pass so that small gradients do not flush to
//! zero, and the gradients are divided by it again before the update; a step whose gradients
//! overflowed is skipped and the scale backs off.
//!
//! ```
//! use unet_model::precision::{LossScaler, ScalerStep};
//!
//! let mut scaler = LossScaler::new(1024.0, 2);
//! assert_eq!(scaler.update(false), ScalerStep::Skip); // inf/NaN gradients: skip, back off
//! assert_eq!(scaler.scale(), 512.0);
//! assert_eq!(scaler.update(true), ScalerStep::Apply);
//! assert_eq!(scaler.update(true), ScalerStep::Apply); // two clean steps: grow
//! assert_eq!(scaler.scale(), 1024.0);
//! assert_eq!(scaler.skipped_steps(), 1);
//! ```

use std::fmt;
use std::str::FromStr;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The floating-point format of the forward and backward passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// bfloat16 compute: f32's range, 8 bits of mantissa; needs no loss scaling.
    Bf16,
    /// IEEE half compute with dynamic loss scaling.
    F16,
}

impl Precision {
    /// Every precision, in the order of the `--precision` help.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The candle dtype of the compute format.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// Whether training in this format needs a [`LossScaler`] (f16's narrow range).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }

    /// An error when candle cannot run this format on `device`, checked before a run starts
    /// rather than failing (or silently falling back to f32) inside the first step.
    pub fn check_device(self, device: &Device) -> Result<()> {
        // candle's CPU matmul, and so its im2col convolution, has f16 and f32 kernels but none
        // for bf16 (candle-core 0.11, `cpu_backend::MatMul`).
        if self == Precision::Bf16 && device.is_cpu() {
            return Err(Error::Precision(
                "bf16 is not supported on the CPU: candle's CPU matrix product has no bf16 \
                 kernel; use --precision f16 or f32 on the CPU, or bf16 on CUDA"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::Precision(format!(
                    "unknown precision {s:?}; expected f32, bf16 or f16"
                ))
            })
    }
}

/// What to do with a step's gradients, decided by [`LossScaler::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalerStep {
    /// The gradients are finite: apply the optimizer step.
    Apply,
    /// They overflowed: skip the step (the scale has backed off).
    Skip,
}

/// Dynamic loss scaling as PyTorch's `GradScaler`: the scale halves on a step with inf/NaN
/// gradients (which is skipped) and doubles after `growth_interval` clean steps in a row.
///
/// Its state is saved with the training state, so a resumed run continues with the same scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    scale: f64,
    growth_interval: usize,
    clean_steps: usize,
    skipped_steps: usize,
}

impl LossScaler {
    /// PyTorch's `GradScaler` default initial scale, 2^16.
    pub const DEFAULT_INITIAL_SCALE: f64 = 65536.0;
    /// PyTorch's default: clean steps before the scale doubles.
    pub const DEFAULT_GROWTH_INTERVAL: usize = 2000;
    /// The factor applied to the scale after clean steps.
    pub const GROWTH_FACTOR: f64 = 2.0;
    /// The factor applied to the scale after an overflow.
    pub const BACKOFF_FACTOR: f64 = 0.5;

    /// A scaler starting at `initial_scale` (finite, > 0) that grows after `growth_interval`
    /// (>= 1) clean steps.
    pub fn new(initial_scale: f64, growth_interval: usize) -> Self {
        Self {
            scale: initial_scale,
            growth_interval: growth_interval.max(1),
            clean_steps: 0,
            skipped_steps: 0,
        }
    }

    /// The factor the loss is multiplied by before the backward pass.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Steps skipped so far because their gradients overflowed.
    pub fn skipped_steps(&self) -> usize {
        self.skipped_steps
    }

    /// Records whether a step's unscaled gradients were all finite and says whether to apply
    /// it: an overflow backs the scale off and skips the step; `growth_interval` clean steps in
    /// a row grow it.
    pub fn update(&mut self, grads_finite: bool) -> ScalerStep {
        if !grads_finite {
            self.scale *= Self::BACKOFF_FACTOR;
            self.clean_steps = 0;
            self.skipped_steps += 1;
            return ScalerStep::Skip;
        }
        self.clean_steps += 1;
        if self.clean_steps >= self.growth_interval {
            let grown = self.scale * Self::GROWTH_FACTOR;
            // As PyTorch: never grow into inf.
            if grown.is_finite() && grown <= f32::MAX as f64 {
                self.scale = grown;
            }
            self.clean_steps = 0;
        }
        ScalerStep::Apply
    }

    /// Divides the gradients of `params` by the scale in place and says whether they are all
    /// finite (no inf or NaN anywhere).
    pub fn unscale(&self, grads: &mut GradStore, params: &[(String, Var)]) -> Result<bool> {
        let inverse = 1.0 / self.scale;
        let mut finite = true;
        for (_, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                let unscaled = (g.to_dtype(DType::F32)? * inverse)?;
                // A single inf or NaN makes the sum inf or NaN.
                let sum = unscaled.abs()?.sum_all()?.to_scalar::<f32>()?;
                finite &= sum.is_finite();
                grads.insert(var.as_tensor(), unscaled);
            }
        }
        Ok(finite)
    }
}

/// The gradients of `loss` for an optimizer step: plain backward without a scaler; with one, the
/// scaled backward, [`LossScaler::unscale`] and [`LossScaler::update`], and `None` when the
/// step is to be skipped because the gradients overflowed.
pub fn backward_with(
    scaler: Option<&mut LossScaler>,
    loss: &Tensor,
    params: &[(String, Var)],
) -> Result<Option<GradStore>> {
    let Some(scaler) = scaler else {
        return Ok(Some(loss.backward()?));
    };
    let mut grads = (loss * scaler.scale())?.backward()?;
    let finite = scaler.unscale(&mut grads, params)?;
    Ok(match scaler.update(finite) {
        ScalerStep::Apply => Some(grads),
        ScalerStep::Skip => None,
    })
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new(Self::DEFAULT_INITIAL_SCALE, Self::DEFAULT_GROWTH_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(
            err.contains("\"fp16\"") && err.contains("f32, bf16 or f16"),
            "{err}"
        );
    }

    #[test]
    fn bf16_on_the_cpu_is_a_clear_error() {
        let err = Precision::Bf16
            .check_device(&Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bf16 is not supported on the CPU"), "{err}");
        Precision::F16.check_device(&Device::Cpu).unwrap();
        Precision::F32.check_device(&Device::Cpu).unwrap();
    }

    #[test]
    fn overflow_backs_off_and_skips_and_clean_steps_grow() {
        let mut s = LossScaler::new(8.0, 3);
        assert_eq!(s.update(true), ScalerStep::Apply);
        assert_eq!(s.update(true), ScalerStep::Apply);
        // An overflow resets the run of clean steps.
        assert_eq!(s.update(false), ScalerStep::Skip);
        assert_eq!((s.scale(), s.skipped_steps()), (4.0, 1));
        assert_eq!(s.update(false), ScalerStep::Skip);
        assert_eq!((s.scale(), s.skipped_steps()), (2.0, 2));
        for _ in 0..2 {
            assert_eq!(s.update(true), ScalerStep::Apply);
            assert_eq!(s.scale(), 2.0);
        }
        assert_eq!(s.update(true), ScalerStep::Apply);
        assert_eq!(s.scale(), 4.0, "grows after 3 clean steps in a row");
        assert_eq!(s.skipped_steps(), 2);
    }

    #[test]
    fn the_scale_never_grows_past_f32() {
        let mut s = LossScaler::new(f32::MAX as f64, 1);
        s.update(true);
        assert_eq!(s.scale(), f32::MAX as f64);
    }

    #[test]
    fn unscale_divides_and_detects_inf_and_nan() {
        let a = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let b = Var::new(&[3f32], &Device::Cpu).unwrap();
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let loss = ((a.as_tensor() * 4.0).unwrap().sum_all().unwrap()
            + (b.as_tensor() * 8.0).unwrap().sum_all().unwrap())
        .unwrap();
        let scaler = LossScaler::new(4.0, 10);
        let mut grads = (loss * scaler.scale()).unwrap().backward().unwrap();
        assert!(scaler.unscale(&mut grads, &params).unwrap());
        let g = |v: &Var, grads: &GradStore| grads.get(v).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g(&a, &grads), vec![4.0, 4.0]);
        assert_eq!(g(&b, &grads), vec![8.0]);

        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut grads = GradStore::default();
            grads.insert(
                a.as_tensor(),
                Tensor::new(&[1f32, bad], &Device::Cpu).unwrap(),
            );
            grads.insert(b.as_tensor(), Tensor::new(&[1f32], &Device::Cpu).unwrap());
            assert!(!scaler.unscale(&mut grads, &params).unwrap(), "{bad}");
        }
    }
}
