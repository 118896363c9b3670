//! `unet score`: pixel and ISBI 2012 scores of a probability stack against labels.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use unet_data::{check_pair, read_labels, read_stack, AnyStack, Stack};
use unet_metrics::{score_stack, ScoreOptions, ScoreReport};

/// Flags of `unet score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// P(cell) per pixel: a TIFF stack of 32-bit float in [0, 1], or 8-bit 0..255 (scaled by 1/255).
    #[arg(long)]
    pub pred: PathBuf,
    /// The label stack (255 or 1 = cell, 0 = membrane).
    #[arg(long)]
    pub labels: PathBuf,
    /// Also write the scores as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Threshold of the pixel scores (cell where P > t).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub threshold: f64,
}

/// Read P(cell) from a TIFF stack, as floats in [0, 1], checking range and NaN with the file name.
pub fn read_probabilities(path: &Path) -> Result<Stack<f32>> {
    let stack = match read_stack(path)? {
        AnyStack::F32(s) => s,
        AnyStack::U8(s) => s.map(|v| f32::from(v) / 255.0),
        AnyStack::U16(_) => bail!(
            "{}: 16-bit pages; P(cell) must be 32-bit float in [0, 1] or 8-bit 0..255",
            path.display()
        ),
    };
    if stack.samples() != 1 {
        bail!(
            "{}: {} samples per pixel, expected 1",
            path.display(),
            stack.samples()
        );
    }
    let per_page = stack.page_len();
    if let Some((i, v)) = stack
        .as_slice()
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        let what = if v.is_nan() {
            "NaN".to_string()
        } else {
            format!("value {v}")
        };
        bail!(
            "{} page {}: {what} at row {}, column {} is not a probability in [0, 1]",
            path.display(),
            i / per_page,
            (i % per_page) / stack.width(),
            i % stack.width()
        );
    }
    Ok(stack)
}

/// Score and print.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let prob = read_probabilities(&args.pred)?;
    let labels = read_labels(&args.labels)?;
    check_pair(&args.pred, &prob, &args.labels, &labels)?;
    let options = ScoreOptions {
        pixel_threshold: args.threshold,
        ..ScoreOptions::default()
    };
    let report = score_stack(
        prob.as_slice(),
        labels.as_slice(),
        prob.pages(),
        prob.height(),
        prob.width(),
        &options,
    )
    .with_context(|| {
        format!(
            "scoring {} against {}",
            args.pred.display(),
            args.labels.display()
        )
    })?;
    print!("{}", table(&report));
    if let Some(path) = &args.json {
        unet_data::write_atomically(path, report.to_json().as_bytes())?;
        eprintln!("scores written to {}", path.display());
    }
    Ok(())
}

/// The human-readable table of a report.
pub fn table(r: &ScoreReport) -> String {
    let mut s = format!(
        "{} sections of {}x{}, pixel threshold {}\n",
        r.sections, r.height, r.width, r.pixel_threshold
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let rows = [
        ("pixel accuracy", format!("{:.4}", r.pixel_accuracy)),
        ("IoU membrane", format!("{:.4}", r.iou_per_class[0])),
        ("IoU cell", format!("{:.4}", r.iou_per_class[1])),
        ("mean IoU", format!("{:.4}", r.mean_iou)),
        ("Dice (cell)", format!("{:.4}", r.dice)),
        (
            "ISBI pixel error",
            format!(
                "{:.4}  (t = {:.1})",
                r.isbi_pixel_error, r.isbi_pixel_error_threshold
            ),
        ),
        (
            "V-Rand (thinned)",
            format!("{:.4}  (t = {:.1})", r.v_rand, r.v_rand_threshold),
        ),
        (
            "V-Info (thinned)",
            format!("{:.4}  (t = {:.1})", r.v_info, r.v_info_threshold),
        ),
        ("V-Rand unthinned", opt(r.v_rand_unthinned)),
        ("V-Info unthinned", opt(r.v_info_unthinned)),
    ];
    for (name, value) in rows {
        s.push_str(&format!("  {name:<18} {value}\n"));
    }
    s
}
