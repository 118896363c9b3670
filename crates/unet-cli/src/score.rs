//! `unet score`: pixel and ISBI 2012 scores of a probability stack against labels; with
//! `--classes K`, per-class scores of a K-class prediction against class-index labels.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use unet_data::{
    check_pair, read_channels, read_class_labels, read_labels, read_stack, AnyStack, ChannelStack,
    LabelOptions, Stack,
};
use unet_metrics::{
    argmax_classes, instance_contingency, score_stack, ClassScores, ConfusionMatrix, ScoreOptions,
    ScoreReport,
};

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
    /// Score K classes: `--labels` holds class indices 0..K-1 (8- or 16-bit; {0, 255} reads as
    /// 0, 1 when K = 2), and `--pred` is a class-index image (one 8- or 16-bit channel), K
    /// channels of per-class probabilities (the class of a pixel is the most probable one), or,
    /// for K = 2, one channel of P(class 1) cut at `--threshold`. Prints the K x K confusion
    /// matrix and per-class accuracy, IoU and Dice.
    #[arg(long, value_name = "K")]
    pub classes: Option<usize>,
    /// A label value that is no class: its pixels are left out of the scores (with --classes).
    #[arg(long, value_name = "V", requires = "classes")]
    pub ignore_label: Option<u16>,
    /// Also V-Rand and V-Info (unthinned) of the instances of this class: its 4-connected
    /// components in labels and prediction (with --classes).
    #[arg(long, value_name = "C", requires = "classes")]
    pub instance_class: Option<usize>,
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
    if let Some(k) = args.classes {
        return run_classes(args, k);
    }
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

/// Per-class scores of a K-class prediction, pooled over the sections.
#[derive(Debug, Clone)]
pub struct ClassReport {
    /// Sections scored.
    pub sections: usize,
    /// The confusion matrix over every counted pixel.
    pub confusion: ConfusionMatrix,
    /// The scores it gives.
    pub scores: ClassScores,
    /// The label value left out, if any.
    pub ignore: Option<u16>,
    /// The instance class and its mean V-Rand and V-Info over the sections that hold one of its
    /// instances (their count last).
    pub instances: Option<(usize, f64, f64, usize)>,
}

impl ClassReport {
    /// The report as JSON (`confusion[truth][predicted]` in pixels).
    pub fn to_json(&self) -> String {
        let k = self.confusion.n_classes();
        let confusion: Vec<Vec<u64>> = (0..k)
            .map(|t| (0..k).map(|p| self.confusion.count(t, p)).collect())
            .collect();
        let s = &self.scores;
        let mut v = json!({
            "classes": k,
            "sections": self.sections,
            "ignore_label": self.ignore,
            "pixel_accuracy": s.pixel_accuracy,
            "accuracy_per_class": s.accuracy_per_class,
            "iou_per_class": s.iou_per_class,
            "dice_per_class": s.dice_per_class,
            "mean_foreground_accuracy": s.mean_foreground_accuracy,
            "mean_foreground_iou": s.mean_foreground_iou,
            "mean_foreground_dice": s.mean_foreground_dice,
            "confusion": confusion,
        });
        if let Some((class, v_rand, v_info, sections)) = self.instances {
            v["instance_class"] = json!(class);
            v["v_rand"] = json!(v_rand);
            v["v_info"] = json!(v_info);
            v["instance_sections"] = json!(sections);
        }
        serde_json::to_string_pretty(&v).expect("plain JSON values") + "\n"
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let s = &self.scores;
        let k = self.confusion.n_classes();
        let mut out = format!(
            "{} classes, {} sections{}\n  {:<8} {:>10} {:>8} {:>8} {:>12}\n",
            k,
            self.sections,
            self.ignore
                .map_or(String::new(), |v| format!(", label {v} ignored")),
            "class",
            "accuracy",
            "IoU",
            "Dice",
            "truth pixels"
        );
        for c in 0..k {
            let truth: u64 = (0..k).map(|p| self.confusion.count(c, p)).sum();
            out.push_str(&format!(
                "  {:<8} {:>10.4} {:>8.4} {:>8.4} {:>12}\n",
                c, s.accuracy_per_class[c], s.iou_per_class[c], s.dice_per_class[c], truth
            ));
        }
        out.push_str(&format!(
            "  {:<8} {:>10.4} {:>8.4} {:>8.4}   (mean over classes 1..{})\n",
            "fg mean",
            s.mean_foreground_accuracy,
            s.mean_foreground_iou,
            s.mean_foreground_dice,
            k - 1
        ));
        out.push_str(&format!("  pixel accuracy {:.4}\n", s.pixel_accuracy));
        if let Some((class, v_rand, v_info, sections)) = self.instances {
            out.push_str(&format!(
                "  instances of class {class} ({sections} sections): V-Rand {v_rand:.4}, \
                 V-Info {v_info:.4} (unthinned)\n"
            ));
        }
        out
    }
}

/// `unet score --classes K`.
fn run_classes(args: &ScoreArgs, k: usize) -> Result<()> {
    let options = LabelOptions {
        classes: Some(k),
        ignore: args.ignore_label,
    };
    let labels = read_class_labels(&args.labels, &options)?;
    let pred = read_channels(&args.pred)?;
    check_pair(&args.pred, &pred, &args.labels, &labels)?;
    let predicted = predicted_classes(&args.pred, &pred, k, args.threshold)?;
    let truth = labels.labels();
    let page = truth.page_len();
    let (height, width) = (truth.height(), truth.width());
    let mut confusion = ConfusionMatrix::new(k)?;
    let mut instances = Vec::new();
    for s in 0..truth.pages() {
        let (p, t) = (&predicted[s * page..(s + 1) * page], truth.page(s));
        let section = || format!("section {s} of {}", args.pred.display());
        confusion
            .merge(
                &ConfusionMatrix::from_class_maps(p, t, k, args.ignore_label)
                    .with_context(section)?,
            )
            .with_context(section)?;
        if let Some(class) = args.instance_class {
            match instance_contingency(p, t, height, width, k, class, args.ignore_label) {
                Ok(c) => instances.push((c.v_rand(), c.v_info())),
                Err(unet_metrics::Error::NoTruthInstances { .. }) => {}
                Err(e) => return Err(e).with_context(section),
            }
        }
    }
    let instances = match args.instance_class {
        None => None,
        Some(class) if instances.is_empty() => bail!(
            "{}: no section holds a pixel of the instance class {class}",
            args.labels.display()
        ),
        Some(class) => {
            let n = instances.len() as f64;
            let v_rand = instances.iter().map(|v| v.0).sum::<f64>() / n;
            let v_info = instances.iter().map(|v| v.1).sum::<f64>() / n;
            Some((class, v_rand, v_info, instances.len()))
        }
    };
    let report = ClassReport {
        sections: truth.pages(),
        scores: confusion.class_scores(),
        confusion,
        ignore: args.ignore_label,
        instances,
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        unet_data::write_atomically(path, report.to_json().as_bytes())?;
        eprintln!("scores written to {}", path.display());
    }
    Ok(())
}

/// The predicted class of every pixel, section after section: a class-index image as it is,
/// per-class probabilities by their most probable class, P(class 1) cut at `threshold`.
fn predicted_classes(
    path: &Path,
    pred: &ChannelStack,
    k: usize,
    threshold: f64,
) -> Result<Vec<u16>> {
    let channels = pred.channels();
    match pred.planes() {
        AnyStack::U8(s) if channels == 1 => {
            Ok(s.as_slice().iter().map(|&v| u16::from(v)).collect())
        }
        AnyStack::U16(s) if channels == 1 => Ok(s.as_slice().to_vec()),
        AnyStack::F32(s) if channels == 1 && k == 2 => {
            if let Some(i) = s.as_slice().iter().position(|v| v.is_nan()) {
                bail!("{}: NaN at value {i}", path.display());
            }
            Ok(s.as_slice()
                .iter()
                .map(|&p| u16::from(f64::from(p) > threshold))
                .collect())
        }
        _ if channels == k => {
            let probs = pred.to_unit_f32();
            let section = k * pred.height() * pred.width();
            let mut classes = Vec::with_capacity(probs.as_slice().len() / k);
            for (s, planes) in probs.as_slice().chunks_exact(section).enumerate() {
                classes.extend(argmax_classes(planes, k).with_context(|| {
                    format!("{} section {s}: per-class probabilities", path.display())
                })?);
            }
            Ok(classes)
        }
        _ => bail!(
            "{}: {channels} channel(s) of {}; with --classes {k} the prediction is a class-index \
             image (one 8- or 16-bit channel), {k} channels of per-class probabilities{}",
            path.display(),
            pred.pixel_type(),
            if k == 2 {
                ", or one channel of P(class 1)"
            } else {
                ""
            }
        ),
    }
}
