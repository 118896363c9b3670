//! Optimizers (Adam, SGD with momentum or Nesterov), learning-rate schedules and gradient
//! clipping. Optimizer state is a map of named tensors, so it can be saved and resumed.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Finite and > 0 (false for NaN).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Finite and >= 0 (false for NaN).
fn non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

/// A learning-rate schedule: the rate at step `t` (0-based) from the base rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiplied by `gamma` every `every` steps.
    Step {
        /// Steps between decays (> 0).
        every: usize,
        /// The factor per decay.
        gamma: f64,
    },
    /// Cosine decay from the base rate to `min_lr` over `total_steps`, then `min_lr`.
    Cosine {
        /// Length of the decay (> 0).
        total_steps: usize,
        /// The final rate.
        min_lr: f64,
    },
    /// nnU-Net's poly decay: `base * (1 - t / total_steps)^power`, 0 after `total_steps`.
    Poly {
        /// Length of the decay (> 0).
        total_steps: usize,
        /// The exponent (nnU-Net: 0.9).
        power: f64,
    },
}

impl LrSchedule {
    /// The rate at step `step`.
    pub fn lr(&self, base_lr: f64, step: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step { every, gamma } => {
                base_lr * gamma.powi((step / every.max(1)).min(i32::MAX as usize) as i32)
            }
            LrSchedule::Cosine {
                total_steps,
                min_lr,
            } => {
                let t = (step as f64 / total_steps.max(1) as f64).min(1.0);
                min_lr + 0.5 * (base_lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LrSchedule::Poly { total_steps, power } => {
                let t = (step as f64 / total_steps.max(1) as f64).min(1.0);
                base_lr * (1.0 - t).powf(power)
            }
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = match *self {
            LrSchedule::Constant => None,
            LrSchedule::Step { every, gamma } => (every == 0 || !positive(gamma))
                .then(|| format!("step schedule needs every > 0 and gamma > 0 (every {every}, gamma {gamma})")),
            LrSchedule::Cosine {
                total_steps,
                min_lr,
            } => (total_steps == 0 || !non_negative(min_lr)).then(|| {
                format!("cosine schedule needs total_steps > 0 and min_lr >= 0 ({total_steps}, {min_lr})")
            }),
            LrSchedule::Poly { total_steps, power } => (total_steps == 0 || !positive(power))
                .then(|| format!("poly schedule needs total_steps > 0 and power > 0 ({total_steps}, {power})")),
        };
        bad.map_or(Ok(()), |m| Err(Error::Optimizer(m)))
    }
}

/// What every optimizer here offers.
pub trait Optimizer {
    /// A short name of the algorithm ("adam", "sgd"), recorded in checkpoints.
    fn kind(&self) -> &'static str;
    /// One update from the gradients of the last backward pass; parameters without a gradient
    /// are left alone.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate (call with a schedule's value before each step).
    fn set_learning_rate(&mut self, lr: f64);
    /// Steps taken so far.
    fn steps(&self) -> usize;
    /// The state as named tensors (moments per parameter name, the step count as a scalar).
    fn state(&self) -> Result<HashMap<String, Tensor>>;
    /// Restores a state written by [`Optimizer::state`] for the same parameters.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;
}

/// Adam (Kingma & Ba) with PyTorch's bias correction; `weight_decay` > 0 makes it AdamW
/// (decoupled decay: `p -= lr * wd * p`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamParams {
    /// Learning rate (the reference: 5e-4).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay (0 = plain Adam).
    pub weight_decay: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    first: Tensor,
    second: Option<Tensor>,
}

fn make_slots(params: &[(String, Var)], second: bool) -> Result<Vec<Slot>> {
    params
        .iter()
        .map(|(name, var)| {
            let zeros = var.zeros_like()?;
            Ok(Slot {
                name: name.clone(),
                var: var.clone(),
                first: zeros.clone(),
                second: second.then_some(zeros),
            })
        })
        .collect()
}

const STEP_KEY: &str = "step";

fn load_slots(
    slots: &mut [Slot],
    state: &HashMap<String, Tensor>,
    first_prefix: &str,
    second_prefix: Option<&str>,
) -> Result<usize> {
    let fetch = |key: String, var: &Var| -> Result<Tensor> {
        let t = state
            .get(&key)
            .ok_or_else(|| Error::Optimizer(format!("state lacks {key}")))?;
        if t.dims() != var.dims() {
            return Err(Error::Optimizer(format!(
                "state {key} has shape {:?}, the parameter {:?}",
                t.dims(),
                var.dims()
            )));
        }
        Ok(t.to_device(var.device())?.to_dtype(var.dtype())?)
    };
    let step = state
        .get(STEP_KEY)
        .ok_or_else(|| Error::Optimizer(format!("state lacks {STEP_KEY}")))?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()? as usize;
    let mut loaded = Vec::with_capacity(slots.len());
    for slot in slots.iter() {
        let first = fetch(format!("{first_prefix}.{}", slot.name), &slot.var)?;
        let second = match second_prefix {
            Some(p) => Some(fetch(format!("{p}.{}", slot.name), &slot.var)?),
            None => None,
        };
        loaded.push((first, second));
    }
    let expected = slots.len() * (1 + second_prefix.is_some() as usize) + 1;
    if state.len() != expected {
        return Err(Error::Optimizer(format!(
            "state has {} tensors, these parameters need {expected}",
            state.len()
        )));
    }
    for (slot, (first, second)) in slots.iter_mut().zip(loaded) {
        slot.first = first;
        slot.second = second;
    }
    Ok(step)
}

fn save_slots(
    slots: &[Slot],
    step: usize,
    first_prefix: &str,
    second_prefix: &str,
) -> Result<HashMap<String, Tensor>> {
    let device = slots
        .first()
        .map(|s| s.var.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let mut out = HashMap::new();
    out.insert(STEP_KEY.to_string(), Tensor::new(step as f64, &device)?);
    for slot in slots {
        out.insert(format!("{first_prefix}.{}", slot.name), slot.first.clone());
        if let Some(second) = &slot.second {
            out.insert(format!("{second_prefix}.{}", slot.name), second.clone());
        }
    }
    Ok(out)
}

/// The Adam optimizer over named parameters.
pub struct Adam {
    params: AdamParams,
    slots: Vec<Slot>,
    step: usize,
}

impl Adam {
    /// An optimizer for `params` (e.g. [`crate::UNet::parameters`]).
    pub fn new(params: &[(String, Var)], settings: AdamParams) -> Result<Self> {
        let p = settings;
        if !non_negative(p.lr)
            || !(0.0..1.0).contains(&p.beta1)
            || !(0.0..1.0).contains(&p.beta2)
            || !positive(p.eps)
            || !non_negative(p.weight_decay)
        {
            return Err(Error::Optimizer(format!("bad Adam settings {p:?}")));
        }
        Ok(Self {
            params: settings,
            slots: make_slots(params, true)?,
            step: 0,
        })
    }
}

impl Optimizer for Adam {
    fn kind(&self) -> &'static str {
        "adam"
    }
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let correction1 = 1.0 - p.beta1.powi(t);
        let correction2 = 1.0 - p.beta2.powi(t);
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let m = ((&slot.first * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let second = slot
                .second
                .as_ref()
                .ok_or_else(|| Error::Optimizer(format!("no second moment for {}", slot.name)))?;
            let v = ((second * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let denom = ((&v / correction2)?.sqrt()? + p.eps)?;
            let update = ((&m / correction1)? / denom)?;
            let mut value = slot.var.as_tensor().clone();
            if p.weight_decay > 0.0 {
                value = (value * (1.0 - p.lr * p.weight_decay))?;
            }
            slot.var.set(&(value - (update * p.lr)?)?)?;
            slot.first = m;
            slot.second = Some(v);
        }
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.params.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
    fn steps(&self) -> usize {
        self.step
    }
    fn state(&self) -> Result<HashMap<String, Tensor>> {
        save_slots(&self.slots, self.step, "exp_avg", "exp_avg_sq")
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.step = load_slots(&mut self.slots, state, "exp_avg", Some("exp_avg_sq"))?;
        Ok(())
    }
}

/// SGD settings, PyTorch's semantics (dampening 0): `b = mu * b + g`, then
/// `p -= lr * b` (classic) or `p -= lr * (g + mu * b)` (Nesterov).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdParams {
    /// Learning rate.
    pub lr: f64,
    /// Momentum `mu` (the paper: 0.99; 0 = plain SGD).
    pub momentum: f64,
    /// Nesterov momentum (nnU-Net).
    pub nesterov: bool,
    /// L2 weight decay added to the gradient (PyTorch's coupled form).
    pub weight_decay: f64,
}

impl Default for SgdParams {
    /// The paper's: momentum 0.99, classic.
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.99,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// SGD with momentum (candle-nn's SGD has none).
pub struct Sgd {
    params: SgdParams,
    slots: Vec<Slot>,
    step: usize,
}

impl Sgd {
    /// An optimizer for `params`.
    pub fn new(params: &[(String, Var)], settings: SgdParams) -> Result<Self> {
        let p = settings;
        if !non_negative(p.lr) || !(0.0..1.0).contains(&p.momentum) || !non_negative(p.weight_decay)
        {
            return Err(Error::Optimizer(format!("bad SGD settings {p:?}")));
        }
        if p.nesterov && p.momentum == 0.0 {
            return Err(Error::Optimizer("Nesterov needs momentum > 0".into()));
        }
        Ok(Self {
            params: settings,
            slots: make_slots(params, false)?,
            step: 0,
        })
    }
}

impl Optimizer for Sgd {
    fn kind(&self) -> &'static str {
        "sgd"
    }
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let p = self.params;
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let mut g = g.clone();
            if p.weight_decay > 0.0 {
                g = (g + (slot.var.as_tensor() * p.weight_decay)?)?;
            }
            let direction = if p.momentum > 0.0 {
                let b = ((&slot.first * p.momentum)? + &g)?;
                let d = if p.nesterov {
                    (&g + (&b * p.momentum)?)?
                } else {
                    b.clone()
                };
                slot.first = b;
                d
            } else {
                g
            };
            slot.var
                .set(&(slot.var.as_tensor() - (direction * p.lr)?)?)?;
        }
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.params.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
    fn steps(&self) -> usize {
        self.step
    }
    fn state(&self) -> Result<HashMap<String, Tensor>> {
        save_slots(&self.slots, self.step, "momentum_buffer", "")
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.step = load_slots(&mut self.slots, state, "momentum_buffer", None)?;
        Ok(())
    }
}

/// Scales the gradients of `params` in place so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[(String, Var)],
    max_norm: f64,
) -> Result<f64> {
    if !positive(max_norm) {
        return Err(Error::Optimizer(format!(
            "max_norm must be > 0, got {max_norm}"
        )));
    }
    let mut total = 0.0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for (_, var) in params {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn quadratic_setup() -> (Vec<(String, Var)>, Tensor) {
        let var =
            Var::from_tensor(&Tensor::new(&[1.0f64, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
        let target = Tensor::new(&[0.5f64, 0.5, 0.5], &Device::Cpu).unwrap();
        (vec![("p".to_string(), var)], target)
    }

    fn loss_grads(params: &[(String, Var)], target: &Tensor) -> GradStore {
        let d = (params[0].1.as_tensor() - target).unwrap();
        (d.sqr().unwrap().sum_all().unwrap() * 0.5)
            .unwrap()
            .backward()
            .unwrap()
    }

    /// Hand-computed PyTorch semantics on f(p) = 0.5 |p - t|^2 (gradient p - t).
    #[test]
    fn sgd_momentum_and_nesterov_follow_pytorch() {
        for nesterov in [false, true] {
            let (params, target) = quadratic_setup();
            let settings = SgdParams {
                lr: 0.1,
                momentum: 0.9,
                nesterov,
                weight_decay: 0.0,
            };
            let mut opt = Sgd::new(&params, settings).unwrap();
            let (mut p, mut b) = (1.0f64, 0.0f64);
            for _ in 0..5 {
                let grads = loss_grads(&params, &target);
                opt.step(&grads).unwrap();
                let g = p - 0.5;
                b = 0.9 * b + g;
                let d = if nesterov { g + 0.9 * b } else { b };
                p -= 0.1 * d;
            }
            let got = params[0].1.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!((got - p).abs() < 1e-12, "nesterov {nesterov}: {got} vs {p}");
        }
    }

    #[test]
    fn adam_follows_pytorch() {
        let (params, target) = quadratic_setup();
        let s = AdamParams {
            lr: 0.1,
            ..Default::default()
        };
        let mut opt = Adam::new(&params, s).unwrap();
        let (mut p, mut m, mut v) = (-2.0f64, 0.0f64, 0.0f64);
        for t in 1..=5 {
            let grads = loss_grads(&params, &target);
            opt.step(&grads).unwrap();
            let g = p - 0.5;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let mh = m / (1.0 - 0.9f64.powi(t));
            let vh = v / (1.0 - 0.999f64.powi(t));
            p -= 0.1 * mh / (vh.sqrt() + 1e-8);
        }
        let got = params[0].1.as_tensor().to_vec1::<f64>().unwrap()[1];
        assert!((got - p).abs() < 1e-12, "{got} vs {p}");
    }

    #[test]
    fn state_round_trip_resumes_identically() {
        let (params_a, target) = quadratic_setup();
        let (params_b, _) = quadratic_setup();
        let mut a = Adam::new(&params_a, AdamParams::default()).unwrap();
        let mut b = Adam::new(&params_b, AdamParams::default()).unwrap();
        for _ in 0..3 {
            a.step(&loss_grads(&params_a, &target)).unwrap();
        }
        params_b[0].1.set(params_a[0].1.as_tensor()).unwrap();
        let state = a.state().unwrap();
        assert!(state.contains_key("exp_avg.p") && state.contains_key("exp_avg_sq.p"));
        b.load_state(&state).unwrap();
        assert_eq!(b.steps(), 3);
        a.step(&loss_grads(&params_a, &target)).unwrap();
        b.step(&loss_grads(&params_b, &target)).unwrap();
        assert_eq!(
            params_a[0].1.as_tensor().to_vec1::<f64>().unwrap(),
            params_b[0].1.as_tensor().to_vec1::<f64>().unwrap()
        );
        // SGD state of Adam's parameters is refused.
        let mut sgd = Sgd::new(&params_b, SgdParams::default()).unwrap();
        assert!(sgd.load_state(&state).is_err());
    }

    #[test]
    fn schedules() {
        let base = 1.0;
        assert_eq!(LrSchedule::Constant.lr(base, 1000), 1.0);
        let step = LrSchedule::Step {
            every: 10,
            gamma: 0.5,
        };
        assert_eq!(step.lr(base, 9), 1.0);
        assert_eq!(step.lr(base, 25), 0.25);
        let cos = LrSchedule::Cosine {
            total_steps: 100,
            min_lr: 0.1,
        };
        assert!((cos.lr(base, 0) - 1.0).abs() < 1e-12);
        assert!((cos.lr(base, 50) - 0.55).abs() < 1e-12);
        assert!((cos.lr(base, 200) - 0.1).abs() < 1e-12);
        let poly = LrSchedule::Poly {
            total_steps: 100,
            power: 0.9,
        };
        assert!((poly.lr(base, 50) - 0.5f64.powf(0.9)).abs() < 1e-12);
        assert_eq!(poly.lr(base, 100), 0.0);
        assert!(LrSchedule::Step {
            every: 0,
            gamma: 0.5
        }
        .validate()
        .is_err());
        assert!(cos.validate().is_ok());
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let (params, target) = quadratic_setup();
        let mut grads = loss_grads(&params, &target);
        // Gradient (0.5, -2.5, 2.5): norm sqrt(12.75).
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        assert!((norm - 12.75f64.sqrt()).abs() < 1e-12);
        let g = grads.get(params[0].1.as_tensor()).unwrap();
        let clipped = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt();
        assert!((clipped - 1.0).abs() < 1e-5, "{clipped}");
        assert!(clip_grad_norm(&mut grads, &params, 0.0).is_err());
    }
}
