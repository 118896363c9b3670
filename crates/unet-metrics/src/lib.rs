//! Segmentation scores for U-Net on the ISBI 2012 EM data: the pixel scores the reference
//! reports (pixel accuracy, IoU, Dice) and the ISBI 2012 challenge's segmentation scores
//! (foreground-restricted V-Rand and V-Info after border thinning, leaderboard pixel error),
//! defined as the originals so the numbers can be compared.
//!
//! - [`pixel`]: [`ConfusionMatrix`], [`PixelScores`], [`pixel_scores`] (probability map against a
//!   0/255 label map, cell where `P > t`, strict), and the two stack aggregations
//!   ([`stack_pixel_scores`]: mean over images as the reference does, and pooled).
//! - [`classes`]: `K` classes: class maps of `u8` or `u16` class indices with an optional ignore
//!   value ([`ConfusionMatrix::from_class_maps`]), [`argmax_classes`] of per-class
//!   probabilities ([`ConfusionMatrix::from_class_probabilities`]), [`ClassScores`] (per-class
//!   accuracy, IoU and Dice, their means over the foreground classes; [`class_pixel_scores`])
//!   and V-Rand / V-Info of one instance class ([`instance_contingency`]).
//! - [`isbi`]: [`isbi_scores`], a Rust reimplementation of the challenge's Fiji scoring
//!   (Arganda-Carreras et al., Front. Neuroanat. 9:142, 2015; Fiji `Trainable_Segmentation`
//!   `RandError`, `VariationOfInformation`, `PixelError`, `WatershedTransform2D`), parallel over
//!   sections and thresholds.
//! - [`thinning`]: [`thin_borders`], Fiji's watershed border thinning, quirks included.
//! - [`segmentation`]: [`Contingency`], V-Rand and V-Info of one pair of label images.
//! - [`decision`]: [`sweep_decision_thresholds`] and [`best_decision_threshold`] choose where
//!   to cut a score map (logit margins or probabilities) from labelled data.
//! - [`report`]: [`score_stack`] computes everything into a [`ScoreReport`] with
//!   [`ScoreReport::to_json`].
//!
//! Stacks are `pages x height x width`, page-major then row-major; probabilities are `P(cell)`
//! in [0, 1] (NaN and values outside are typed errors); labels are 0 for membrane and > 0
//! (255 in ISBI) for cell.
//!
//! ```
//! use unet_metrics::{score_stack, ScoreOptions};
//!
//! // One 4 x 5 section: two cells separated by a membrane column.
//! let labels: Vec<u8> = [255, 255, 0, 255, 255].repeat(4);
//! // A prediction that is right except for one uncertain pixel in the membrane.
//! let mut prob: Vec<f32> = labels.iter().map(|&l| if l > 0 { 0.9 } else { 0.1 }).collect();
//! prob[7] = 0.55;
//! let report = score_stack(&prob, &labels, 1, 4, 5, &ScoreOptions::default()).unwrap();
//! assert_eq!(report.pixel_accuracy, 19.0 / 20.0);
//! // At t = 0.5 the two cells touch through pixel 7 and merge; at t = 0.6
//! // they are apart again and the segmentation is perfect.
//! assert_eq!(report.v_rand, 1.0);
//! assert_eq!(report.v_rand_threshold, 0.6);
//! assert!(report.to_json().contains("\"v_rand\": 1,"));
//! ```

pub mod classes;
pub mod decision;
pub mod error;
pub mod isbi;
pub mod labelling;
pub mod pixel;
pub mod report;
pub mod segmentation;
pub mod thinning;
mod validate;

pub use classes::{
    argmax_classes, class_pixel_scores, instance_contingency, ClassLabel, ClassScores,
};
pub use decision::{best_decision_threshold, sweep_decision_thresholds, ThresholdCandidate};
pub use error::{Error, Result};
pub use isbi::{
    fiji_thresholds, isbi_scores, section_scores, BestScore, IsbiOptions, IsbiReport,
    SegmentationScores, ThresholdScores,
};
pub use labelling::{label_components, Labelling};
pub use pixel::{pixel_scores, stack_pixel_scores, ConfusionMatrix, PixelScores, StackPixelScores};
pub use report::{score_stack, ScoreOptions, ScoreReport};
pub use segmentation::{Contingency, Entropies};
pub use thinning::thin_borders;
