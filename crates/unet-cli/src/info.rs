//! `unet info`: what a user wants to see first about the data, or (`--run`) about training
//! runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use unet_data::Split;
use unet_train::{files, RunSummary};

use crate::data::DataArgs;

/// Flags of `unet info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The sections to summarise.
    #[command(flatten)]
    pub data: DataArgs,
    /// Fraction of sections (the first ones) that train; the rest validate.
    #[arg(
        long,
        default_value_t = 0.9,
        conflicts_with = "folds",
        allow_negative_numbers = true
    )]
    pub train_fraction: f64,
    /// Use k contiguous folds instead of a fraction.
    #[arg(long, requires = "fold")]
    pub folds: Option<usize>,
    /// Which fold validates (0-based), with --folds.
    #[arg(long, requires = "folds")]
    pub fold: Option<usize>,
    /// Summarise training runs instead: a run directory, or a directory of runs (each
    /// subdirectory holding a run); repeatable. Settings, data, epochs done, best scores, state
    /// (finished, interrupted, training now), files.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["data", "images", "labels", "folds"])]
    pub run: Vec<PathBuf>,
}

/// Load the data, split it, print the summary; or summarise the runs.
pub fn run(args: &InfoArgs) -> Result<()> {
    if !args.run.is_empty() {
        return summarise_runs(&args.run);
    }
    let data = args.data.load()?;
    let n = data.train_images.sections();
    let split = match (args.folds, args.fold) {
        (Some(k), Some(i)) => Split::k_fold(n, k, i)?,
        _ => Split::fraction(n, args.train_fraction)?,
    };
    print!("{}", data.summary(&split)?);
    Ok(())
}

/// The run directories `dir` stands for: itself when it holds a run, else its subdirectories
/// that do, by name.
fn runs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.join(files::CONFIG).is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    if !dir.is_dir() {
        bail!("{}: no such run directory", dir.display());
    }
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join(files::CONFIG).is_file())
        .collect();
    runs.sort();
    if runs.is_empty() {
        bail!(
            "{}: neither a run directory (no {}) nor a directory of runs",
            dir.display(),
            files::CONFIG
        );
    }
    Ok(runs)
}

fn summarise_runs(dirs: &[PathBuf]) -> Result<()> {
    let mut first = true;
    for dir in dirs {
        for run in runs_in(dir)? {
            let summary = RunSummary::read(&run)
                .with_context(|| format!("reading the run {}", run.display()))?;
            if !first {
                println!();
            }
            println!("{summary}");
            first = false;
        }
    }
    Ok(())
}
