//! One training step: the single place that chooses between the direct step (no autograd
//! graph, [`UNet::direct_train_step`]) and candle's autograd with optional f16 loss scaling,
//! then clips the gradients and updates the parameters. The trainer and `unet bench` both call
//! [`UNet::train_step`], so what is timed is what trains.

use candle_core::{DType, Tensor};

use crate::optim::{clip_grad_norm, Optimizer};
use crate::precision::{backward_with, LossScaler};
use crate::{Result, UNet};

/// Settings of [`UNet::train_step`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepOptions {
    /// Clip the global gradient norm to this before the update (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// Go through candle's autograd even where the direct step applies (for comparisons).
    pub autograd: bool,
}

/// How a step computed its gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// [`UNet::direct_train_step`]: the fast kernels in reverse, no autograd graph.
    Direct,
    /// candle's autograd (`backward()`), with loss scaling when a scaler is given.
    Autograd,
}

impl StepKind {
    /// `"direct"` or `"autograd"`.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Direct => "direct",
            StepKind::Autograd => "autograd",
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The batch loss.
    pub loss: f64,
    /// How the gradients were computed.
    pub kind: StepKind,
    /// Whether the parameters were updated: `false` when the loss is not finite (nothing past
    /// the loss was computed) or when f16's loss scaler found overflowing gradients (the step is
    /// skipped and the scale backs off).
    pub applied: bool,
}

impl UNet {
    /// One optimizer step on the batch `x`: `loss(logits)` of the training-mode forward pass,
    /// its parameter gradients, clipping, and `optimizer.step`.
    ///
    /// The direct step is taken where it applies ([`UNet::direct_step_applies`]), unless
    /// `options.autograd` or a loss `scaler` is given (the direct step is f32 only); both ways
    /// give the same loss and gradients. Call it on the net returned by
    /// [`UNet::with_precision`] to train in another compute format: the gradients reach the
    /// shared f32 parameters.
    pub fn train_step(
        &self,
        x: &Tensor,
        loss: impl Fn(&Tensor) -> Result<Tensor>,
        optimizer: &mut dyn Optimizer,
        scaler: Option<&mut LossScaler>,
        options: StepOptions,
    ) -> Result<StepReport> {
        let direct = match !options.autograd && scaler.is_none() {
            true => self.direct_train_step(x, &loss)?,
            false => None,
        };
        let kind = match direct {
            Some(_) => StepKind::Direct,
            None => StepKind::Autograd,
        };
        let (loss_value, direct_grads) = match direct {
            Some((value, grads)) => (value, Some(grads)),
            None => (loss(&self.forward_t(x, true)?)?, None),
        };
        let value = loss_value.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Ok(StepReport {
                loss: value,
                kind,
                applied: false,
            });
        }
        let grads = match direct_grads {
            Some(grads) => Some(grads),
            None => backward_with(scaler, &loss_value, self.parameters())?,
        };
        let applied = match grads {
            Some(mut grads) => {
                if let Some(max_norm) = options.grad_clip {
                    clip_grad_norm(&mut grads, self.parameters(), max_norm)?;
                }
                optimizer.step(&grads)?;
                true
            }
            None => false,
        };
        Ok(StepReport {
            loss: value,
            kind,
            applied,
        })
    }
}
