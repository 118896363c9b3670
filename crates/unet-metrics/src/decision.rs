//! Choosing the decision threshold of a score map from labelled data.
//!
//! A net trained with the paper's border weights ranks pixels well but puts its decision point
//! in the wrong place: it calls too many pixels membrane at `P = 0.5`. Sweeping the threshold of
//! its scores on the sections it trained on (never on the validation sections) finds the point
//! that scores best; a model can then store the matching offset so that `P = 0.5` is that point.
//!
//! Scores may be any finite reals (logit margins, probabilities); a pixel is predicted cell when
//! `score > t`, strict, as everywhere in this crate. The pixel scores are aggregated as
//! [`score_stack`](crate::score_stack) does: per image, then the mean over images.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pixel::{ConfusionMatrix, PixelScores};
use crate::validate::{check_finite, check_stack_shape};

/// The pixel scores of one candidate threshold over a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdCandidate {
    /// The threshold: cell where `score > threshold`.
    pub threshold: f64,
    /// Pixel accuracy (mean over images).
    pub pixel_accuracy: f64,
    /// Mean IoU over the two classes (mean over images, as the reference).
    pub mean_iou: f64,
}

/// One page's scores split by the truth class, each sorted ascending.
struct SortedPage {
    membrane: Vec<f32>,
    cell: Vec<f32>,
}

impl SortedPage {
    fn new(scores: &[f32], labels: &[u8]) -> Self {
        let (mut membrane, mut cell) = (Vec::new(), Vec::new());
        for (&s, &l) in scores.iter().zip(labels) {
            if l > 0 {
                cell.push(s);
            } else {
                membrane.push(s);
            }
        }
        membrane.sort_unstable_by(f32::total_cmp);
        cell.sort_unstable_by(f32::total_cmp);
        Self { membrane, cell }
    }

    /// The binary confusion matrix of `score > t`.
    fn matrix(&self, t: f64) -> ConfusionMatrix {
        let above = |v: &[f32]| (v.len() - v.partition_point(|&s| f64::from(s) <= t)) as u64;
        let (m_as_cell, c_as_cell) = (above(&self.membrane), above(&self.cell));
        ConfusionMatrix::from_binary_counts([
            self.membrane.len() as u64 - m_as_cell,
            m_as_cell,
            self.cell.len() as u64 - c_as_cell,
            c_as_cell,
        ])
    }
}

/// Pixel scores of `scores > t` against the 0/255 `labels` (`pages` images of
/// `height x width`, page-major) for every `t` in `thresholds`, in the given order.
///
/// ```
/// use unet_metrics::sweep_decision_thresholds;
///
/// // Logit margins of one 1 x 4 image: truth cell, cell, membrane, membrane.
/// let margins = [2.0_f32, -0.5, -1.0, -3.0];
/// let labels = [255_u8, 255, 0, 0];
/// let sweep = sweep_decision_thresholds(&margins, &labels, 1, 1, 4, &[0.0, -0.75]).unwrap();
/// assert_eq!(sweep[0].pixel_accuracy, 0.75); // the cell at -0.5 is missed at t = 0
/// assert_eq!(sweep[1].pixel_accuracy, 1.0);
/// ```
pub fn sweep_decision_thresholds(
    scores: &[f32],
    labels: &[u8],
    pages: usize,
    height: usize,
    width: usize,
    thresholds: &[f64],
) -> Result<Vec<ThresholdCandidate>> {
    check_stack_shape(
        "score stack",
        scores.len(),
        labels.len(),
        pages,
        height,
        width,
    )?;
    let page = height * width;
    if thresholds.is_empty() {
        return Err(Error::NoThresholds);
    }
    if let Some(&value) = thresholds.iter().find(|t| !t.is_finite()) {
        return Err(Error::NonFiniteThreshold { value });
    }
    check_finite(scores)?;
    let sorted: Vec<SortedPage> = scores
        .par_chunks(page)
        .zip(labels.par_chunks(page))
        .map(|(s, l)| SortedPage::new(s, l))
        .collect();
    Ok(thresholds
        .par_iter()
        .map(|&t| {
            let per_image: Vec<PixelScores> = sorted.iter().map(|p| p.matrix(t).scores()).collect();
            let mean = PixelScores::mean_over_images(&per_image).expect("at least one page");
            ThresholdCandidate {
                threshold: t,
                pixel_accuracy: mean.pixel_accuracy,
                mean_iou: mean.mean_iou,
            }
        })
        .collect())
}

/// The threshold of `thresholds` with the highest mean IoU of `scores > t` (see
/// [`sweep_decision_thresholds`]); among equal scores, the one closest to `prefer`.
pub fn best_decision_threshold(
    scores: &[f32],
    labels: &[u8],
    pages: usize,
    height: usize,
    width: usize,
    thresholds: &[f64],
    prefer: f64,
) -> Result<ThresholdCandidate> {
    let sweep = sweep_decision_thresholds(scores, labels, pages, height, width, thresholds)?;
    let better = |a: &ThresholdCandidate, b: &ThresholdCandidate| {
        a.mean_iou > b.mean_iou
            || (a.mean_iou == b.mean_iou
                && (a.threshold - prefer).abs() < (b.threshold - prefer).abs())
    };
    Ok(sweep
        .into_iter()
        .reduce(|best, c| if better(&c, &best) { c } else { best })
        .expect("thresholds are not empty"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack_pixel_scores;
    use proptest::prelude::*;

    #[test]
    fn best_threshold_separates_a_shifted_map() {
        // Cells score 0.375, membranes 0.125 (exact in f32): at 0.5 everything is membrane.
        let labels: Vec<u8> = [255, 255, 0, 255].repeat(3);
        let scores: Vec<f32> = labels
            .iter()
            .map(|&l| if l > 0 { 0.375 } else { 0.125 })
            .collect();
        let grid: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
        let best = best_decision_threshold(&scores, &labels, 3, 2, 2, &grid, 0.5).unwrap();
        assert_eq!(best.mean_iou, 1.0);
        assert_eq!(best.pixel_accuracy, 1.0);
        // 0.2 and 0.3 separate equally well; 0.3 is closer to the preferred 0.5.
        assert_eq!(best.threshold, 0.3);
        let sweep = sweep_decision_thresholds(&scores, &labels, 3, 2, 2, &[0.5]).unwrap();
        assert_eq!(sweep[0].pixel_accuracy, 0.25);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let labels = [0_u8, 255];
        assert!(matches!(
            sweep_decision_thresholds(&[0.0, f32::NAN], &labels, 1, 1, 2, &[0.0]),
            Err(Error::NonFiniteScore { index: 1, .. })
        ));
        assert!(matches!(
            sweep_decision_thresholds(&[0.0, f32::INFINITY], &labels, 1, 1, 2, &[0.0]),
            Err(Error::NonFiniteScore { index: 1, .. })
        ));
        assert_eq!(
            sweep_decision_thresholds(&[0.0, 1.0], &labels, 1, 1, 2, &[]),
            Err(Error::NoThresholds)
        );
        assert!(matches!(
            sweep_decision_thresholds(&[0.0, 1.0], &labels, 1, 1, 2, &[f64::NAN]),
            Err(Error::NonFiniteThreshold { .. })
        ));
        assert!(matches!(
            sweep_decision_thresholds(&[0.0], &labels, 1, 1, 2, &[0.0]),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            sweep_decision_thresholds(&[], &[], 0, 1, 2, &[0.0]),
            Err(Error::Empty { .. })
        ));
    }

    proptest! {
        /// The sorted sweep scores every threshold exactly as thresholding each pixel does.
        #[test]
        fn sweep_equals_pixel_scores_at_each_threshold(
            pages in 1usize..4,
            h in 1usize..6,
            w in 1usize..6,
            seed in any::<u64>(),
        ) {
            let n = pages * h * w;
            let mut state = seed;
            let mut next = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 40) as u32
            };
            // Probabilities on a coarse grid, so that ties with the thresholds occur.
            let prob: Vec<f32> = (0..n).map(|_| (next() % 11) as f32 / 10.0).collect();
            let labels: Vec<u8> = (0..n).map(|_| if next() % 3 == 0 { 0 } else { 255 }).collect();
            let grid: Vec<f64> = (0..=10).map(|i| f64::from(i) / 10.0).collect();
            let sweep = sweep_decision_thresholds(&prob, &labels, pages, h, w, &grid).unwrap();
            for c in &sweep {
                let direct = stack_pixel_scores(&prob, &labels, pages, h, w, c.threshold)
                    .unwrap()
                    .mean_over_images;
                prop_assert_eq!(c.pixel_accuracy, direct.pixel_accuracy);
                prop_assert_eq!(c.mean_iou, direct.mean_iou);
            }
            let best = best_decision_threshold(&prob, &labels, pages, h, w, &grid, 0.5).unwrap();
            prop_assert!(sweep.iter().all(|c| c.mean_iou <= best.mean_iou));
        }
    }
}
