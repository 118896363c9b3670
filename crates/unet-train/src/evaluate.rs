//! Evaluation: a checkpoint's scores on labelled sections ([`evaluate_checkpoint`]), and a run's
//! `best` on its own validation sections, written to `scores.json` ([`evaluate_run`]).

use std::path::{Path, PathBuf};

use candle_core::Device;
use unet_data::{ChannelStack, LabelClasses, Stack};
use unet_metrics::{score_stack, ScoreOptions, ScoreReport};
use unet_model::{load_model, Loss};

use crate::calibrate::Calibration;
use crate::run_dir::{files, write_json_atomically};
use crate::validation::{predict_validation, Validation};
use crate::{Error, Result, TrainConfig};

/// Scores of a checkpoint on validation sections.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The checkpoint's weights file.
    pub checkpoint: PathBuf,
    /// Epochs it was trained for.
    pub epoch: usize,
    /// The sections scored.
    pub sections: Vec<usize>,
    /// Scores on the full sections (pixel scores at P(cell) > 0.5; V-Rand, V-Info best over
    /// thresholds 0.0-0.9, thinned).
    pub full: ScoreReport,
    /// The same on the centre `size x size` of each section (the reference scored the centre
    /// 388 x 388 only), when asked for and smaller than the sections.
    pub centre: Option<(usize, ScoreReport)>,
    /// The checkpoint's decision calibration, if it has one (already folded into its weights).
    pub calibration: Option<Calibration>,
}

impl Evaluation {
    /// The evaluation as a JSON object: `checkpoint`, `epoch`, `sections`, `full` (the
    /// [`ScoreReport::to_json`] object), `centre` (`{"size", "scores"}` or null) and
    /// `calibration` (the [`Calibration`] or null).
    pub fn to_json(&self) -> String {
        let centre = match &self.centre {
            Some((size, r)) => format!("{{\"size\": {size}, \"scores\": {}}}", r.to_json()),
            None => "null".into(),
        };
        format!(
            "{{\"checkpoint\": {}, \"epoch\": {}, \"sections\": {}, \"full\": {}, \"centre\": {}, \"calibration\": {}}}",
            serde_json::to_string(&self.checkpoint.display().to_string())
                .expect("a string serialises"),
            self.epoch,
            serde_json::to_string(&self.sections).expect("a list serialises"),
            self.full.to_json(),
            centre,
            serde_json::to_string(&self.calibration).expect("a calibration serialises"),
        )
    }
}

/// The centre `size x size` of each `h x w` page of a stack.
fn centre_pages<T: Copy>(data: &[T], pages: usize, h: usize, w: usize, size: usize) -> Vec<T> {
    let (top, left) = ((h - size) / 2, (w - size) / 2);
    let mut out = Vec::with_capacity(pages * size * size);
    for p in 0..pages {
        for y in top..top + size {
            let row = p * h * w + y * w;
            out.extend_from_slice(&data[row + left..row + left + size]);
        }
    }
    out
}

/// Scores the checkpoint at `checkpoint` (weights file with its sidecar) on the given sections
/// of `images` / `labels`, predicting each full section; with `centre`, also on the centre
/// `centre x centre` of each section.
pub fn evaluate_checkpoint(
    checkpoint: impl AsRef<Path>,
    images: &ChannelStack,
    labels: &Stack<u8>,
    sections: &[usize],
    device: &Device,
    centre: Option<usize>,
) -> Result<Evaluation> {
    let checkpoint = checkpoint.as_ref();
    if sections.is_empty() {
        return Err(Error::Config("no section to evaluate".into()));
    }
    let (model, meta) = load_model(checkpoint, device)?;
    if model.config().n_classes != 2 {
        return Err(Error::Config(format!(
            "{}: a model of {} classes; the ISBI evaluation scores P(cell) of two-class models \
             (unet predict --argmax, then unet score --classes, scores K classes)",
            checkpoint.display(),
            model.config().n_classes
        )));
    }
    let normalisation = meta.required_normalisation(checkpoint)?;
    let validation = Validation::new(
        images,
        labels,
        LabelClasses::Binary,
        sections,
        &normalisation,
        None,
        device,
    )?;
    let (_, probs) = predict_validation(&model, &validation, Loss::CrossEntropy, 1)?;
    let (h, w, n) = (images.height(), images.width(), sections.len());
    let options = ScoreOptions::default();
    let full = score_stack(&probs, &validation.labels, n, h, w, &options)?;
    let centre = match centre {
        Some(size) if size > 0 && size < h.min(w) => {
            let p = centre_pages(&probs, n, h, w, size);
            let l = centre_pages(&validation.labels, n, h, w, size);
            Some((size, score_stack(&p, &l, n, size, size, &options)?))
        }
        _ => None,
    };
    Ok(Evaluation {
        checkpoint: checkpoint.to_path_buf(),
        epoch: meta.epoch,
        sections: sections.to_vec(),
        full,
        centre,
        calibration: Calibration::of(&meta),
    })
}

/// Scores a run's `best` checkpoint (its `last` when it has no `best`) on the run's validation
/// sections, with the centre 388 x 388 too; writes `scores.json` in the run directory.
pub fn evaluate_run(
    run_dir: impl AsRef<Path>,
    images: &ChannelStack,
    labels: &Stack<u8>,
    device: &Device,
) -> Result<Evaluation> {
    let run_dir = run_dir.as_ref();
    let config = TrainConfig::load(run_dir.join(files::CONFIG))?;
    let split = config.split.resolve(images.sections())?;
    let checkpoint = crate::best_or_last(run_dir);
    let evaluation = evaluate_checkpoint(
        &checkpoint,
        images,
        labels,
        &split.validation,
        device,
        Some(388),
    )?;
    write_json_atomically(&run_dir.join(files::SCORES), &evaluation.to_json())?;
    Ok(evaluation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_pages_crops_each_page() {
        let data: Vec<u32> = (0..32).collect();
        assert_eq!(
            centre_pages(&data, 2, 4, 4, 2),
            vec![5, 6, 9, 10, 21, 22, 25, 26]
        );
    }
}
