//! `unet model`: the layer table, parameter count and input -> output sizes of a U-Net.

use anyhow::{Context, Result};
use clap::Args;
use unet_model::{layer_table, nearest_valid_input_sizes, Preset};

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
}

/// Print the table.
pub fn run(args: &ModelArgs) -> Result<()> {
    let preset: Preset = args.preset.parse().with_context(|| {
        format!(
            "--preset {} (one of {})",
            args.preset,
            Preset::NAMES.join(", ")
        )
    })?;
    let mut cfg = preset.config();
    cfg.n_classes = args.classes;
    let input = args.input.unwrap_or(match cfg.padding {
        unet_model::Padding::Valid => 572,
        unet_model::Padding::Same => 512,
    });
    println!("preset {}: {}", preset.name(), serde_json::to_string(&cfg)?);
    print!("{}", layer_table(&cfg, input)?);
    let near = nearest_valid_input_sizes(&cfg, input);
    let fmt = |s: Option<(usize, usize)>| s.map_or("-".into(), |(i, o)| format!("{i} -> {o}"));
    println!(
        "valid input -> output sizes near {input}: {} and {}",
        fmt(near.below),
        fmt(near.above)
    );
    Ok(())
}
