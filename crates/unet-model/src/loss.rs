//! Losses on NCHW logits and `[N, H, W]` class-id targets: (weighted) softmax cross-entropy,
//! soft Dice, and their sum. All go through a stable log-softmax.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::layers::log_softmax_channels;
use crate::{Error, Result};

/// The additive smoothing of the soft Dice ratio (keeps absent classes finite).
pub const DICE_SMOOTH: f64 = 1.0;

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy, per-pixel weighted when weights are given.
    CrossEntropy,
    /// Soft Dice (weights are ignored).
    Dice,
    /// Cross-entropy (weighted when weights are given) plus soft Dice.
    CrossEntropyDice,
}

impl Loss {
    /// The loss as a scalar tensor.
    pub fn compute(
        self,
        logits: &Tensor,
        targets: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        match self {
            Loss::CrossEntropy => cross_entropy(logits, targets, weights),
            Loss::Dice => dice_loss(logits, targets),
            Loss::CrossEntropyDice => cross_entropy_dice(logits, targets, weights),
        }
    }
}

/// Checks shapes and class ids; returns the one-hot targets `[N, C, H, W]` in the logits' dtype.
fn one_hot_targets(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let ld = logits.dims();
    if ld.len() != 4 || ld[1] < 2 {
        return Err(Error::LossInput(format!(
            "logits must be [N, C >= 2, H, W], got {ld:?}"
        )));
    }
    if !matches!(
        logits.dtype(),
        DType::F32 | DType::F64 | DType::F16 | DType::BF16
    ) {
        return Err(Error::LossInput(format!(
            "logits must be floating point, got {:?}",
            logits.dtype()
        )));
    }
    let (n, c, h, w) = (ld[0], ld[1], ld[2], ld[3]);
    if targets.dims() != [n, h, w] {
        return Err(Error::LossInput(format!(
            "targets must be [N, H, W] = {:?} to match logits {ld:?}, got {:?}",
            [n, h, w],
            targets.dims()
        )));
    }
    if targets.dtype() != DType::U32 {
        return Err(Error::LossInput(format!(
            "targets must be class ids of dtype u32, got {:?}",
            targets.dtype()
        )));
    }
    let max_id = targets.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if max_id as usize >= c {
        return Err(Error::LossInput(format!(
            "target class id {max_id} is out of range for {c} classes"
        )));
    }
    let classes = Tensor::arange(0u32, c as u32, logits.device())?.reshape((1, c, 1, 1))?;
    Ok(targets
        .unsqueeze(1)?
        .broadcast_eq(&classes)?
        .to_dtype(logits.dtype())?)
}

/// Softmax cross-entropy. Without weights: the mean over pixels. With weights `[N, H, W]`
/// (non-negative, not all zero): `sum(w * nll) / sum(w)`, the reference's normalisation
/// (the paper's w(x) goes here).
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let one_hot = one_hot_targets(logits, targets)?;
    let log_p = log_softmax_channels(logits)?;
    let nll = (one_hot * log_p)?.sum(1)?.neg()?; // [N, H, W]
    match weights {
        None => Ok(nll.mean_all()?),
        Some(w) => {
            if w.dims() != nll.dims() {
                return Err(Error::LossInput(format!(
                    "weights must be [N, H, W] = {:?}, got {:?}",
                    nll.dims(),
                    w.dims()
                )));
            }
            let w = w.to_dtype(logits.dtype())?.detach();
            let min = w
                .flatten_all()?
                .min(0)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let total = w.sum_all()?;
            let total_value = total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if min < 0.0 || total_value <= 0.0 || !total_value.is_finite() {
                return Err(Error::LossInput(format!(
                    "weights must be non-negative with a positive finite sum (min {min}, sum {total_value})"
                )));
            }
            Ok((nll * w)?.sum_all()?.broadcast_div(&total)?)
        }
    }
}

/// Soft Dice loss: `1 - mean_c (2 sum(p_c y_c) + s) / (sum p_c + sum y_c + s)` with softmax
/// probabilities `p`, one-hot targets `y`, sums over the whole batch and `s` = [`DICE_SMOOTH`].
pub fn dice_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let one_hot = one_hot_targets(logits, targets)?;
    let probs = log_softmax_channels(logits)?.exp()?;
    let per_class = |t: &Tensor| -> Result<Tensor> { Ok(t.sum(0)?.sum(1)?.sum(1)?) };
    let intersection = per_class(&(&probs * &one_hot)?)?;
    let denominator = (per_class(&probs)? + per_class(&one_hot)?)?;
    let dice = ((intersection * 2.0)? + DICE_SMOOTH)?.div(&(denominator + DICE_SMOOTH)?)?;
    Ok(dice.mean_all()?.neg()?.affine(1.0, 1.0)?)
}

/// Cross-entropy (weighted when `weights` are given) plus soft Dice, equally weighted.
pub fn cross_entropy_dice(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    Ok((cross_entropy(logits, targets, weights)? + dice_loss(logits, targets)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    struct Case {
        logits: Vec<f64>,
        targets: Vec<u32>,
        weights: Vec<f64>,
        shape: (usize, usize, usize, usize),
    }

    fn case() -> Case {
        let shape = (2, 3, 3, 4);
        let (n, c, h, w) = shape;
        let logits = (0..n * c * h * w)
            .map(|i| 3.0 * ((i as f64) * 1.37).sin())
            .collect();
        let targets = (0..n * h * w).map(|i| ((i * 7 + 1) % c) as u32).collect();
        let weights = (0..n * h * w)
            .map(|i| 0.1 + ((i as f64) * 0.77).cos().abs() * 5.0)
            .collect();
        Case {
            logits,
            targets,
            weights,
            shape,
        }
    }

    fn tensors(cs: &Case, logits: &[f64]) -> (Tensor, Tensor, Tensor) {
        let (n, _, h, w) = cs.shape;
        let dev = Device::Cpu;
        (
            Tensor::from_slice(logits, cs.shape, &dev).unwrap(),
            Tensor::from_slice(&cs.targets, (n, h, w), &dev).unwrap(),
            Tensor::from_slice(&cs.weights, (n, h, w), &dev).unwrap(),
        )
    }

    fn check_gradient(loss: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>) {
        let cs = case();
        let (l, t, w) = tensors(&cs, &cs.logits);
        let var = Var::from_tensor(&l).unwrap();
        let value = loss(var.as_tensor(), &t, &w).unwrap();
        let grads = value.backward().unwrap();
        let analytic = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let eps = 1e-6;
        for i in 0..cs.logits.len() {
            let eval = |delta: f64| {
                let mut shifted = cs.logits.clone();
                shifted[i] += delta;
                let (l, t, w) = tensors(&cs, &shifted);
                loss(&l, &t, &w).unwrap().to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() < 1e-7,
                "logit {i}: numeric {numeric} vs analytic {}",
                analytic[i]
            );
        }
    }

    #[test]
    fn weighted_cross_entropy_gradient_matches_finite_differences() {
        check_gradient(|l, t, w| cross_entropy(l, t, Some(w)));
    }

    #[test]
    fn dice_gradient_matches_finite_differences() {
        check_gradient(|l, t, _| dice_loss(l, t));
    }

    #[test]
    fn ce_dice_gradient_matches_finite_differences() {
        check_gradient(|l, t, w| cross_entropy_dice(l, t, Some(w)));
    }

    #[test]
    fn weighted_cross_entropy_matches_a_direct_sum() {
        let cs = case();
        let (l, t, w) = tensors(&cs, &cs.logits);
        let got = cross_entropy(&l, &t, Some(&w))
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let (n, c, h, wd) = cs.shape;
        let (mut num, mut den) = (0.0, 0.0);
        for b in 0..n {
            for p in 0..h * wd {
                let z: Vec<f64> = (0..c)
                    .map(|k| cs.logits[(b * c + k) * h * wd + p])
                    .collect();
                let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
                let y = cs.targets[b * h * wd + p] as usize;
                let weight = cs.weights[b * h * wd + p];
                num += weight * (lse - z[y]);
                den += weight;
            }
        }
        assert!((got - num / den).abs() < 1e-12, "{got} vs {}", num / den);
        // Unit weights give the plain mean.
        let ones = w.ones_like().unwrap();
        let a = cross_entropy(&l, &t, Some(&ones))
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let b = cross_entropy(&l, &t, None)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((a - b).abs() < 1e-12);
    }

    #[test]
    fn huge_logits_stay_finite() {
        let dev = Device::Cpu;
        let l =
            Tensor::from_slice(&[1000f32, -1000.0, -1000.0, 1000.0], (1, 2, 1, 2), &dev).unwrap();
        let t = Tensor::from_slice(&[1u32, 0], (1, 1, 2), &dev).unwrap();
        let v = cross_entropy(&l, &t, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((v - 2000.0).abs() < 1e-3, "{v}");
        let d = dice_loss(&l, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!(d.is_finite() && d > 0.5, "{d}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dev = Device::Cpu;
        let l = Tensor::zeros((1, 2, 2, 2), DType::F32, &dev).unwrap();
        let out_of_range = Tensor::from_slice(&[0u32, 1, 2, 0], (1, 2, 2), &dev).unwrap();
        let err = cross_entropy(&l, &out_of_range, None).unwrap_err();
        assert!(err.to_string().contains("class id 2"), "{err}");
        let wrong_shape = Tensor::zeros((1, 2, 3), DType::U32, &dev).unwrap();
        assert!(dice_loss(&l, &wrong_shape).is_err());
        let wrong_dtype = Tensor::zeros((1, 2, 2), DType::F32, &dev).unwrap();
        assert!(cross_entropy(&l, &wrong_dtype, None).is_err());
        let t = Tensor::zeros((1, 2, 2), DType::U32, &dev).unwrap();
        let zero_w = Tensor::zeros((1, 2, 2), DType::F32, &dev).unwrap();
        assert!(cross_entropy(&l, &t, Some(&zero_w)).is_err());
        let neg_w = Tensor::from_slice(&[1f32, -1.0, 1.0, 1.0], (1, 2, 2), &dev).unwrap();
        assert!(cross_entropy(&l, &t, Some(&neg_w)).is_err());
    }
}
