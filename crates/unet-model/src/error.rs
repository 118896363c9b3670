//! The crate's error type.

use std::path::PathBuf;

use crate::config::ConfigError;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from candle (tensor maths, shapes, safetensors parsing).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// The network configuration is invalid.
    #[error("invalid U-Net configuration: {0}")]
    Config(#[from] ConfigError),

    /// An input size the network cannot take (a max-pool would see an odd size, or a map would
    /// shrink to nothing). The message names the nearest sizes that work.
    #[error("{0}")]
    InputSize(#[from] crate::size::SizeError),

    /// The input tensor has the wrong rank, channel count or dtype.
    #[error("bad input tensor: expected {expected}, got shape {got:?}")]
    InputShape {
        /// What was expected, in words.
        expected: String,
        /// The shape that was given.
        got: Vec<usize>,
    },

    /// Tensors given to [`crate::UNet::load_state`] that do not fit the model.
    #[error("state does not fit the model: {}", problems.join("; "))]
    State {
        /// Missing or unexpected names and shape mismatches, one per entry.
        problems: Vec<String>,
    },

    /// Loss inputs that do not fit together (shapes, class ids out of range, negative weights).
    #[error("bad loss input: {0}")]
    LossInput(String),

    /// A bad optimizer or schedule setting, or optimizer state that does not fit the parameters.
    #[error("optimizer: {0}")]
    Optimizer(String),

    /// A compute precision that is unknown or that candle cannot run on the chosen device.
    #[error("precision: {0}")]
    Precision(String),

    /// Bad input or settings for overlap-tile prediction.
    #[error("tiling: {0}")]
    Tiling(#[from] crate::tiling::TilingError),

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// A checkpoint file is missing, truncated, corrupted or does not fit the model.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },

    /// The checkpoint was written for another network configuration.
    #[error(
        "checkpoint {} was written for another U-Net configuration; differences (checkpoint vs expected): {}",
        path.display(),
        differences.join("; ")
    )]
    ConfigMismatch {
        /// The checkpoint's sidecar file.
        path: PathBuf,
        /// One line per differing field: `field: checkpoint value vs expected value`.
        differences: Vec<String>,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
