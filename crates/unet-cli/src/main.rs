//! `unet`: U-Net segmentation of biomedical images from the command line.
//!
//! A thin front over the unet-rs crates: each subcommand parses its flags, calls the library and
//! reports with context. Run `unet --help` for the list.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod augment;
mod bench;
mod info;
mod model;
mod predict;
mod score;
mod train;
mod weights;

/// U-Net biomedical image segmentation (Ronneberger et al. 2015), in Rust.
#[derive(Debug, Parser)]
#[command(name = "unet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Summarise a data set: pages, size, grey statistics, cell fraction per split.
    Info(info::InfoArgs),
    /// Compute the paper's loss weight map w(x) for a label stack.
    Weights(weights::WeightsArgs),
    /// Print a U-Net's layer table, parameter count and input -> output sizes.
    Model(model::ModelArgs),
    /// Write augmented versions of one section (image, labels, weights) as TIFF stacks.
    Augment(augment::AugmentArgs),
    /// Score a P(cell) stack against labels: pixel scores and ISBI 2012 V-Rand / V-Info.
    Score(score::ScoreArgs),
    /// Predict P(cell) for a TIFF stack, PNG or directory with a checkpoint (overlap-tile).
    Predict(predict::PredictArgs),
    /// Time a training step or a forward pass of a preset on random data (one JSON line).
    Bench(bench::BenchArgs),
    /// Train a U-Net on the ISBI 2012 sections (recipes default, reference, paper; --resume).
    Train(Box<train::TrainArgs>),
    /// Score a run's best checkpoint (or any checkpoint) on the validation sections.
    Evaluate(train::EvaluateArgs),
    /// Move a checkpoint's decision point to P = 0.5 with a logit offset fitted on training sections.
    Calibrate(train::CalibrateArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Weights(args) => weights::run(&args),
        Command::Score(args) => score::run(&args),
        Command::Augment(args) => augment::run(&args),
        Command::Model(args) => model::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Evaluate(args) => train::run_evaluate(&args),
        Command::Calibrate(args) => train::run_calibrate(&args),
    }
}
