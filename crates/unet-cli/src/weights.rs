//! `unet weights`: the paper's loss weight map w(x) for every page of a label stack.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use unet_data::{read_labels, write_stack, Stack};
use unet_weights::{BorderTerm, ClassWeight, Connectivity, WeightMapParams};

/// Which neighbours join cell pixels into one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnectivityArg {
    /// Edge neighbours only (as the ISBI scoring).
    #[value(name = "4")]
    Four,
    /// Edge and corner neighbours.
    #[value(name = "8")]
    Eight,
}

/// Which pixels receive the border term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BorderTermArg {
    /// Membrane (background) pixels only: the paper's intent.
    Background,
    /// Every pixel.
    All,
}

/// The class-balancing term w_c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassWeightArg {
    /// H*W / (count of the pixel's class) per section (the reference's).
    Balanced,
    /// Balanced, scaled so that its mean over the section is 1.
    Mean1,
    /// w_c = 1.
    None,
}

/// Flags of `unet weights`.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    /// Label stack (255 or 1 = cell, 0 = membrane).
    #[arg(long)]
    pub labels: PathBuf,
    /// Output: a 32-bit float multi-page TIFF, one page per label page.
    #[arg(long)]
    pub out: PathBuf,
    /// Height of the border term.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub w0: f32,
    /// Width of the border term in pixels.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    pub sigma: f32,
    /// Cell connectivity.
    #[arg(long, value_enum, default_value = "4")]
    pub connectivity: ConnectivityArg,
    /// Which pixels get the border term.
    #[arg(long, value_enum, default_value = "background")]
    pub border_term: BorderTermArg,
    /// The class-balancing term.
    #[arg(long, value_enum, default_value = "balanced")]
    pub class_weight: ClassWeightArg,
}

impl WeightsArgs {
    /// The library parameters these flags ask for.
    pub fn params(&self) -> WeightMapParams {
        WeightMapParams {
            w0: self.w0,
            sigma: self.sigma,
            connectivity: match self.connectivity {
                ConnectivityArg::Four => Connectivity::Four,
                ConnectivityArg::Eight => Connectivity::Eight,
            },
            border_term: match self.border_term {
                BorderTermArg::Background => BorderTerm::Background,
                BorderTermArg::All => BorderTerm::AllPixels,
            },
            class_weight: match self.class_weight {
                ClassWeightArg::Balanced => ClassWeight::Balanced,
                ClassWeightArg::Mean1 => ClassWeight::Mean1,
                ClassWeightArg::None => ClassWeight::None,
            },
        }
    }
}

/// Compute and write the weight maps.
pub fn run(args: &WeightsArgs) -> Result<()> {
    let params = args
        .params()
        .validate()
        .context("bad weight-map parameters")?;
    let labels = read_labels(&args.labels)?;
    let start = std::time::Instant::now();
    let weights = params
        .weight_maps(
            labels.as_slice(),
            labels.pages(),
            labels.height(),
            labels.width(),
        )
        .with_context(|| format!("weight maps of {}", args.labels.display()))?;
    let elapsed = start.elapsed();
    let stack = Stack::new(labels.pages(), labels.height(), labels.width(), weights)?;
    write_stack(&args.out, &stack)?;
    let max = stack.as_slice().iter().copied().fold(0.0f32, f32::max);
    eprintln!(
        "{} pages of {}x{} in {:.1} ms ({:.2} ms a page), max weight {max:.2}: {}",
        labels.pages(),
        labels.height(),
        labels.width(),
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3 / labels.pages() as f64,
        args.out.display()
    );
    Ok(())
}
