//! Decision calibration: move a trained net's decision point to `P(cell) = 0.5`.
//!
//! Trained with the paper's border weights, a U-Net separates membrane from cell well but
//! over-predicts membrane at `P = 0.5` (the weights make a missed membrane pixel up to 11 times
//! as costly as a missed cell pixel). [`fit_calibration`] predicts the *training* sections whole,
//! sweeps a threshold on the logit margin `z_cell - z_membrane` and keeps the one with the best
//! mean IoU ([`unet_metrics::best_decision_threshold`]); [`apply_calibration`] folds the offset
//! into the classifier's bias, so every consumer of the model (overlap-tile prediction, TTA,
//! evaluation) decides at 0.5 with no extra setting. The validation sections are never looked
//! at. [`calibrate_checkpoint`] does both on a checkpoint file and records the [`Calibration`]
//! in its sidecar under `metrics.calibration`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use unet_data::{ChannelStack, Stack};
use unet_metrics::{best_decision_threshold, sweep_decision_thresholds, ThresholdCandidate};
use unet_model::tiling::predict_whole_logits;
use unet_model::{load_model, read_checkpoint_meta, save_checkpoint, CheckpointMeta};
use unet_model::{Normalisation, UNet};

use crate::{Error, Result};

/// The key of the calibration in a checkpoint sidecar's `metrics`.
pub const CALIBRATION_KEY: &str = "calibration";

/// Candidate thresholds on the logit margin: -6 to 6 in steps of 0.02 (P from 0.0025 to
/// 0.9975, steps of at most 0.005 in P).
pub(crate) fn margin_grid() -> Vec<f64> {
    (-300..=300).map(|i| f64::from(i) / 50.0).collect()
}

/// Pixel scores at one decision point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionScores {
    /// Pixel accuracy (mean over sections).
    pub pixel_accuracy: f64,
    /// Mean IoU of membrane and cell (mean over sections).
    pub mean_iou: f64,
}

impl From<&ThresholdCandidate> for DecisionScores {
    fn from(c: &ThresholdCandidate) -> Self {
        Self {
            pixel_accuracy: c.pixel_accuracy,
            mean_iou: c.mean_iou,
        }
    }
}

/// A decision calibration fitted on training sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Added to the logit margin `z_cell - z_membrane` (half to each class's bias).
    pub logit_offset: f64,
    /// The `P(cell)` threshold of the uncalibrated net that the offset moves to 0.5:
    /// `sigmoid(-logit_offset)`.
    pub equivalent_threshold: f64,
    /// The sections it was fitted on (training sections).
    pub sections: Vec<usize>,
    /// Scores on those sections at the uncalibrated net's `P = 0.5`.
    pub before: DecisionScores,
    /// Scores on those sections at the calibrated net's `P = 0.5`.
    pub after: DecisionScores,
}

impl Calibration {
    /// The calibration recorded in a checkpoint's sidecar, if any.
    pub fn of(meta: &CheckpointMeta) -> Option<Calibration> {
        serde_json::from_value(meta.metrics.get(CALIBRATION_KEY)?.clone()).ok()
    }
}

/// The logit margins `z_cell - z_membrane` of `sections` of `images`, each predicted whole
/// after `normalisation`, section after section.
pub fn logit_margins(
    model: &UNet,
    images: &ChannelStack,
    sections: &[usize],
    normalisation: &Normalisation,
    device: &Device,
) -> Result<Vec<f32>> {
    let (h, w, c) = (images.height(), images.width(), images.channels());
    normalisation.check_channels(c)?;
    let tensors = sections
        .iter()
        .map(|&s| {
            let mut section = images.unit_section(s);
            normalisation.apply(&mut section, c);
            Ok(Tensor::from_vec(section, (1, c, h, w), device)?)
        })
        .collect::<Result<Vec<_>>>()?;
    section_margins(model, &tensors)
}

/// The logit margins of normalised sections `[1, C, h, w]`, each predicted whole, flattened
/// in order.
pub(crate) fn section_margins(model: &UNet, sections: &[Tensor]) -> Result<Vec<f32>> {
    check_binary(model)?;
    let mut margins = Vec::with_capacity(sections.iter().map(Tensor::elem_count).sum());
    for x in sections {
        let logits = predict_whole_logits(model, x)?;
        let margin = (logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?;
        margins.extend(
            margin
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?,
        );
    }
    Ok(margins)
}

/// The threshold on the logit margin, from [`margin_grid`], with the best mean IoU of
/// `margins` against `truth` (`n` sections of `h x w`; ties go to the one nearest 0). The one
/// fit behind both the final calibration and the per-epoch choice of `best`.
pub(crate) fn fit_margin_threshold(
    margins: &[f32],
    truth: &[u8],
    (n, h, w): (usize, usize, usize),
) -> Result<ThresholdCandidate> {
    Ok(best_decision_threshold(
        margins,
        truth,
        n,
        h,
        w,
        &margin_grid(),
        0.0,
    )?)
}

fn check_binary(model: &UNet) -> Result<()> {
    match model.config().n_classes {
        2 => Ok(()),
        n => Err(Error::Config(format!(
            "decision calibration needs a two-class (membrane / cell) net, this one has {n} classes"
        ))),
    }
}

/// Fits the logit offset that maximises the mean IoU of `model` on `sections` (training
/// sections) of `images` / `labels` (0 membrane, > 0 cell). The model is not changed.
pub fn fit_calibration(
    model: &UNet,
    images: &ChannelStack,
    labels: &Stack<u8>,
    sections: &[usize],
    normalisation: &Normalisation,
    device: &Device,
) -> Result<Calibration> {
    if sections.is_empty() {
        return Err(Error::Config("no section to calibrate on".into()));
    }
    let margins = logit_margins(model, images, sections, normalisation, device)?;
    let truth: Vec<u8> = sections
        .iter()
        .flat_map(|&s| labels.page(s).iter().copied())
        .collect();
    let (n, h, w) = (sections.len(), images.height(), images.width());
    let best = fit_margin_threshold(&margins, &truth, (n, h, w))?;
    let before = sweep_decision_thresholds(&margins, &truth, n, h, w, &[0.0])?;
    let logit_offset = -best.threshold;
    Ok(Calibration {
        logit_offset,
        equivalent_threshold: 1.0 / (1.0 + logit_offset.exp()),
        sections: sections.to_vec(),
        before: DecisionScores::from(&before[0]),
        after: DecisionScores::from(&best),
    })
}

/// Adds `logit_offset` to the model's logit margin `z_cell - z_membrane` by moving the
/// classifier's biases (`+offset/2` cell, `-offset/2` membrane): the softmax, and so
/// `P(cell)`, then equals `sigmoid(margin + offset)`.
pub fn apply_calibration(model: &UNet, logit_offset: f64) -> Result<()> {
    check_binary(model)?;
    let (_, bias) = model
        .parameters()
        .iter()
        .find(|(name, _)| name == "classifier.bias")
        .ok_or_else(|| Error::Config("the net has no classifier bias".into()))?;
    let half = (logit_offset / 2.0) as f32;
    let shift = Tensor::new(&[-half, half], bias.device())?.to_dtype(bias.dtype())?;
    let moved = (bias.as_tensor() + shift)?;
    bias.set(&moved)?;
    Ok(())
}

/// Fits a calibration of the checkpoint at `checkpoint` on `sections` (its training
/// sections), folds it into the weights and rewrites the checkpoint (atomically) with the
/// [`Calibration`] in its sidecar.
///
/// Refuses a checkpoint that is already calibrated, and one that holds optimizer state (a
/// resumable `last`: a resumed run must continue from the weights it trained).
pub fn calibrate_checkpoint(
    checkpoint: impl AsRef<Path>,
    images: &ChannelStack,
    labels: &Stack<u8>,
    sections: &[usize],
    device: &Device,
) -> Result<Calibration> {
    let checkpoint = checkpoint.as_ref();
    let meta = read_checkpoint_meta(checkpoint)?;
    let refuse = |reason: String| Error::Calibration {
        checkpoint: checkpoint.to_path_buf(),
        reason,
    };
    if let Some(c) = Calibration::of(&meta) {
        return Err(refuse(format!(
            "already calibrated (logit offset {:+.3}, fitted on sections {:?})",
            c.logit_offset, c.sections
        )));
    }
    if meta.optimizer.is_some() {
        return Err(refuse(
            "it holds optimizer state (a resumable `last`); calibrate `best` or a copy without \
             the optimizer state"
                .into(),
        ));
    }
    let (model, _) = load_model(checkpoint, device)?;
    let normalisation = meta.required_normalisation(checkpoint)?;
    let calibration = fit_calibration(&model, images, labels, sections, &normalisation, device)?;
    apply_calibration(&model, calibration.logit_offset)?;
    let mut metrics = meta.metrics.clone();
    let value = serde_json::to_value(&calibration).expect("a calibration serialises");
    match metrics.as_object_mut() {
        Some(map) => {
            map.insert(CALIBRATION_KEY.into(), value);
        }
        None => metrics = serde_json::json!({ CALIBRATION_KEY: value }),
    }
    save_checkpoint(
        checkpoint,
        &model,
        meta.epoch,
        Some(normalisation),
        metrics,
        None,
    )?;
    Ok(calibration)
}
