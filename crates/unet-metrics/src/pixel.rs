//! Pixel scores: confusion counts, accuracy, IoU, Dice.
//!
//! Conventions (the binary case, where a probability map meets a 0/255 label map):
//! - class 0 is membrane (label 0), class 1 is cell (any label > 0);
//! - a pixel is predicted cell when `P > t` (strict, as in the Fiji scripts: `P == t` is membrane);
//!   the comparison is done in `f64`, so a threshold of `0.5` means exactly one half;
//! - the IoU and Dice of a class absent from both truth and prediction are 1: nothing to find,
//!   nothing wrongly found. The reference (`hayashimasa/UNet-PyTorch`, `metric.py`) gets the same
//!   value from its `(0 + eps) / (0 + eps)`.
//!
//! Two aggregations over a stack: the reference's (scores per image, then the plain mean over
//! images; mean IoU = the mean over classes of those means) and pooled (one confusion matrix over
//! every pixel of the stack). The reference's `metric.py` counts `np.intersect1d` of
//! `np.where` index tuples, which counts distinct coordinate values rather than pixels; we
//! compute the IoU it meant, `|P ∩ T| / |P ∪ T|` in pixels.

use crate::classes::{argmax_classes, check_class_maps, ClassLabel, ClassScores};
use crate::error::{Error, Result};
use crate::validate::{check_class_count, check_len, check_probabilities, check_threshold};

/// Confusion counts for `n` classes: `count(truth, predicted)` pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    n_classes: usize,
    /// Row-major: `counts[truth * n_classes + predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix over `n_classes` classes (`1..=65536`).
    pub fn new(n_classes: usize) -> Result<Self> {
        check_class_count(n_classes)?;
        Ok(Self {
            n_classes,
            counts: vec![0; n_classes * n_classes],
        })
    }

    /// Counts a predicted class map against a truth class map, both holding class indices
    /// `0..n_classes` as `u8` or `u16` (see [`ClassLabel`]). Pixels whose truth equals `ignore`
    /// are left out of the counts; their prediction must still be a class. A value not below
    /// `n_classes` (other than `ignore` in the truth) is [`Error::ClassOutOfRange`], naming the
    /// map, the value and the pixel.
    ///
    /// `ignore` may be any value, a class index included: that class then has no truth pixels.
    ///
    /// ```
    /// use unet_metrics::ConfusionMatrix;
    ///
    /// let truth: [u16; 4] = [0, 2, 2, 300];
    /// let predicted: [u8; 4] = [0, 2, 1, 1];
    /// let m = ConfusionMatrix::from_class_maps(&predicted, &truth, 3, Some(300)).unwrap();
    /// assert_eq!((m.total(), m.count(2, 2), m.count(2, 1)), (3, 1, 1));
    /// ```
    pub fn from_class_maps<P: ClassLabel, T: ClassLabel>(
        predicted: &[P],
        truth: &[T],
        n_classes: usize,
        ignore: Option<T>,
    ) -> Result<Self> {
        check_len("truth", predicted.len(), truth.len())?;
        let mut matrix = Self::new(n_classes)?;
        check_class_maps(predicted, truth, n_classes, ignore)?;
        for (&p, &t) in predicted.iter().zip(truth) {
            if Some(t) != ignore {
                matrix.counts[t.index() * n_classes + p.index()] += 1;
            }
        }
        Ok(matrix)
    }

    /// Counts the [`argmax_classes`] of per-class scores against a truth class map, as
    /// [`ConfusionMatrix::from_class_maps`] does. `probs` holds `n_classes` planes of
    /// `truth.len()` pixels, class-major (the net's channel axis first); probabilities or logits
    /// give the same argmax. Ties go to the lowest class.
    ///
    /// With two classes and `probs = [1 - p, p]` this is
    /// [`ConfusionMatrix::from_probabilities`] at threshold 0.5: cell where `p > 0.5`.
    ///
    /// ```
    /// use unet_metrics::ConfusionMatrix;
    ///
    /// // Two pixels, three classes: class planes [0.7, 0.1], [0.2, 0.1], [0.1, 0.8].
    /// let probs = [0.7, 0.1, 0.2, 0.1, 0.1, 0.8];
    /// let truth: [u8; 2] = [0, 1];
    /// let m = ConfusionMatrix::from_class_probabilities(&probs, &truth, 3, None).unwrap();
    /// assert_eq!((m.count(0, 0), m.count(1, 2)), (1, 1));
    /// ```
    pub fn from_class_probabilities<T: ClassLabel>(
        probs: &[f32],
        truth: &[T],
        n_classes: usize,
        ignore: Option<T>,
    ) -> Result<Self> {
        check_class_count(n_classes)?;
        check_len(
            "class probabilities",
            n_classes.saturating_mul(truth.len()),
            probs.len(),
        )?;
        let predicted = argmax_classes(probs, n_classes)?;
        Self::from_class_maps(&predicted, truth, n_classes, ignore)
    }

    /// Counts a probability map `P(cell)` thresholded at `P > threshold` against a 0/255 label
    /// map (label 0 = membrane = class 0, label > 0 = cell = class 1).
    pub fn from_probabilities(prob: &[f32], labels: &[u8], threshold: f64) -> Result<Self> {
        check_len("labels", prob.len(), labels.len())?;
        check_probabilities(prob)?;
        check_threshold(threshold)?;
        Ok(Self::binary_unchecked(prob, labels, threshold))
    }

    /// The binary matrix without input checks (the caller has checked them).
    pub(crate) fn binary_unchecked(prob: &[f32], labels: &[u8], threshold: f64) -> Self {
        // counts[truth][pred], truth/pred in {0, 1}
        let mut c = [0u64; 4];
        for (&p, &l) in prob.iter().zip(labels) {
            let pred = usize::from(f64::from(p) > threshold);
            let truth = usize::from(l > 0);
            c[truth * 2 + pred] += 1;
        }
        Self {
            n_classes: 2,
            counts: c.to_vec(),
        }
    }

    /// A binary matrix from `[truth 0 pred 0, truth 0 pred 1, truth 1 pred 0, truth 1 pred 1]`.
    pub(crate) fn from_binary_counts(counts: [u64; 4]) -> Self {
        Self {
            n_classes: 2,
            counts: counts.to_vec(),
        }
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Pixels of class `truth` predicted as `predicted`. Panics if a class is out of range.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        assert!(truth < self.n_classes && predicted < self.n_classes);
        self.counts[truth * self.n_classes + predicted]
    }

    /// All pixels counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another matrix's counts to this one.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.n_classes != self.n_classes {
            return Err(Error::ClassCountMismatch {
                left: self.n_classes,
                right: other.n_classes,
            });
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Pixels whose truth is `class`.
    fn truth_total(&self, class: usize) -> u64 {
        (0..self.n_classes).map(|p| self.count(class, p)).sum()
    }

    /// Pixels predicted as `class`.
    fn predicted_total(&self, class: usize) -> u64 {
        (0..self.n_classes).map(|t| self.count(t, class)).sum()
    }

    /// Fraction of pixels whose predicted class is the true one (1 for an empty matrix).
    pub fn pixel_accuracy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 1.0;
        }
        let correct: u64 = (0..self.n_classes).map(|c| self.count(c, c)).sum();
        correct as f64 / total as f64
    }

    /// Per-class accuracy of `class`: the fraction of its truth pixels predicted as `class`,
    /// `tp / (tp + fn)` (its recall). A class absent from the truth scores 1 when it is never
    /// predicted either and 0 when it is (every prediction of it is then wrong), as
    /// [`ConfusionMatrix::iou`] and [`ConfusionMatrix::dice`] score it.
    pub fn accuracy(&self, class: usize) -> f64 {
        let tp = self.count(class, class);
        let truth = self.truth_total(class);
        if truth == 0 {
            if self.predicted_total(class) == 0 {
                1.0
            } else {
                0.0
            }
        } else {
            tp as f64 / truth as f64
        }
    }

    /// Intersection over union of `class`: `tp / (tp + fp + fn)`; 1 when the class is absent
    /// from both truth and prediction.
    pub fn iou(&self, class: usize) -> f64 {
        let tp = self.count(class, class);
        let union = self.truth_total(class) + self.predicted_total(class) - tp;
        if union == 0 {
            1.0
        } else {
            tp as f64 / union as f64
        }
    }

    /// Dice coefficient (= F1 score) of `class`: `2 tp / (2 tp + fp + fn)`; 1 when the class is
    /// absent from both truth and prediction.
    pub fn dice(&self, class: usize) -> f64 {
        let tp = self.count(class, class);
        let denominator = self.truth_total(class) + self.predicted_total(class);
        if denominator == 0 {
            1.0
        } else {
            2.0 * tp as f64 / denominator as f64
        }
    }

    /// The F-score of `class` as Fiji's `ClassificationStatistics` computes it: precision is 1
    /// when there are no false positives, recall is 1 when there are no false negatives, and the
    /// score is 0 when both are 0. It differs from [`ConfusionMatrix::dice`] only when the class
    /// is never predicted or never true.
    pub fn fiji_f_score(&self, class: usize) -> f64 {
        let tp = self.count(class, class) as f64;
        let fp = self.predicted_total(class) as f64 - tp;
        let fn_ = self.truth_total(class) as f64 - tp;
        let precision = if fp == 0.0 { 1.0 } else { tp / (tp + fp) };
        let recall = if fn_ == 0.0 { 1.0 } else { tp / (tp + fn_) };
        if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        }
    }

    /// The multi-class scores of this matrix: per-class accuracy, IoU and Dice, their means
    /// over the foreground classes `1..n_classes`, and the pixel accuracy.
    ///
    /// ```
    /// use unet_metrics::ConfusionMatrix;
    ///
    /// let truth: [u8; 4] = [0, 1, 2, 2];
    /// let predicted: [u8; 4] = [0, 1, 2, 1];
    /// let s = ConfusionMatrix::from_class_maps(&predicted, &truth, 3, None)
    ///     .unwrap()
    ///     .class_scores();
    /// assert_eq!(s.accuracy_per_class, vec![1.0, 1.0, 0.5]);
    /// assert_eq!(s.iou_per_class, vec![1.0, 0.5, 0.5]);
    /// assert_eq!(s.mean_foreground_iou, 0.5);
    /// ```
    pub fn class_scores(&self) -> ClassScores {
        let per_class = |f: fn(&Self, usize) -> f64| -> Vec<f64> {
            (0..self.n_classes).map(|c| f(self, c)).collect()
        };
        let accuracy_per_class = per_class(Self::accuracy);
        let iou_per_class = per_class(Self::iou);
        let dice_per_class = per_class(Self::dice);
        ClassScores {
            pixel_accuracy: self.pixel_accuracy(),
            mean_foreground_accuracy: mean(&accuracy_per_class[1..]),
            mean_foreground_iou: mean(&iou_per_class[1..]),
            mean_foreground_dice: mean(&dice_per_class[1..]),
            accuracy_per_class,
            iou_per_class,
            dice_per_class,
        }
    }

    /// All pixel scores of this matrix.
    pub fn scores(&self) -> PixelScores {
        let iou_per_class: Vec<f64> = (0..self.n_classes).map(|c| self.iou(c)).collect();
        let dice_per_class: Vec<f64> = (0..self.n_classes).map(|c| self.dice(c)).collect();
        let pixel_accuracy = self.pixel_accuracy();
        PixelScores {
            pixel_accuracy,
            pixel_error: 1.0 - pixel_accuracy,
            mean_iou: mean(&iou_per_class),
            mean_dice: mean(&dice_per_class),
            iou_per_class,
            dice_per_class,
        }
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Pixel scores of one image, or aggregated over a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelScores {
    /// Fraction of correctly classified pixels.
    pub pixel_accuracy: f64,
    /// `1 - pixel_accuracy` (not the ISBI leaderboard's pixel error, which is `1 - max F`).
    pub pixel_error: f64,
    /// IoU per class (binary: `[membrane, cell]`).
    pub iou_per_class: Vec<f64>,
    /// Mean of `iou_per_class`.
    pub mean_iou: f64,
    /// Dice (F1) per class (binary: `[membrane, cell]`).
    pub dice_per_class: Vec<f64>,
    /// Mean of `dice_per_class`.
    pub mean_dice: f64,
}

impl PixelScores {
    /// The reference's aggregation: every score averaged over images (mean IoU = the mean over
    /// classes of the per-class means). Returns `None` for no images or differing class counts.
    pub fn mean_over_images(per_image: &[PixelScores]) -> Option<PixelScores> {
        let first = per_image.first()?;
        let n_classes = first.iou_per_class.len();
        if per_image.iter().any(|s| s.iou_per_class.len() != n_classes) {
            return None;
        }
        let avg = |f: &dyn Fn(&PixelScores) -> f64| {
            per_image.iter().map(f).sum::<f64>() / per_image.len() as f64
        };
        let iou_per_class: Vec<f64> = (0..n_classes)
            .map(|c| avg(&|s| s.iou_per_class[c]))
            .collect();
        let dice_per_class: Vec<f64> = (0..n_classes)
            .map(|c| avg(&|s| s.dice_per_class[c]))
            .collect();
        Some(PixelScores {
            pixel_accuracy: avg(&|s| s.pixel_accuracy),
            pixel_error: avg(&|s| s.pixel_error),
            mean_iou: mean(&iou_per_class),
            mean_dice: mean(&dice_per_class),
            iou_per_class,
            dice_per_class,
        })
    }

    /// Dice of the cell class (class 1) of a binary score set; the pixel F-score with cell
    /// positive.
    pub fn cell_dice(&self) -> Option<f64> {
        self.dice_per_class.get(1).copied()
    }
}

/// Pixel scores of one probability map `P(cell)` against a 0/255 label map, cell if `P > threshold`.
///
/// ```
/// let prob = [0.9_f32, 0.2, 0.7, 0.4];
/// let labels = [255_u8, 0, 0, 255];
/// let scores = unet_metrics::pixel_scores(&prob, &labels, 0.5).unwrap();
/// assert_eq!(scores.pixel_accuracy, 0.5);
/// assert_eq!(scores.iou_per_class, vec![1.0 / 3.0, 1.0 / 3.0]);
/// ```
pub fn pixel_scores(prob: &[f32], labels: &[u8], threshold: f64) -> Result<PixelScores> {
    Ok(ConfusionMatrix::from_probabilities(prob, labels, threshold)?.scores())
}

/// Pixel scores of a stack in both aggregations.
#[derive(Debug, Clone, PartialEq)]
pub struct StackPixelScores {
    /// Scores per image.
    pub per_image: Vec<PixelScores>,
    /// The reference's aggregation: per-image scores averaged over images.
    pub mean_over_images: PixelScores,
    /// One confusion matrix over all pixels of the stack.
    pub pooled: PixelScores,
    /// The pooled confusion matrix.
    pub confusion: ConfusionMatrix,
}

impl StackPixelScores {
    /// Aggregates per-image confusion matrices (all over the same classes).
    pub fn from_matrices(matrices: &[ConfusionMatrix]) -> Result<Self> {
        let first = matrices.first().ok_or(Error::Empty {
            pages: 0,
            height: 0,
            width: 0,
        })?;
        let mut confusion = ConfusionMatrix::new(first.n_classes())?;
        for m in matrices {
            confusion.merge(m)?;
        }
        let per_image: Vec<PixelScores> = matrices.iter().map(ConfusionMatrix::scores).collect();
        let mean_over_images =
            PixelScores::mean_over_images(&per_image).expect("non-empty, same class count");
        Ok(Self {
            pooled: confusion.scores(),
            mean_over_images,
            per_image,
            confusion,
        })
    }
}

/// Pixel scores of a stack of probability maps against 0/255 label maps (`pages` images of
/// `height x width`, page-major then row-major), in both aggregations.
pub fn stack_pixel_scores(
    prob: &[f32],
    labels: &[u8],
    pages: usize,
    height: usize,
    width: usize,
    threshold: f64,
) -> Result<StackPixelScores> {
    crate::validate::check_stack(prob, labels, pages, height, width)?;
    check_threshold(threshold)?;
    let page = height * width;
    let matrices: Vec<ConfusionMatrix> = prob
        .chunks(page)
        .zip(labels.chunks(page))
        .map(|(p, l)| ConfusionMatrix::binary_unchecked(p, l, threshold))
        .collect();
    StackPixelScores::from_matrices(&matrices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_binary_scores() {
        // truth:  C C M M   prediction (t = 0.5): C M C M
        let prob = [0.9, 0.1, 0.6, 0.5];
        let labels = [255, 255, 0, 0];
        let m = ConfusionMatrix::from_probabilities(&prob, &labels, 0.5).unwrap();
        assert_eq!(
            (m.count(1, 1), m.count(1, 0), m.count(0, 1), m.count(0, 0)),
            (1, 1, 1, 1)
        );
        let s = m.scores();
        assert_eq!(s.pixel_accuracy, 0.5);
        assert_eq!(s.pixel_error, 0.5);
        assert_eq!(s.iou_per_class, vec![1.0 / 3.0, 1.0 / 3.0]);
        assert_eq!(s.dice_per_class, vec![0.5, 0.5]);
    }

    #[test]
    fn threshold_is_strict() {
        let m = ConfusionMatrix::from_probabilities(&[0.5], &[255], 0.5).unwrap();
        assert_eq!(m.count(1, 0), 1);
        let m = ConfusionMatrix::from_probabilities(&[0.0], &[0], 0.0).unwrap();
        assert_eq!(m.count(0, 0), 1);
    }

    #[test]
    fn all_membrane_prediction() {
        // 3 cell pixels, 1 membrane pixel, everything predicted membrane.
        let s = pixel_scores(&[0.0; 4], &[255, 255, 255, 0], 0.5).unwrap();
        assert_eq!(s.pixel_accuracy, 0.25);
        assert_eq!(s.iou_per_class, vec![0.25, 0.0]);
        assert_eq!(s.dice_per_class, vec![0.4, 0.0]);
        let m = ConfusionMatrix::from_probabilities(&[0.0; 4], &[255, 255, 255, 0], 0.5).unwrap();
        // Fiji: no positive predicted, so no false positive: precision 1, recall 0, F = 0.
        assert_eq!(m.fiji_f_score(1), 0.0);
    }

    #[test]
    fn absent_class_scores_one() {
        let s = pixel_scores(&[0.9, 0.8], &[255, 255], 0.5).unwrap();
        assert_eq!(s.iou_per_class, vec![1.0, 1.0]);
        assert_eq!(s.mean_iou, 1.0);
    }

    #[test]
    fn multi_class_scores() {
        let truth: [u8; 6] = [0, 1, 2, 2, 1, 0];
        let pred: [u8; 6] = [0, 1, 2, 1, 1, 2];
        let m = ConfusionMatrix::from_class_maps(&pred, &truth, 3, None).unwrap();
        let s = m.scores();
        assert_eq!(s.pixel_accuracy, 4.0 / 6.0);
        // class 0: tp 1, truth 2, pred 1 -> 1/2; class 1: tp 2, truth 2, pred 3 -> 2/3;
        // class 2: tp 1, truth 2, pred 2 -> 1/3
        assert_eq!(s.iou_per_class, vec![0.5, 2.0 / 3.0, 1.0 / 3.0]);
        assert_eq!(s.dice_per_class, vec![2.0 / 3.0, 0.8, 0.5]);
        assert!(matches!(
            ConfusionMatrix::from_class_maps(&[3u8], &[0u8], 3, None),
            Err(Error::ClassOutOfRange { class: 3, .. })
        ));
    }

    #[test]
    fn two_aggregations_differ_as_computed_by_hand() {
        // image 0: 2 pixels both cell, predicted right. image 1: 2 pixels, one cell one membrane,
        // both predicted cell.
        let prob = [0.9, 0.9, 0.9, 0.9];
        let labels = [255, 255, 255, 0];
        let s = stack_pixel_scores(&prob, &labels, 2, 1, 2, 0.5).unwrap();
        // per image: image 0 IoU [1 (absent), 1], image 1 IoU [0, 1/2]
        assert_eq!(s.mean_over_images.iou_per_class, vec![0.5, 0.75]);
        assert_eq!(s.mean_over_images.mean_iou, 0.625);
        // pooled: membrane tp 0, truth 1, pred 0 -> 0; cell tp 3, truth 3, pred 4 -> 3/4
        assert_eq!(s.pooled.iou_per_class, vec![0.0, 0.75]);
        assert_eq!(s.pooled.pixel_accuracy, 0.75);
        assert_eq!(s.mean_over_images.pixel_accuracy, 0.75);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            pixel_scores(&[0.5], &[0, 0], 0.5),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            pixel_scores(&[f32::NAN], &[0], 0.5),
            Err(Error::NanProbability { index: 0 })
        ));
        assert!(matches!(
            pixel_scores(&[0.1, 1.5], &[0, 0], 0.5),
            Err(Error::ProbabilityOutOfRange { index: 1, .. })
        ));
        assert!(matches!(
            pixel_scores(&[0.1], &[0], f64::NAN),
            Err(Error::InvalidThreshold { .. })
        ));
        assert!(ConfusionMatrix::new(0).is_err());
        let mut two = ConfusionMatrix::new(2).unwrap();
        assert!(two.merge(&ConfusionMatrix::new(3).unwrap()).is_err());
    }
}
