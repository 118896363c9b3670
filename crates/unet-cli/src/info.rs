//! `unet info`: what a user wants to see first about the data.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use unet_data::{locate_data_dir, IsbiData, Split};

/// Flags of `unet info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Directory holding train-volume.tif and train-labels.tif [default: $UNET_DATA, else data/isbi2012]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Fraction of sections (the first ones) that train; the rest validate.
    #[arg(long, default_value_t = 0.9, conflicts_with = "folds")]
    pub train_fraction: f64,
    /// Use k contiguous folds instead of a fraction.
    #[arg(long, requires = "fold")]
    pub folds: Option<usize>,
    /// Which fold validates (0-based), with --folds.
    #[arg(long, requires = "folds")]
    pub fold: Option<usize>,
}

/// Load the data, split it, print the summary.
pub fn run(args: &InfoArgs) -> Result<()> {
    let dir = locate_data_dir(args.data.as_deref())?;
    let data =
        IsbiData::load(&dir).with_context(|| format!("loading the data in {}", dir.display()))?;
    let n = data.train_images.pages();
    let split = match (args.folds, args.fold) {
        (Some(k), Some(i)) => Split::k_fold(n, k, i)?,
        _ => Split::fraction(n, args.train_fraction)?,
    };
    print!("{}", data.summary(&split)?);
    Ok(())
}
