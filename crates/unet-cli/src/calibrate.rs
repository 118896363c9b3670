//! `unet calibrate`: move a checkpoint's decision point to P = 0.5 with a logit offset fitted on
//! training sections.

use anyhow::{bail, Context, Result};
use clap::Args;
use unet_train::{calibrate_checkpoint, files, Calibration, TrainConfig};

use crate::target::CheckpointTarget;

/// Flags of `unet calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// What to calibrate (rewritten in place); fitted on training sections only, never on the
    /// sections you score on.
    #[command(flatten)]
    pub target: CheckpointTarget,
}

/// Runs `unet calibrate`.
pub fn run(args: &CalibrateArgs) -> Result<()> {
    let target = &args.target;
    let (data, dev) = target.open()?;
    let (checkpoint, sections) = match (&target.run, &target.checkpoint) {
        (Some(run), _) => {
            let cfg = TrainConfig::load(run.join(files::CONFIG))
                .with_context(|| format!("--run {}: reading its configuration", run.display()))?;
            let split = cfg.split.resolve(data.train_images.sections())?;
            (run.join(files::BEST), split.train)
        }
        (None, Some(ckpt)) => {
            let train = unet_data::Split::reference(data.train_images.sections())?.train;
            (ckpt.clone(), target.sections_or(train))
        }
        (None, None) => bail!("give --run DIR or --checkpoint FILE"),
    };
    let c = calibrate_checkpoint(
        &checkpoint,
        &data.train_images,
        &data.train_labels,
        &sections,
        &dev,
    )?;
    println!("{}: {}", checkpoint.display(), describe_calibration(&c));
    Ok(())
}

/// One line on a decision calibration.
pub fn describe_calibration(c: &Calibration) -> String {
    format!(
        "calibrated on {} training sections: logit offset {:+.2} (the uncalibrated net's P = {:.3} \
         is now 0.5); training sections: accuracy {:.4} -> {:.4}, mean IoU {:.4} -> {:.4}",
        c.sections.len(),
        c.logit_offset,
        c.equivalent_threshold,
        c.before.pixel_accuracy,
        c.after.pixel_accuracy,
        c.before.mean_iou,
        c.after.mean_iou
    )
}
