//! The crate's error type.

/// Everything that can go wrong when labelling cells or building a weight map.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A buffer does not hold `pages * height * width` values.
    #[error(
        "buffer holds {actual} values, but {pages} page(s) of {height}x{width} need {expected}"
    )]
    LengthMismatch {
        /// Values the shape needs.
        expected: usize,
        /// Values the buffer holds.
        actual: usize,
        /// Pages in the stack (1 for a single image).
        pages: usize,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
    },
    /// The image is so large that squared pixel distances would not fit in 32 bits.
    #[error("image of {height}x{width} is too large: squared distances across it overflow u32")]
    ImageTooLarge {
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
    },
    /// A parameter is out of its valid range.
    #[error("invalid parameter {name} = {value}: {requirement}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The rejected value.
        value: f32,
        /// What a valid value looks like.
        requirement: &'static str,
    },
    /// A class-index label is not below the class count and is not the ignore value.
    #[error(
        "label {value} at page {page}, row {row}, column {column} is not a class: \
         expected 0..{n_classes} or the ignore value"
    )]
    LabelOutOfRange {
        /// The offending label value.
        value: u16,
        /// The class count K.
        n_classes: usize,
        /// Page in the stack (0 for a single image).
        page: usize,
        /// Row of the pixel.
        row: usize,
        /// Column of the pixel.
        column: usize,
    },
    /// The class count is 0 or more than a 16-bit label image can hold.
    #[error("invalid class count {n_classes}: must be in 1..=65536")]
    InvalidClassCount {
        /// The rejected class count.
        n_classes: usize,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that `len == pages * height * width` and that distances across one page fit in `u32`.
pub(crate) fn check_shape(len: usize, pages: usize, height: usize, width: usize) -> Result<()> {
    let mismatch = || Error::LengthMismatch {
        expected: pages.saturating_mul(height).saturating_mul(width),
        actual: len,
        pages,
        height,
        width,
    };
    let expected = pages
        .checked_mul(height)
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(mismatch)?;
    if expected != len {
        return Err(mismatch());
    }
    // Squared distances are kept as u32; the largest one in an image is (h-1)^2 + (w-1)^2.
    let max_squared = |n: usize| (n.saturating_sub(1) as u128).pow(2);
    if max_squared(height) + max_squared(width) >= u128::from(u32::MAX) {
        return Err(Error::ImageTooLarge { height, width });
    }
    Ok(())
}
