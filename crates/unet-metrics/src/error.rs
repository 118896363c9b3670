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
    /// A class count outside `1..=65536` (class maps hold `u8` or `u16` class indices).
    #[error("class count {n_classes} is not in 1..=65536")]
    InvalidClassCount {
        /// The number of classes asked for.
        n_classes: usize,
    },
    /// A class index is not below the number of classes (and, in the truth, not the ignore
    /// value).
    #[error("{what} class {class} at index {index} is not below the class count {n_classes}")]
    ClassOutOfRange {
        /// Which class map holds it: `"truth"` or `"predicted"`.
        what: &'static str,
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
    /// Per-class values must be `n_classes` planes of equal size, class-major.
    #[error("{len} values are not {n_classes} class planes of equal size")]
    ClassPlanes {
        /// Number of values given.
        len: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// The instance class of V-Rand / V-Info is not one of the classes.
    #[error("instance class {class} is not below the class count {n_classes}")]
    InstanceClassOutOfRange {
        /// The instance class asked for.
        class: usize,
        /// The number of classes.
        n_classes: usize,
    },
    /// V-Rand and V-Info are restricted to the truth's pixels of the instance class; an image
    /// without any has no score.
    #[error("the truth has no pixel of instance class {class}: V-Rand and V-Info are undefined")]
    NoTruthInstances {
        /// The instance class.
        class: usize,
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
