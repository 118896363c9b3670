//! `unet evaluate`: score a run's best checkpoint, or any checkpoint, on labelled sections.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use unet_train::{evaluate_checkpoint, evaluate_run};

use crate::calibrate::describe_calibration;
use crate::target::CheckpointTarget;

/// Flags of `unet evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// What to score.
    #[command(flatten)]
    pub target: CheckpointTarget,
    /// Write the scores JSON here too (a run also gets runs/NAME/scores.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `unet evaluate`.
pub fn run(args: &EvaluateArgs) -> Result<()> {
    let target = &args.target;
    let (data, dev) = target.open()?;
    let evaluation = match (&target.run, &target.checkpoint) {
        (Some(run), _) => evaluate_run(run, &data.train_images, &data.train_labels, &dev)
            .with_context(|| format!("evaluating run {}", run.display()))?,
        (None, Some(ckpt)) => {
            let sections = target
                .sections_or(unet_data::Split::reference(data.train_images.sections())?.validation);
            evaluate_checkpoint(
                ckpt,
                &data.train_images,
                &data.train_labels,
                &sections,
                &dev,
                Some(388),
            )
            .with_context(|| format!("evaluating {}", ckpt.display()))?
        }
        (None, None) => bail!("give --run DIR or --checkpoint FILE"),
    };
    let r = &evaluation.full;
    println!(
        "{} (epoch {}), sections {:?}, full {}x{}:",
        evaluation.checkpoint.display(),
        evaluation.epoch,
        evaluation.sections,
        r.height,
        r.width
    );
    println!(
        "  pixel accuracy {:.4}  mean IoU {:.4}  Dice {:.4}  V-Rand {:.4} (t {:.1})  V-Info {:.4} (t {:.1})",
        r.pixel_accuracy, r.mean_iou, r.dice, r.v_rand, r.v_rand_threshold, r.v_info, r.v_info_threshold
    );
    if let Some((size, c)) = &evaluation.centre {
        println!(
            "  centre {size}x{size}: pixel accuracy {:.4}  mean IoU {:.4}  V-Rand {:.4}  V-Info {:.4}",
            c.pixel_accuracy, c.mean_iou, c.v_rand, c.v_info
        );
    }
    match &evaluation.calibration {
        Some(c) => println!("  {}", describe_calibration(c)),
        None => println!("  not calibrated: decides at the trained net's P = 0.5"),
    }
    if let Some(path) = &args.json {
        unet_data::write_atomically(path, evaluation.to_json().as_bytes())?;
        println!("scores written to {}", path.display());
    }
    Ok(())
}
