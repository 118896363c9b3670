//! The crate's error type.

/// Everything that can go wrong in this crate: bad parameters and inconsistent inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A parameter is out of its allowed domain (negative sigma, probability outside [0, 1], ...).
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the parameter must satisfy.
        reason: &'static str,
    },
    /// A range whose minimum exceeds its maximum, or with a non-finite bound.
    #[error("invalid range `{name}` = [{min}, {max}]: bounds must be finite with min <= max")]
    InvalidRange {
        /// Which parameter.
        name: &'static str,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// A plane (image, label, weight, coordinate map) has the wrong number of values.
    #[error("plane `{plane}` has {actual} values, expected {expected}")]
    PlaneSize {
        /// Which plane.
        plane: &'static str,
        /// Values it should have.
        expected: usize,
        /// Values it has.
        actual: usize,
    },
    /// An image with zero width, height or channels.
    #[error("empty image: {width}x{height} with {channels} channel(s)")]
    EmptyImage {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// Number of image channels.
        channels: usize,
    },
    /// A crop larger than the image it is taken from.
    #[error("crop {crop_width}x{crop_height} is larger than the {width}x{height} image")]
    CropTooLarge {
        /// Requested crop width.
        crop_width: usize,
        /// Requested crop height.
        crop_height: usize,
        /// Width of the image at that step.
        width: usize,
        /// Height of the image at that step.
        height: usize,
    },
    /// A preset name that [`Preset`](crate::Preset) does not know.
    #[error("unknown augmentation preset {name:?}; known: none, reference, paper, robust")]
    UnknownPreset {
        /// The name given.
        name: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Check that `value` is finite and `>= 0`.
pub(crate) fn non_negative(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value,
            reason: "must be finite and >= 0",
        })
    }
}
