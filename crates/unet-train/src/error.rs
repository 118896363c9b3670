//! The crate's error type.

use std::path::PathBuf;

/// Everything that can stop a training run, an evaluation or a calibration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model, loss, optimizer or a checkpoint failed (boxed: the model error is large).
    #[error(transparent)]
    Model(Box<unet_model::Error>),
    /// Tensor maths failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading the data failed (boxed: the data error is large).
    #[error(transparent)]
    Data(Box<unet_data::Error>),
    /// Scoring failed.
    #[error("scores: {0}")]
    Metrics(#[from] unet_metrics::Error),
    /// Augmenting a training sample failed.
    #[error("augmentation: {0}")]
    Augment(#[from] unet_augment::Error),
    /// Computing a weight map failed, or its settings are impossible.
    #[error("weight map: {0}")]
    Weights(#[from] unet_weights::Error),
    /// A setting is impossible.
    #[error("bad training setting: {0}")]
    Config(String),
    /// The data loader was set up with impossible settings, or its thread failed.
    #[error("data loader: {0}")]
    Loader(String),
    /// A file of the run could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file of the run is not what it should be.
    #[error("{}: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file is not a well-formed TensorBoard event file.
    #[error("{}: not a TensorBoard event file: {reason} (record at byte {offset})", path.display())]
    EventFile {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint cannot be calibrated.
    #[error("cannot calibrate {}: {reason}", checkpoint.display())]
    Calibration {
        /// The checkpoint's weights file.
        checkpoint: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The run cannot be resumed (no `last` checkpoint, another configuration, ...).
    #[error("cannot resume {}: {reason}", run_dir.display())]
    Resume {
        /// The run directory.
        run_dir: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The sections a run recorded are gone or changed.
    #[error("the run {}: {reason}", run_dir.display())]
    RecordedData {
        /// The run directory.
        run_dir: PathBuf,
        /// What is wrong, and the flags to pass.
        reason: String,
    },
    /// Another process trains in the run directory.
    #[error(
        "{} is in use: process {pid} trains there (its lock {}); wait for it or stop it",
        run_dir.display(),
        lock.display()
    )]
    RunLocked {
        /// The run directory.
        run_dir: PathBuf,
        /// The process that holds the lock.
        pid: u32,
        /// The lock file.
        lock: PathBuf,
    },
    /// The loss became NaN or infinite; the step was not applied and the checkpoints on disk
    /// are those of the last good epoch.
    #[error(
        "the training loss became {value} at epoch {epoch}, step {step}: stopped without applying \
         the step; the checkpoints in {} are kept (try a lower learning rate or gradient clipping)",
        run_dir.display()
    )]
    NonFiniteLoss {
        /// The epoch (1-based).
        epoch: usize,
        /// The step within the epoch (1-based).
        step: usize,
        /// The loss value.
        value: f64,
        /// The run directory.
        run_dir: PathBuf,
    },
}

impl From<unet_model::Error> for Error {
    fn from(e: unet_model::Error) -> Self {
        Error::Model(Box::new(e))
    }
}

impl From<unet_data::Error> for Error {
    fn from(e: unet_data::Error) -> Self {
        Error::Data(Box::new(e))
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Maps an I/O error on `path` to [`Error::Io`].
pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
