//! Input checks shared by the scoring functions.

use crate::error::{Error, Result};

/// Checks that `actual` equals `expected`.
pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::SizeMismatch {
            what,
            expected,
            actual,
        })
    }
}

/// Checks that every probability is a number in [0, 1].
pub(crate) fn check_probabilities(prob: &[f32]) -> Result<()> {
    for (index, &value) in prob.iter().enumerate() {
        if value.is_nan() {
            return Err(Error::NanProbability { index });
        }
        if !(0.0..=1.0).contains(&value) {
            return Err(Error::ProbabilityOutOfRange { index, value });
        }
    }
    Ok(())
}

/// Checks that every score (a logit, a margin or a probability) is finite.
pub(crate) fn check_finite(scores: &[f32]) -> Result<()> {
    match scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        Some((index, &value)) => Err(Error::NonFiniteScore { index, value }),
        None => Ok(()),
    }
}

/// Checks that a class count lies in `1..=65536`, so that every class fits a `u16`.
pub(crate) fn check_class_count(n_classes: usize) -> Result<()> {
    if (1..=usize::from(u16::MAX) + 1).contains(&n_classes) {
        Ok(())
    } else {
        Err(Error::InvalidClassCount { n_classes })
    }
}

/// Checks that a threshold is a finite number in [0, 1].
pub(crate) fn check_threshold(value: f64) -> Result<()> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidThreshold { value })
    }
}

/// Checks a probability stack and a label stack of `pages x height x width`.
pub(crate) fn check_stack(
    prob: &[f32],
    labels: &[u8],
    pages: usize,
    height: usize,
    width: usize,
) -> Result<()> {
    check_stack_shape(
        "probability stack",
        prob.len(),
        labels.len(),
        pages,
        height,
        width,
    )?;
    check_probabilities(prob)
}

/// Checks that a value stack (`what`, `values` long) and a label stack (`labels` long) both
/// hold `pages x height x width` pixels, and that there is at least one.
pub(crate) fn check_stack_shape(
    what: &'static str,
    values: usize,
    labels: usize,
    pages: usize,
    height: usize,
    width: usize,
) -> Result<()> {
    let len = pages
        .checked_mul(height)
        .and_then(|n| n.checked_mul(width))
        .unwrap_or(usize::MAX);
    if len == 0 {
        return Err(Error::Empty {
            pages,
            height,
            width,
        });
    }
    check_len(what, len, values)?;
    check_len("label stack", len, labels)
}
