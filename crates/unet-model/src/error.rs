//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from candle (tensor maths, shapes, safetensors parsing).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// `in_channels` is 0.
    #[error("invalid U-Net configuration: in_channels must be at least 1")]
    NoInputChannels,
    /// Fewer than two classes.
    #[error(
        "invalid U-Net configuration: n_classes must be at least 2 (softmax over classes), got {0}"
    )]
    TooFewClasses(usize),
    /// Depth outside 1..=8.
    #[error("invalid U-Net configuration: depth must be between 1 and {max}, got {depth}")]
    Depth {
        /// The depth given.
        depth: usize,
        /// The largest depth allowed.
        max: usize,
    },
    /// `base_width` is 0 or the widest level exceeds the limit.
    #[error("invalid U-Net configuration: base_width {base_width} at depth {depth} gives {widest} channels at the bottom; allowed: 1..={max}")]
    Width {
        /// The base width given.
        base_width: usize,
        /// The depth given.
        depth: usize,
        /// The channels of the deepest level.
        widest: usize,
        /// The limit.
        max: usize,
    },
    /// Drop-out probability outside [0, 1).
    #[error("invalid U-Net configuration: dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    /// A preset name that does not exist.
    #[error("invalid U-Net configuration: unknown preset {0:?}; known: paper, reference, small, resnet18, resnet34")]
    UnknownPreset(String),
    /// A setting a ResNet encoder does not allow.
    #[error("invalid U-Net configuration: a {encoder} encoder needs {needs}")]
    Encoder {
        /// The encoder.
        encoder: &'static str,
        /// What it needs.
        needs: String,
    },

    /// An input size the network cannot take (a max-pool would see an odd size, or a map would
    /// shrink to nothing). The message names the nearest sizes that work. (Boxed: it carries
    /// the nearest sizes, and keeps every `Result` of this crate small.)
    #[error("{0}")]
    InputSize(Box<crate::size::SizeError>),

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

    /// Statistics that cannot normalise an input (a zero or non-finite standard deviation).
    #[error("normalisation: {0}")]
    Normalisation(String),

    /// The image has no pixels.
    #[error("tiling: the image is empty ({height}x{width}); it needs at least one pixel")]
    EmptyImage {
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// The pixel buffer does not hold `channels` planes of `height` x `width`.
    #[error(
        "tiling: the image buffer holds {got} values; {channels} channel plane(s) of {height}x{width} need {expected}"
    )]
    ImageLength {
        /// Values given.
        got: usize,
        /// Values needed.
        expected: usize,
        /// The model's input channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// A NaN or infinite pixel value.
    #[error("tiling: the image has a non-finite value ({value}) at index {index}")]
    NonFinite {
        /// The index into the image buffer.
        index: usize,
        /// The value, as text.
        value: String,
    },
    /// A window of an image, or the crop given for it, does not fit (see
    /// [`crate::tiling::overlap_tile_predict_window`]).
    #[error("tiling: {0}")]
    Window(String),
    /// `output_tile` or `batch_size` is 0.
    #[error("tiling: {what} must be at least 1")]
    Zero {
        /// The setting at fault.
        what: &'static str,
    },

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

impl From<crate::size::SizeError> for Error {
    fn from(e: crate::size::SizeError) -> Self {
        Error::InputSize(Box::new(e))
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
