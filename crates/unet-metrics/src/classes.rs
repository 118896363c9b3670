//! Scores over `K` classes: class maps (`u8` or `u16` class indices `0..K`, with an optional
//! ignore value), the argmax of per-class probabilities, per-class scores ([`ClassScores`]) and
//! V-Rand / V-Info of one instance class ([`instance_contingency`]).
//!
//! Conventions:
//! - class 0 is the background; the foreground classes are `1..K`, and the foreground means
//!   average over them (NaN for `K = 1`, which has none);
//! - a truth pixel equal to the ignore value is left out of every count and score; a predicted
//!   class and a truth class other than the ignore value must lie below `K`;
//! - per-class accuracy is the recall of the class, `tp / (tp + fn)`; a class absent from both
//!   truth and prediction scores 1 in accuracy, IoU and Dice, and a class absent from the truth
//!   but predicted scores 0 (see [`ConfusionMatrix::accuracy`]);
//! - with `K = 2`, the binary scores of [`crate::pixel`] and [`crate::isbi`] are the special
//!   case: probabilities `[1 - p, p]` give the same confusion matrix as `p > 0.5`, and instance
//!   class 1 the same V-Rand / V-Info as the unthinned ISBI scores.

use crate::error::{Error, Result};
use crate::labelling::label_into;
use crate::pixel::ConfusionMatrix;
use crate::segmentation::Contingency;
use crate::validate::{check_class_count, check_finite, check_stack_shape};

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
}

/// The pixel type of a class map: `u8` or `u16` class indices.
pub trait ClassLabel: Copy + PartialEq + Send + Sync + sealed::Sealed {
    /// The class index as a `usize`.
    fn index(self) -> usize;
}

impl ClassLabel for u8 {
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl ClassLabel for u16 {
    fn index(self) -> usize {
        usize::from(self)
    }
}

/// Checks that every predicted value, and every truth value other than `ignore`, is below
/// `n_classes`; both maps have the same length.
pub(crate) fn check_class_maps<P: ClassLabel, T: ClassLabel>(
    predicted: &[P],
    truth: &[T],
    n_classes: usize,
    ignore: Option<T>,
) -> Result<()> {
    for (index, (&p, &t)) in predicted.iter().zip(truth).enumerate() {
        if Some(t) != ignore && t.index() >= n_classes {
            return Err(Error::ClassOutOfRange {
                what: "truth",
                index,
                class: t.index(),
                n_classes,
            });
        }
        if p.index() >= n_classes {
            return Err(Error::ClassOutOfRange {
                what: "predicted",
                index,
                class: p.index(),
                n_classes,
            });
        }
    }
    Ok(())
}

/// The class of highest score per pixel. `probs` holds `n_classes` planes of equal size,
/// class-major (the net's output with the channel axis first: `probs[c * pixels + i]` is class
/// `c` at pixel `i`); probabilities or logits give the same classes. Ties go to the lowest
/// class index. Errors: a class count outside `1..=65536`, a length that is not a multiple of
/// `n_classes` ([`Error::ClassPlanes`]), a NaN or infinite value ([`Error::NonFiniteScore`],
/// with its flat index in `probs`).
///
/// ```
/// // Three pixels, two classes: planes [0.9, 0.5, 0.2] and [0.1, 0.5, 0.8].
/// let classes = unet_metrics::argmax_classes(&[0.9, 0.5, 0.2, 0.1, 0.5, 0.8], 2).unwrap();
/// assert_eq!(classes, vec![0, 0, 1]); // the tie at pixel 1 goes to class 0
/// ```
pub fn argmax_classes(probs: &[f32], n_classes: usize) -> Result<Vec<u16>> {
    check_class_count(n_classes)?;
    if !probs.len().is_multiple_of(n_classes) {
        return Err(Error::ClassPlanes {
            len: probs.len(),
            n_classes,
        });
    }
    check_finite(probs)?;
    let pixels = probs.len() / n_classes;
    let mut best = probs[..pixels].to_vec();
    let mut classes = vec![0u16; pixels];
    for (class, plane) in probs.chunks_exact(pixels.max(1)).enumerate().skip(1) {
        let class = u16::try_from(class).expect("class count checked");
        for ((b, k), &v) in best.iter_mut().zip(&mut classes).zip(plane) {
            if v > *b {
                *b = v;
                *k = class;
            }
        }
    }
    Ok(classes)
}

/// Scores of a `K`-class segmentation (see the [module docs](self) for the conventions).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScores {
    /// Fraction of the counted (not ignored) pixels whose predicted class is the true one.
    pub pixel_accuracy: f64,
    /// Per-class accuracy (recall: the fraction of the class's truth pixels predicted as it),
    /// index = class.
    pub accuracy_per_class: Vec<f64>,
    /// IoU per class, index = class.
    pub iou_per_class: Vec<f64>,
    /// Dice (F1) per class, index = class.
    pub dice_per_class: Vec<f64>,
    /// Mean of `accuracy_per_class` over the foreground classes `1..K` (NaN for `K = 1`).
    pub mean_foreground_accuracy: f64,
    /// Mean of `iou_per_class` over the foreground classes `1..K` (NaN for `K = 1`).
    pub mean_foreground_iou: f64,
    /// Mean of `dice_per_class` over the foreground classes `1..K` (NaN for `K = 1`).
    pub mean_foreground_dice: f64,
}

impl ClassScores {
    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.iou_per_class.len()
    }
}

/// [`ClassScores`] of a predicted class map against a truth class map (see
/// [`ConfusionMatrix::from_class_maps`] for the inputs and errors). To score a stack, merge
/// the images' matrices ([`ConfusionMatrix::merge`]) and call
/// [`ConfusionMatrix::class_scores`].
///
/// ```
/// let truth: [u8; 6] = [0, 1, 2, 2, 1, 255];
/// let predicted: [u8; 6] = [0, 1, 2, 1, 1, 2];
/// let s = unet_metrics::class_pixel_scores(&predicted, &truth, 3, Some(255)).unwrap();
/// assert_eq!(s.pixel_accuracy, 0.8);
/// // class 1: tp 2, truth 2, predicted 3; class 2: tp 1, truth 2, predicted 1
/// assert_eq!(s.iou_per_class, vec![1.0, 2.0 / 3.0, 0.5]);
/// assert_eq!(s.mean_foreground_iou, (2.0 / 3.0 + 0.5) / 2.0);
/// ```
pub fn class_pixel_scores<P: ClassLabel, T: ClassLabel>(
    predicted: &[P],
    truth: &[T],
    n_classes: usize,
    ignore: Option<T>,
) -> Result<ClassScores> {
    Ok(ConfusionMatrix::from_class_maps(predicted, truth, n_classes, ignore)?.class_scores())
}

/// The contingency of the instances of `instance_class` in a truth and a predicted class map
/// (`height x width`, row-major), for V-Rand and V-Info ([`Contingency::v_rand`],
/// [`Contingency::v_info`]).
///
/// Instances are the 4-connected components of `class == instance_class`, in the truth and in
/// the prediction (e.g. [`argmax_classes`]). As in the binary ISBI scores, where the instance
/// class plays "cell" and every other class "membrane": the scores are restricted to the
/// truth's instance pixels; predicted non-instance pixels there count as singletons; truth
/// pixels equal to `ignore` are left out as truth background is, and the predicted components
/// are labelled over the whole image. No border thinning: with two classes, instance class 1
/// and the prediction `p > 0.5`, this gives the unthinned V-Rand and V-Info of
/// [`crate::section_scores`].
///
/// Errors: the inputs' sizes, classes as in [`ConfusionMatrix::from_class_maps`],
/// [`Error::InstanceClassOutOfRange`], and [`Error::NoTruthInstances`] when the truth has no
/// pixel of the instance class.
///
/// ```
/// // 1 x 5: truth instances {0, 1} and {3, 4} of class 2; the prediction merges them.
/// let truth: [u8; 5] = [2, 2, 1, 2, 2];
/// let predicted: [u8; 5] = [2, 2, 2, 2, 2];
/// let c = unet_metrics::instance_contingency(&predicted, &truth, 1, 5, 3, 2, None).unwrap();
/// // sum c^2 = 8, sum s^2 = 8, sum t^2 = 16 -> V-Rand = 16 / 24
/// assert_eq!(c.v_rand(), 2.0 / 3.0);
/// ```
pub fn instance_contingency<P: ClassLabel, T: ClassLabel>(
    predicted: &[P],
    truth: &[T],
    height: usize,
    width: usize,
    n_classes: usize,
    instance_class: usize,
    ignore: Option<T>,
) -> Result<Contingency> {
    check_stack_shape(
        "predicted class map",
        predicted.len(),
        truth.len(),
        1,
        height,
        width,
    )?;
    check_class_count(n_classes)?;
    check_class_maps(predicted, truth, n_classes, ignore)?;
    if instance_class >= n_classes {
        return Err(Error::InstanceClassOutOfRange {
            class: instance_class,
            n_classes,
        });
    }
    let label = |mask: Vec<bool>| {
        let mut labels = vec![0u32; mask.len()];
        let count = label_into(&mask, width, &mut labels, &mut Vec::new());
        (labels, count)
    };
    let (truth_labels, truth_count) = label(
        truth
            .iter()
            .map(|&t| Some(t) != ignore && t.index() == instance_class)
            .collect(),
    );
    if truth_count == 0 {
        return Err(Error::NoTruthInstances {
            class: instance_class,
        });
    }
    let (predicted_labels, _) = label(
        predicted
            .iter()
            .map(|&p| p.index() == instance_class)
            .collect(),
    );
    Contingency::new(&truth_labels, &predicted_labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::pixel_scores;

    #[test]
    fn argmax_ties_go_to_the_lowest_class() {
        // 2 pixels, 3 classes; pixel 0: [0.3, 0.3, 0.3], pixel 1: [0.1, 0.4, 0.4].
        let probs = [0.3, 0.1, 0.3, 0.4, 0.3, 0.4];
        assert_eq!(argmax_classes(&probs, 3).unwrap(), vec![0, 1]);
        // Logits work as well, negative ones included.
        assert_eq!(
            argmax_classes(&[-2.0, -1.0, -3.0, 5.0], 2).unwrap(),
            vec![0, 1]
        );
        assert_eq!(argmax_classes(&[], 4).unwrap(), Vec::<u16>::new());
        assert_eq!(argmax_classes(&[0.2, 0.9], 1).unwrap(), vec![0, 0]);
    }

    #[test]
    fn argmax_errors() {
        assert!(matches!(
            argmax_classes(&[0.1; 5], 2),
            Err(Error::ClassPlanes {
                len: 5,
                n_classes: 2
            })
        ));
        assert!(matches!(
            argmax_classes(&[0.1, f32::NAN], 1),
            Err(Error::NonFiniteScore { index: 1, .. })
        ));
        assert!(matches!(
            argmax_classes(&[0.1, f32::INFINITY], 2),
            Err(Error::NonFiniteScore { index: 1, .. })
        ));
        assert!(matches!(
            argmax_classes(&[0.1], 0),
            Err(Error::InvalidClassCount { n_classes: 0 })
        ));
        assert!(matches!(
            argmax_classes(&[], 65537),
            Err(Error::InvalidClassCount { n_classes: 65537 })
        ));
    }

    #[test]
    fn hand_computed_class_scores_with_ignore() {
        // truth:     0 0 1 1 1 2 9 9   (9 = ignore)
        // predicted: 0 1 1 1 0 1 2 0
        let truth: [u16; 8] = [0, 0, 1, 1, 1, 2, 9, 9];
        let predicted: [u16; 8] = [0, 1, 1, 1, 0, 1, 2, 0];
        let s = class_pixel_scores(&predicted, &truth, 3, Some(9)).unwrap();
        assert_eq!(s.n_classes(), 3);
        assert_eq!(s.pixel_accuracy, 3.0 / 6.0);
        // class 0: tp 1, truth 2, pred 2; class 1: tp 2, truth 3, pred 4; class 2: tp 0,
        // truth 1, pred 0 (the prediction 2 at pixel 6 is ignored).
        assert_eq!(s.accuracy_per_class, vec![0.5, 2.0 / 3.0, 0.0]);
        assert_eq!(s.iou_per_class, vec![1.0 / 3.0, 0.4, 0.0]);
        assert_eq!(s.dice_per_class, vec![0.5, 4.0 / 7.0, 0.0]);
        assert_eq!(s.mean_foreground_accuracy, 1.0 / 3.0);
        assert_eq!(s.mean_foreground_iou, 0.2);
        assert_eq!(s.mean_foreground_dice, 2.0 / 7.0);
    }

    #[test]
    fn absent_classes() {
        // Class 2 is absent from both: 1. Class 1 is predicted but absent from the truth: 0.
        let s = class_pixel_scores(&[0u8, 1], &[0u8, 0], 3, None).unwrap();
        assert_eq!(s.accuracy_per_class, vec![0.5, 0.0, 1.0]);
        assert_eq!(s.iou_per_class, vec![0.5, 0.0, 1.0]);
        assert_eq!(s.dice_per_class, vec![2.0 / 3.0, 0.0, 1.0]);
        // Everything ignored: every class is absent, every score 1.
        let s = class_pixel_scores(&[0u8, 1], &[7u8, 7], 2, Some(7)).unwrap();
        assert_eq!(s.pixel_accuracy, 1.0);
        assert_eq!(s.iou_per_class, vec![1.0, 1.0]);
        // One class: no foreground.
        let s = class_pixel_scores(&[0u8], &[0u8], 1, None).unwrap();
        assert!(s.mean_foreground_iou.is_nan());
    }

    #[test]
    fn ignore_may_be_a_class() {
        // Ignoring class 1 removes its truth pixels; its predictions elsewhere still count.
        let s = class_pixel_scores(&[1u8, 1, 0], &[1u8, 0, 0], 2, Some(1)).unwrap();
        assert_eq!(s.accuracy_per_class, vec![0.5, 0.0]);
    }

    #[test]
    fn class_map_errors_name_the_map_value_and_pixel() {
        let e = class_pixel_scores(&[0u8, 0], &[0u16, 300], 3, Some(255)).unwrap_err();
        assert_eq!(
            e,
            Error::ClassOutOfRange {
                what: "truth",
                index: 1,
                class: 300,
                n_classes: 3
            }
        );
        assert_eq!(
            e.to_string(),
            "truth class 300 at index 1 is not below the class count 3"
        );
        // A prediction out of range is an error even on an ignored pixel.
        assert!(matches!(
            class_pixel_scores(&[0u8, 3], &[0u8, 255], 3, Some(255)),
            Err(Error::ClassOutOfRange {
                what: "predicted",
                index: 1,
                class: 3,
                ..
            })
        ));
        assert!(matches!(
            class_pixel_scores(&[0u8], &[0u8, 0], 3, None),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            ConfusionMatrix::from_class_probabilities(&[0.5; 5], &[0u8, 0], 3, None),
            Err(Error::SizeMismatch {
                what: "class probabilities",
                expected: 6,
                actual: 5
            })
        ));
        assert!(matches!(
            ConfusionMatrix::from_class_probabilities(&[0.5, f32::NAN], &[0u8], 2, None),
            Err(Error::NonFiniteScore { index: 1, .. })
        ));
    }

    #[test]
    fn two_classes_match_the_binary_pixel_scores() {
        let prob = [0.9_f32, 0.5, 0.2, 0.7, 0.5000001, 0.4999999];
        let labels = [255_u8, 255, 0, 0, 255, 0];
        let binary = ConfusionMatrix::from_probabilities(&prob, &labels, 0.5).unwrap();
        let planes: Vec<f32> = prob.iter().map(|p| 1.0 - p).chain(prob).collect();
        let truth: Vec<u8> = labels.iter().map(|&l| u8::from(l > 0)).collect();
        let classes = ConfusionMatrix::from_class_probabilities(&planes, &truth, 2, None).unwrap();
        assert_eq!(classes, binary);
        let s = classes.class_scores();
        let b = pixel_scores(&prob, &labels, 0.5).unwrap();
        assert_eq!(s.iou_per_class, b.iou_per_class);
        assert_eq!(s.dice_per_class, b.dice_per_class);
        assert_eq!(s.pixel_accuracy, b.pixel_accuracy);
        assert_eq!(s.mean_foreground_dice, b.cell_dice().unwrap());
    }

    #[test]
    fn instance_scores_by_hand() {
        // 2 x 4, classes 0..3, instance class 1, ignore 9:
        // truth      1 1 0 1      predicted  1 1 1 1
        //            9 0 2 1                 1 2 2 0
        // Truth instances {0, 1} and {3, 7}; the ignored pixel 4 is truth background.
        // Predicted: one component {0, 1, 2, 3, 4}; pixel 7 (truth instance) is a singleton.
        let truth: [u8; 8] = [1, 1, 0, 1, 9, 0, 2, 1];
        let predicted: [u8; 8] = [1, 1, 1, 1, 1, 2, 2, 0];
        let c = instance_contingency(&predicted, &truth, 2, 4, 3, 1, Some(9)).unwrap();
        assert_eq!((c.n, c.singletons), (4, 1));
        // sum c^2 = 4 + 1 + 1 (singleton) = 6; sum s^2 = 8; sum t^2 = 9 + 1 = 10 -> 12 / 18
        assert_eq!(c.v_rand(), 2.0 / 3.0);
        // Ignoring nothing makes the 9 a class error.
        assert!(matches!(
            instance_contingency(&predicted, &truth, 2, 4, 3, 1, None),
            Err(Error::ClassOutOfRange {
                what: "truth",
                index: 4,
                class: 9,
                ..
            })
        ));
    }

    #[test]
    fn instance_errors() {
        let t: [u8; 4] = [0, 0, 1, 1];
        assert!(matches!(
            instance_contingency(&t, &t, 2, 2, 2, 2, None),
            Err(Error::InstanceClassOutOfRange {
                class: 2,
                n_classes: 2
            })
        ));
        assert!(matches!(
            instance_contingency(&t, &[0u8, 0, 0, 0], 2, 2, 2, 1, None),
            Err(Error::NoTruthInstances { class: 1 })
        ));
        assert!(matches!(
            instance_contingency(&t, &t, 1, 3, 2, 1, None),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            instance_contingency::<u8, u8>(&[], &[], 0, 3, 2, 1, None),
            Err(Error::Empty { .. })
        ));
    }
}
