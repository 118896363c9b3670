//! The crate's error type.

/// Everything that can go wrong when scoring a segmentation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Two inputs that must describe the same pixels have different lengths.
    #[error("size mismatch: {what} has {actual} values, expected {expected}")]
    SizeMismatch {
        /// Which input is wrong.
        what: &'static str,
        /// The length the other inputs imply.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// An image or stack with no pixels.
    #[error("empty input: {pages} pages of {height}x{width} pixels")]
    Empty {
        /// Number of pages given.
        pages: usize,
        /// Height given.
        height: usize,
        /// Width given.
        width: usize,
    },
    /// A probability is NaN.
    #[error("probability at index {index} is NaN")]
    NanProbability {
        /// Flat index of the pixel (page-major, row-major).
        index: usize,
    },
    /// A probability lies outside [0, 1].
    #[error("probability {value} at index {index} is outside [0, 1]")]
    ProbabilityOutOfRange {
        /// Flat index of the pixel.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A threshold is not a finite number in [0, 1].
    #[error("threshold {value} is not a finite number in [0, 1]")]
    InvalidThreshold {
        /// The offending threshold.
        value: f64,
    },
    /// No thresholds were given.
    #[error("no thresholds given")]
    NoThresholds,
    /// A decision threshold is NaN or infinite.
    #[error("decision threshold {value} is not a finite number")]
    NonFiniteThreshold {
        /// The offending threshold.
        value: f64,
    },
    /// A score (logit margin or probability) is NaN or infinite.
    #[error("score {value} at index {index} is not a finite number")]
    NonFiniteScore {
        /// Flat index of the pixel (page-major, row-major).
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A confusion matrix needs at least one class.
    #[error("a confusion matrix needs at least one class, got {n_classes}")]
    InvalidClassCount {
        /// The number of classes asked for.
        n_classes: usize,
    },
    /// A class index is not below the number of classes.
    #[error("class {class} at index {index} is not below the class count {n_classes}")]
    ClassOutOfRange {
        /// Flat index of the pixel.
        index: usize,
        /// The offending class.
        class: usize,
        /// The number of classes.
        n_classes: usize,
    },
    /// Two confusion matrices over different class counts cannot be merged.
    #[error("cannot merge confusion matrices over {left} and {right} classes")]
    ClassCountMismatch {
        /// Classes of the receiving matrix.
        left: usize,
        /// Classes of the other matrix.
        right: usize,
    },
    /// The ISBI scores are restricted to the truth's cell pixels; a section without any
    /// has no score (Fiji divides by zero there).
    #[error("section {section} has no cell pixels in the truth: V-Rand and V-Info are undefined")]
    NoTruthForeground {
        /// The section (page) index.
        section: usize,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
