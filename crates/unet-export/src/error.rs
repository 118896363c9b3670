//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong exporting a model or reading a package back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model or its settings have something the export cannot express.
    #[error("cannot export {what}: {reason}")]
    Unsupported {
        /// What was to be exported.
        what: String,
        /// Why it cannot be.
        reason: String,
    },
    /// A package (or a file in it) is damaged, not ours, or does not match its rdf.yaml.
    #[error("{}: {reason}", path.display())]
    Package {
        /// The package, or the package and the file inside it (`m.zip/rdf.yaml`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// From the model crate (its configuration, a checkpoint).
    #[error(transparent)]
    Model(#[from] unet_model::Error),
    /// From candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// From the data crate (an image).
    #[error(transparent)]
    Data(#[from] unet_data::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
