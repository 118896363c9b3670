//! Validation on whole sections: the sections held in memory ([`Validation`]), their loss and
//! scores each epoch ([`ValidationScores`]), with the pixel scores also at the decision point
//! fitted on a few training sections when the run calibrates.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use unet_data::{ChannelStack, LabelClasses, Stack, IGNORED};
use unet_metrics::{
    argmax_classes, instance_contingency, score_stack, sweep_decision_thresholds, ConfusionMatrix,
    IsbiOptions, ScoreOptions,
};
use unet_model::tiling::predict_whole_logits;
use unet_model::{Loss, Normalisation, UNet};
use unet_weights::WeightMapParams;

use crate::calibrate::{fit_margin_threshold, section_margins};
use crate::loader::loss_weights;
use crate::Result;

/// Validation scores of one epoch (on the full validation sections).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationScores {
    /// The training loss (with the run's weights) over the validation sections.
    pub loss: f64,
    /// Pixel accuracy at P(cell) > 0.5, mean over sections.
    pub pixel_accuracy: f64,
    /// Mean over the two classes of IoU, mean over sections.
    pub mean_iou: f64,
    /// Dice of the cell class.
    pub dice: f64,
    /// ISBI V-Rand (thinned, best threshold).
    pub v_rand: f64,
    /// ISBI V-Info (thinned, best threshold).
    pub v_info: f64,
    /// The pixel scores at the decision point fitted on a few training sections, when the run
    /// calibrates: what `best` is chosen by, since the trained net's own P = 0.5 drifts as
    /// the border weights push it towards membrane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<CalibratedScores>,
    /// Per-class scores, for labels of class indices (K classes). Then `pixel_accuracy` counts
    /// the pixels that are not ignored, `mean_iou` and `dice` are the means over the
    /// foreground classes 1..K (what `best` is chosen by), and `v_rand` / `v_info` compare the
    /// instances (4-connected components) of class 1, unthinned, averaged over the sections
    /// that hold one (0 when none does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassValidation>,
}

/// Validation scores of each of K classes, pooled over the validation sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassValidation {
    /// Accuracy (recall) per class, index = class.
    pub accuracy_per_class: Vec<f64>,
    /// IoU per class.
    pub iou_per_class: Vec<f64>,
    /// Dice per class.
    pub dice_per_class: Vec<f64>,
}

/// Validation pixel scores at a decision threshold fitted on training sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedScores {
    /// The `P(cell)` threshold with the best mean IoU on the training sections used.
    pub threshold: f64,
    /// Pixel accuracy on the validation sections at that threshold.
    pub pixel_accuracy: f64,
    /// Mean IoU on the validation sections at that threshold.
    pub mean_iou: f64,
}

impl ValidationScores {
    /// What `best` is chosen by: the calibrated mean IoU when there is one, else the mean IoU
    /// at P = 0.5.
    pub fn selection_iou(&self) -> f64 {
        self.calibrated
            .as_ref()
            .map_or(self.mean_iou, |c| c.mean_iou)
    }
}

/// The training sections whose predictions fit the per-epoch decision point: about five,
/// evenly spread (all of them when there are at most five).
pub(crate) fn calibration_sections(train: &[usize]) -> Vec<usize> {
    train
        .iter()
        .copied()
        .step_by(train.len().div_ceil(5).max(1))
        .collect()
}

/// Sections and their targets held in memory for validation (or calibration).
pub(crate) struct Validation {
    /// Normalised sections, each `[1, C, h, w]`.
    pub(crate) images: Vec<Tensor>,
    /// Labels as the stack holds them (0/255, or class indices), all sections.
    pub(crate) labels: Vec<u8>,
    /// How `labels` read.
    classes: LabelClasses,
    /// Class ids `[1, h, w]` u32.
    targets: Vec<Tensor>,
    /// Loss weights `[1, h, w]`, if the run uses weights.
    weights: Vec<Option<Tensor>>,
    height: usize,
    width: usize,
}

impl Validation {
    /// The `sections` of `images` (normalised by `normalisation`) and of `labels` (read as
    /// `classes` says), with the weight maps of `weights` when given.
    pub(crate) fn new(
        images: &ChannelStack,
        labels: &Stack<u8>,
        classes: LabelClasses,
        sections: &[usize],
        normalisation: &Normalisation,
        weights: Option<&WeightMapParams>,
        device: &Device,
    ) -> Result<Self> {
        let (h, w, c) = (images.height(), images.width(), images.channels());
        normalisation.check_channels(c)?;
        let params = weights.map(|w| w.validate()).transpose()?;
        let mut v = Validation {
            images: Vec::new(),
            labels: Vec::new(),
            classes,
            targets: Vec::new(),
            weights: Vec::new(),
            height: h,
            width: w,
        };
        for &s in sections {
            let mut image = images.unit_section(s);
            normalisation.apply(&mut image, c);
            v.images
                .push(Tensor::from_vec(image, (1, c, h, w), device)?);
            let label = labels.page(s);
            crate::loader::check_classes([label], classes, &[s])?;
            v.labels.extend_from_slice(label);
            // An ignored pixel is class 0 with weight 0: it adds nothing to the loss.
            let ids: Vec<u32> = label
                .iter()
                .map(|&l| u32::from(classes.class_of(l).unwrap_or(0)))
                .collect();
            v.targets.push(Tensor::from_vec(ids, (1, h, w), device)?);
            let map = loss_weights(params.as_ref(), classes, label, h, w)?;
            v.weights.push(match map {
                Some(map) => Some(Tensor::from_vec(map, (1, h, w), device)?),
                None => None,
            });
        }
        Ok(v)
    }
}

/// P(cell) (softmax channel 1) of logits `[1, C, h, w]`, as a flat vector.
fn cell_probability(logits: &Tensor) -> Result<Vec<f32>> {
    let p = candle_nn::ops::softmax(logits, 1)?.narrow(1, 1, 1)?;
    Ok(p.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Predicts the validation sections `batch` at a time and hands each section's logits
/// `[1, C, h, w]` to `each`; returns the loss averaged per section.
fn for_each_section(
    model: &UNet,
    v: &Validation,
    loss: Loss,
    batch: usize,
    mut each: impl FnMut(&Tensor) -> Result<()>,
) -> Result<f64> {
    let mut total = 0.0;
    for (first, images) in v.images.chunks(batch.max(1)).enumerate() {
        let logits = predict_whole_logits(model, &Tensor::cat(images, 0)?)?;
        for i in 0..images.len() {
            let k = first * batch.max(1) + i;
            let one = logits.narrow(0, i, 1)?;
            let value = loss.compute(&one, &v.targets[k], v.weights[k].as_ref())?;
            total += value.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            each(&one)?;
        }
    }
    Ok(total / v.images.len().max(1) as f64)
}

/// Predicts and scores the validation sections: (loss, P(cell) of all sections).
/// Predicts the sections `batch` at a time; the loss is still averaged per section.
pub(crate) fn predict_validation(
    model: &UNet,
    v: &Validation,
    loss: Loss,
    batch: usize,
) -> Result<(f64, Vec<f32>)> {
    let mut probs = Vec::with_capacity(v.labels.len());
    let loss = for_each_section(model, v, loss, batch, |one| {
        probs.extend(cell_probability(one)?);
        Ok(())
    })?;
    Ok((loss, probs))
}

/// The validation scores of K-class labels (see [`ValidationScores::classes`]).
fn validate_classes(
    model: &UNet,
    v: &Validation,
    loss: Loss,
    batch: usize,
    k: usize,
) -> Result<ValidationScores> {
    let (h, w) = (v.height, v.width);
    let ignore = v.classes.ignores().then_some(IGNORED);
    let mut confusion = ConfusionMatrix::new(k)?;
    let mut instances = Vec::new();
    let mut section = 0;
    let loss = for_each_section(model, v, loss, batch, |one| {
        let logits = one.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let predicted = argmax_classes(&logits, k)?;
        let truth = &v.labels[section * h * w..(section + 1) * h * w];
        confusion.merge(&ConfusionMatrix::from_class_maps(
            &predicted, truth, k, ignore,
        )?)?;
        match instance_contingency(&predicted, truth, h, w, k, 1, ignore) {
            Ok(c) => instances.push((c.v_rand(), c.v_info())),
            Err(unet_metrics::Error::NoTruthInstances { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        section += 1;
        Ok(())
    })?;
    let scores = confusion.class_scores();
    // Sections without class 1 have no instances to compare; with none at all, both are 0.
    let n = instances.len().max(1) as f64;
    Ok(ValidationScores {
        loss,
        pixel_accuracy: scores.pixel_accuracy,
        mean_iou: scores.mean_foreground_iou,
        dice: scores.mean_foreground_dice,
        v_rand: instances.iter().map(|v| v.0).sum::<f64>() / n,
        v_info: instances.iter().map(|v| v.1).sum::<f64>() / n,
        calibrated: None,
        classes: Some(ClassValidation {
            accuracy_per_class: scores.accuracy_per_class,
            iou_per_class: scores.iou_per_class,
            dice_per_class: scores.dice_per_class,
        }),
    })
}

fn validation_options() -> ScoreOptions {
    ScoreOptions {
        isbi: IsbiOptions {
            unthinned: false,
            ..IsbiOptions::default()
        },
        ..ScoreOptions::default()
    }
}

/// Scores the validation sections; with `calibration` (some training sections), also at the
/// decision threshold that is best on those.
pub(crate) fn validate(
    model: &UNet,
    v: &Validation,
    loss: Loss,
    batch: usize,
    calibration: Option<&Validation>,
) -> Result<ValidationScores> {
    if let LabelClasses::Indexed { classes, .. } = v.classes {
        return validate_classes(model, v, loss, batch, classes);
    }
    let (loss, probs) = predict_validation(model, v, loss, batch)?;
    let (pages, h, w) = (v.images.len(), v.height, v.width);
    let report = score_stack(&probs, &v.labels, pages, h, w, &validation_options())?;
    let calibrated = match calibration {
        Some(c) => {
            // The same fit as the final calibration, on a few training sections.
            let margins = section_margins(model, &c.images)?;
            let shape = (c.images.len(), h, w);
            let best = fit_margin_threshold(&margins, &c.labels, shape)?;
            // P(cell) > sigmoid(t) exactly where the margin is > t.
            let threshold = 1.0 / (1.0 + (-best.threshold).exp());
            let at = sweep_decision_thresholds(&probs, &v.labels, pages, h, w, &[threshold])?;
            Some(CalibratedScores {
                threshold,
                pixel_accuracy: at[0].pixel_accuracy,
                mean_iou: at[0].mean_iou,
            })
        }
        None => None,
    };
    Ok(ValidationScores {
        loss,
        pixel_accuracy: report.pixel_accuracy,
        mean_iou: report.mean_iou,
        dice: report.dice,
        v_rand: report.v_rand,
        v_info: report.v_info,
        calibrated,
        classes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_five_evenly_spread_sections_fit_the_epoch_decision_point() {
        let train: Vec<usize> = (0..27).collect();
        assert_eq!(calibration_sections(&train), vec![0, 6, 12, 18, 24]);
        assert_eq!(calibration_sections(&[3, 4]), vec![3, 4]);
        assert!(calibration_sections(&[]).is_empty());
    }
}
