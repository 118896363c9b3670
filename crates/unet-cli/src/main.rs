//! `unet`: U-Net segmentation of biomedical images from the command line.
//!
//! A thin front over the unet-rs crates: each subcommand parses its flags, calls the library and
//! reports with context. Run `unet --help` for the list.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod augment;
mod bench;
mod builtin;
mod calibrate;
mod daisy;
mod data;
mod device;
mod evaluate;
mod export;
mod info;
mod model;
mod predict;
mod robustness;
mod score;
mod target;
mod train;
mod volume;
mod weights;

/// U-Net biomedical image segmentation (Ronneberger et al. 2015), in Rust.
#[derive(Debug, Parser)]
#[command(name = "unet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The most pixel values one image file may declare (all pages and samples); a larger or
    /// damaged file is refused before it is read. [default: $UNET_MAX_PIXELS, else 2^31]
    #[arg(long, global = true, value_name = "N")]
    max_pixels: Option<u64>,
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
    /// Score a model on labelled sections changed as other microscopes change them.
    Robustness(robustness::RobustnessArgs),
    /// Write a model as a BioImage Model Zoo package (ONNX inside) or a bare ONNX file.
    Export(export::ExportArgs),
    /// Time a training step or a forward pass of a preset on random data (one JSON line).
    Bench(bench::BenchArgs),
    /// Train a U-Net on the ISBI 2012 sections or your own (recipes default, reference, paper; --resume).
    Train(Box<train::TrainArgs>),
    /// Score a run's best checkpoint (or any checkpoint) on the validation sections.
    Evaluate(evaluate::EvaluateArgs),
    /// Move a checkpoint's decision point to P = 0.5 with a logit offset fitted on training sections.
    Calibrate(calibrate::CalibrateArgs),
}

/// Training allocates and frees tens of megabytes of activations and gradients every step;
/// glibc's allocator hands such blocks back to the kernel and gets them again as fresh zeroed
/// pages. mimalloc, told never to purge ([`keep_freed_memory`]), keeps and reuses them, which
/// makes a step measurably faster (docs/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3): the milliseconds before
/// freed memory goes back to the OS; -1 never. The Rust bindings do not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep freed memory for reuse instead of returning it to the OS: the peak
/// stays mapped (a training run needs it again at the next step anyway).
fn keep_freed_memory() {
    // SAFETY: setting an option is allowed at any time; the index is checked by a test.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// A write past the process's file-size limit (`ulimit -f`) raises SIGXFSZ, which ends the
/// process by default; ignored, the write fails with "File too large" and the command reports
/// which file, leaving the previous checkpoints as they were.
fn write_errors_instead_of_dying_at_the_file_size_limit() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

fn main() -> Result<()> {
    keep_freed_memory();
    write_errors_instead_of_dying_at_the_file_size_limit();
    let cli = Cli::parse();
    if let Some(n) = cli.max_pixels {
        unet_data::set_max_pixels(n);
    }
    match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Weights(args) => weights::run(&args),
        Command::Score(args) => score::run(&args),
        Command::Augment(args) => augment::run(&args),
        Command::Model(args) => model::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Robustness(args) => robustness::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::Calibrate(args) => calibrate::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3's default purge delay is 1000 ms (v2's 10 ms); after the call it is -1.
        // SAFETY: reading and setting options is allowed at any time.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        keep_freed_memory();
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!([1000, 10, -1].contains(&before), "{before}");
        assert_eq!(after, -1);
    }
}
