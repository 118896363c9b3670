//! `unet robustness`: a model's scores on labelled sections changed the way other microscopes
//! change them (contrast, gamma, brightness, noise, blur, pixel size, 16-bit storage).

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use unet_model::Normalisation;
use unet_train::robustness::{robustness, RobustnessOptions};

use crate::builtin::open_model;
use crate::data::DataArgs;

/// Flags of `unet robustness`.
#[derive(Debug, Args)]
pub struct RobustnessArgs {
    /// The checkpoint [default: the built-in default model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The labelled sections.
    #[command(flatten)]
    pub data: DataArgs,
    /// Sections to score, e.g. 27,28,29 [default: the reference split's validation sections].
    #[arg(long, value_delimiter = ',')]
    pub sections: Vec<usize>,
    /// Seed of the noise shifts.
    #[arg(long, default_value_t = RobustnessOptions::default().seed)]
    pub seed: u64,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `unet robustness`.
pub fn run(args: &RobustnessArgs) -> Result<()> {
    let data = args.data.load_binary("unet robustness")?;
    let (model, meta, name) = open_model(args.model.as_deref(), &Device::Cpu)?;
    let normalisation = meta.normalisation.unwrap_or(Normalisation::PerImage);
    let images = data.grey_u8()?;
    let sections = match args.sections.is_empty() {
        true => unet_data::Split::reference(data.train_images.sections())?.validation,
        false => args.sections.clone(),
    };
    let options = RobustnessOptions {
        seed: args.seed,
        ..RobustnessOptions::default()
    };
    println!("{name} on sections {sections:?} of {}", data.source);
    println!(
        "{:<34} {:>9} {:>9} {:>7} {:>7}",
        "sections", "pixel acc", "mean IoU", "V-Rand", "V-Info"
    );
    let rows = robustness(
        &model,
        &normalisation,
        images,
        &data.train_labels,
        &sections,
        &options,
    )
    .context("scoring the shifted sections")?;
    let mut json = Vec::new();
    for row in &rows {
        let r = &row.report;
        println!(
            "{:<34} {:>9.4} {:>9.4} {:>7.4} {:>7.4}",
            row.shift.to_string(),
            r.pixel_accuracy,
            r.mean_iou,
            r.v_rand,
            r.v_info
        );
        json.push(serde_json::json!({
            "shift": row.shift.kind(),
            "amount": row.shift.amount(),
            "pixel_accuracy": r.pixel_accuracy,
            "mean_iou": r.mean_iou,
            "v_rand": r.v_rand,
            "v_info": r.v_info,
        }));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "model": name,
            "sections": sections,
            "seed": args.seed,
            "rows": json,
        }))?;
        unet_data::write_atomically(path, text.as_bytes())?;
        println!("written to {}", path.display());
    }
    Ok(())
}
