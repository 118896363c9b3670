//! `unet info`: what a user wants to see first about the data.

use anyhow::Result;
use clap::Args;
use unet_data::Split;

use crate::data::DataArgs;

/// Flags of `unet info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The sections to summarise.
    #[command(flatten)]
    pub data: DataArgs,
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
    let data = args.data.load()?;
    let n = data.train_images.pages();
    let split = match (args.folds, args.fold) {
        (Some(k), Some(i)) => Split::k_fold(n, k, i)?,
        _ => Split::fraction(n, args.train_fraction)?,
    };
    print!("{}", data.summary(&split)?);
    Ok(())
}
