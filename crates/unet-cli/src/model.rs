//! `unet model`: the layer table, parameter count and input -> output sizes of a U-Net, or
//! (`--default`, `--checkpoint`) which trained model `unet predict` would use.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use unet_model::{layer_table, nearest_valid_input_sizes, CheckpointMeta, Preset, UNetConfig};
use unet_train::Calibration;

use crate::builtin::open_model;

/// Flags of `unet model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The preset: paper (valid, 64..1024, dropout), reference (valid, 64..1024, BN), small (same,
    /// 16..256, BN), resnet18 / resnet34 (torchvision encoder, decoder 256..16).
    #[arg(long, default_value = "paper")]
    pub preset: String,
    /// Input tile size in pixels [default: 572 for valid padding, 512 for same].
    #[arg(long)]
    pub input: Option<usize>,
    /// Number of classes (2 for cell / membrane).
    #[arg(long, default_value_t = 2)]
    pub classes: usize,
    /// Describe the model `unet predict` uses without `--model` (the built-in default model)
    /// instead of a preset.
    #[arg(long, conflicts_with_all = ["preset", "checkpoint", "classes"])]
    pub default: bool,
    /// Describe this trained checkpoint (`*.safetensors` with its sidecar) instead of a preset.
    #[arg(long, conflicts_with_all = ["preset", "classes"])]
    pub checkpoint: Option<PathBuf>,
}

/// Print the table.
pub fn run(args: &ModelArgs) -> Result<()> {
    if args.default || args.checkpoint.is_some() {
        let (model, meta, name) = open_model(args.checkpoint.as_deref(), &Device::Cpu)?;
        println!("{}", describe_trained(&name, &meta));
        return print_sizes(model.config(), args.input);
    }
    let preset: Preset = args.preset.parse().with_context(|| {
        format!(
            "--preset {} (one of {})",
            args.preset,
            Preset::NAMES.join(", ")
        )
    })?;
    let mut cfg = preset.config();
    cfg.n_classes = args.classes;
    println!("preset {}: {}", preset.name(), serde_json::to_string(&cfg)?);
    print_sizes(&cfg, args.input)
}

/// Where a trained model comes from and how it was trained, a few lines.
fn describe_trained(name: &str, meta: &CheckpointMeta) -> String {
    let mut lines = vec![format!("{name}: trained {} epochs", meta.epoch)];
    lines.push(format!(
        "  net: {}",
        serde_json::to_string(&meta.config).expect("a config serialises")
    ));
    lines.push(match &meta.normalisation {
        Some(n) => format!(
            "  input normalisation: {}",
            serde_json::to_string(n).expect("a normalisation serialises")
        ),
        None => "  input normalisation: none recorded (each page by its own mean and std)".into(),
    });
    if let Some(recipe) = meta.metrics["train_config"]["recipe"].as_str() {
        lines.push(format!("  recipe: {recipe}"));
    }
    if let Some(v) = meta.metrics["record"].get("validation") {
        if let (Some(acc), Some(iou)) = (v["pixel_accuracy"].as_f64(), v["mean_iou"].as_f64()) {
            lines.push(format!(
                "  validation at P = 0.5 when saved: pixel accuracy {acc:.4}, mean IoU {iou:.4}"
            ));
        }
    }
    lines.push(match Calibration::of(meta) {
        Some(c) => format!(
            "  calibrated: logit offset {:+.3} fitted on {} training sections",
            c.logit_offset,
            c.sections.len()
        ),
        None => "  not calibrated".into(),
    });
    lines.join("\n")
}

/// The layer table and the valid sizes near `input` (or the padding's usual size).
fn print_sizes(cfg: &UNetConfig, input: Option<usize>) -> Result<()> {
    let input = input.unwrap_or(match cfg.padding {
        unet_model::Padding::Valid => 572,
        unet_model::Padding::Same => 512,
    });
    print!("{}", layer_table(cfg, input)?);
    let near = nearest_valid_input_sizes(cfg, input);
    let fmt = |s: Option<(usize, usize)>| s.map_or("-".into(), |(i, o)| format!("{i} -> {o}"));
    println!(
        "valid input -> output sizes near {input}: {} and {}",
        fmt(near.below),
        fmt(near.above)
    );
    Ok(())
}
