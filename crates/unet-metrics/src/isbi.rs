//! The ISBI 2012 challenge scores of a probability stack: V-Rand and V-Info (thinned and
//! unthinned) and the leaderboard pixel error, over a range of thresholds.
//!
//! Per section and threshold `t`, as the challenge's Fiji script
//! (`getMaximalVRandAfterThinning(0.0, max, 0.1, true)`, `getMaximalVInfoAfterThinning`) does:
//! - truth segments: 4-connected components of the cell label (label > 0);
//! - proposal: the cell mask `P > t`, thinned by [`crate::thin_borders`] (or, unthinned, its
//!   4-connected components); proposal background pixels are singletons (see
//!   [`crate::Contingency`]);
//! - the scores are averaged over sections (Fiji's per-slice average, `perSliceAverage = true`),
//!   and the best threshold is the first one reaching the maximal mean (Fiji keeps a threshold
//!   only when its score is strictly larger).
//!
//! The leaderboard pixel error is `1 - max_t F`, where `F` is the pixel F-score with cell as
//! positive, its true/false positives and negatives pooled over all sections (Fiji's
//! `PixelError.getPrecisionRecallStats`).
//!
//! Thresholds: Fiji steps `th += 0.1` in `f64` while `th <= max`, so its thresholds are
//! `0.0, 0.1, 0.2, 0.30000000000000004, ..., 0.8999999999999999`; the published script passes
//! `max = 1.0` and so also evaluates `0.9999999999999999` (cell only where `P == 1`).
//! [`IsbiOptions::default`] uses the ten thresholds up to 0.9, [`IsbiOptions::fiji_script`]
//! the script's eleven. The comparison `P > t` is done in `f64`.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::labelling::label_into;
use crate::pixel::ConfusionMatrix;
use crate::segmentation::{Contingency, ContingencyScratch};
use crate::thinning::ThinningScratch;
use crate::validate::{check_stack, check_threshold};

/// Thresholds `min, min + step, ...` accumulated in `f64` as Fiji's loops do, while `<= max`.
pub fn fiji_thresholds(min: f64, max: f64, step: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if step.is_nan() || step <= 0.0 || !min.is_finite() || !max.is_finite() {
        return out;
    }
    let mut th = min;
    while th <= max {
        out.push(th);
        th += step;
    }
    out
}

/// Settings of the ISBI scores.
#[derive(Debug, Clone, PartialEq)]
pub struct IsbiOptions {
    /// Thresholds on `P(cell)`; a pixel is cell when `P > t`.
    pub thresholds: Vec<f64>,
    /// Also compute V-Rand and V-Info without border thinning.
    pub unthinned: bool,
}

impl Default for IsbiOptions {
    /// Thresholds 0.0, 0.1, ..., 0.9 (Fiji-accumulated), thinned and unthinned.
    fn default() -> Self {
        Self {
            thresholds: fiji_thresholds(0.0, 0.9, 0.1),
            unthinned: true,
        }
    }
}

impl IsbiOptions {
    /// Exactly the challenge script's thresholds: 0.0 up to 0.9999999999999999 (11 values).
    pub fn fiji_script() -> Self {
        Self {
            thresholds: fiji_thresholds(0.0, 1.0, 0.1),
            unthinned: true,
        }
    }
}

/// Scores of all sections at one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdScores {
    /// The threshold.
    pub threshold: f64,
    /// V-Rand averaged over sections.
    pub v_rand: f64,
    /// V-Info averaged over sections.
    pub v_info: f64,
    /// V-Rand per section.
    pub v_rand_per_section: Vec<f64>,
    /// V-Info per section.
    pub v_info_per_section: Vec<f64>,
}

/// A best score and the threshold that gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestScore {
    /// The score.
    pub value: f64,
    /// The first threshold reaching it.
    pub threshold: f64,
}

/// V-Rand and V-Info of one kind of proposal (thinned or not) over all thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationScores {
    /// Scores per threshold, in the order of [`IsbiOptions::thresholds`].
    pub per_threshold: Vec<ThresholdScores>,
    /// Maximal mean V-Rand over the thresholds.
    pub v_rand: BestScore,
    /// Maximal mean V-Info over the thresholds.
    pub v_info: BestScore,
}

/// The ISBI 2012 scores of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct IsbiReport {
    /// With border thinning: the official scores.
    pub thinned: SegmentationScores,
    /// Without thinning, when asked for.
    pub unthinned: Option<SegmentationScores>,
    /// Pixel F-score (cell positive, pooled over sections) per threshold.
    pub pixel_f_scores: Vec<f64>,
    /// `1 - max F` and the threshold of the maximum: the leaderboard's pixel error.
    pub pixel_error: BestScore,
}

/// Scores of one section at one threshold.
#[derive(Debug, Clone, Copy)]
struct Cell {
    thinned: (f64, f64),
    unthinned: Option<(f64, f64)>,
    confusion: [u64; 4],
}

/// The truth of one section: segment labels and sizes.
struct Truth {
    labels: Vec<u32>,
    sizes: Vec<u64>,
}

#[derive(Default)]
struct Scratch {
    mask: Vec<bool>,
    proposal: Vec<u32>,
    thinning: ThinningScratch,
    contingency: ContingencyScratch,
}

/// Computes the ISBI 2012 scores of `prob_stack` (P(cell) in [0, 1]) against `label_stack`
/// (0 = membrane, > 0 = cell): `pages` sections of `height x width`, page-major, row-major.
/// Parallel over sections and thresholds.
pub fn isbi_scores(
    prob_stack: &[f32],
    label_stack: &[u8],
    pages: usize,
    height: usize,
    width: usize,
    options: &IsbiOptions,
) -> Result<IsbiReport> {
    check_stack(prob_stack, label_stack, pages, height, width)?;
    if options.thresholds.is_empty() {
        return Err(Error::NoThresholds);
    }
    for &t in &options.thresholds {
        check_threshold(t)?;
    }
    let page = height * width;

    let truths: Vec<Truth> = label_stack
        .par_chunks(page)
        .map(|labels| {
            let mask: Vec<bool> = labels.iter().map(|&l| l > 0).collect();
            let mut segments = vec![0u32; page];
            let count = label_into(&mask, width, &mut segments, &mut Vec::new());
            let mut sizes = vec![0u64; count as usize + 1];
            for &s in &segments {
                sizes[s as usize] += 1;
            }
            Truth {
                labels: segments,
                sizes,
            }
        })
        .collect();
    if let Some(section) = truths.iter().position(|t| t.sizes.len() <= 1) {
        return Err(Error::NoTruthForeground { section });
    }

    let n_thresholds = options.thresholds.len();
    let cells: Vec<Cell> = (0..pages * n_thresholds)
        .into_par_iter()
        .map_init(Scratch::default, |scratch, job| {
            let (section, k) = (job / n_thresholds, job % n_thresholds);
            let prob = &prob_stack[section * page..(section + 1) * page];
            let labels = &label_stack[section * page..(section + 1) * page];
            score_cell(
                scratch,
                prob,
                labels,
                &truths[section],
                options.thresholds[k],
                width,
                height,
                options.unthinned,
            )
        })
        .collect();

    let collect = |pick: &dyn Fn(&Cell) -> (f64, f64)| -> SegmentationScores {
        let per_threshold: Vec<ThresholdScores> = options
            .thresholds
            .iter()
            .enumerate()
            .map(|(k, &threshold)| {
                let (v_rand_per_section, v_info_per_section): (Vec<f64>, Vec<f64>) = (0..pages)
                    .map(|s| pick(&cells[s * n_thresholds + k]))
                    .unzip();
                ThresholdScores {
                    threshold,
                    v_rand: v_rand_per_section.iter().sum::<f64>() / pages as f64,
                    v_info: v_info_per_section.iter().sum::<f64>() / pages as f64,
                    v_rand_per_section,
                    v_info_per_section,
                }
            })
            .collect();
        let v_rand = best(per_threshold.iter().map(|s| (s.threshold, s.v_rand)));
        let v_info = best(per_threshold.iter().map(|s| (s.threshold, s.v_info)));
        SegmentationScores {
            per_threshold,
            v_rand,
            v_info,
        }
    };
    let thinned = collect(&|c| c.thinned);
    let unthinned = options
        .unthinned
        .then(|| collect(&|c| c.unthinned.expect("computed when asked for")));

    let pixel_f_scores: Vec<f64> = (0..n_thresholds)
        .map(|k| {
            let mut pooled = ConfusionMatrix::new(2).expect("two classes");
            for s in 0..pages {
                let c = cells[s * n_thresholds + k].confusion;
                let m = ConfusionMatrix::from_binary_counts(c);
                pooled.merge(&m).expect("same class count");
            }
            pooled.fiji_f_score(1)
        })
        .collect();
    let best_f = best(
        options
            .thresholds
            .iter()
            .copied()
            .zip(pixel_f_scores.iter().copied()),
    );
    Ok(IsbiReport {
        thinned,
        unthinned,
        pixel_f_scores,
        pixel_error: BestScore {
            value: 1.0 - best_f.value,
            threshold: best_f.threshold,
        },
    })
}

/// The first maximum, as Fiji's `if (score > best)` loops starting from 0 find it.
fn best(scores: impl Iterator<Item = (f64, f64)>) -> BestScore {
    let mut out = BestScore {
        value: 0.0,
        threshold: f64::NAN,
    };
    for (threshold, value) in scores {
        if out.threshold.is_nan() {
            out.threshold = threshold;
        }
        if value > out.value {
            out = BestScore { value, threshold };
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn score_cell(
    scratch: &mut Scratch,
    prob: &[f32],
    labels: &[u8],
    truth: &Truth,
    threshold: f64,
    width: usize,
    height: usize,
    unthinned: bool,
) -> Cell {
    let page = prob.len();
    scratch.mask.clear();
    scratch
        .mask
        .extend(prob.iter().map(|&p| f64::from(p) > threshold));
    let mut confusion = [0u64; 4];
    for (&m, &l) in scratch.mask.iter().zip(labels) {
        confusion[usize::from(l > 0) * 2 + usize::from(m)] += 1;
    }
    scratch.proposal.resize(page, 0);
    scratch
        .thinning
        .thin(&scratch.mask, height, width, &mut scratch.proposal);
    let count = scratch.proposal.iter().copied().max().unwrap_or(0);
    let c = scratch
        .contingency
        .count(&truth.labels, &truth.sizes, &scratch.proposal, count);
    let thinned = (c.v_rand(), c.v_info());
    let unthinned = unthinned.then(|| {
        // The thinning labelled the cell components already: they are the unthinned proposal.
        let components = scratch.thinning.cell_components();
        let count = components.iter().copied().max().unwrap_or(0);
        let c: Contingency =
            scratch
                .contingency
                .count(&truth.labels, &truth.sizes, components, count);
        (c.v_rand(), c.v_info())
    });
    Cell {
        thinned,
        unthinned,
        confusion,
    }
}

/// V-Rand and V-Info of one section at one threshold (truth: 0 = membrane, > 0 = cell).
/// `thinned` selects the official border thinning.
pub fn section_scores(
    prob: &[f32],
    labels: &[u8],
    height: usize,
    width: usize,
    threshold: f64,
    thinned: bool,
) -> Result<(f64, f64)> {
    let options = IsbiOptions {
        thresholds: vec![threshold],
        unthinned: !thinned,
    };
    let report = isbi_scores(prob, labels, 1, height, width, &options)?;
    let scores = if thinned {
        &report.thinned
    } else {
        report.unthinned.as_ref().expect("asked for")
    };
    let s = &scores.per_threshold[0];
    Ok((s.v_rand, s.v_info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiji_threshold_accumulation() {
        let t = fiji_thresholds(0.0, 0.9, 0.1);
        assert_eq!(t.len(), 10);
        assert_eq!(t[3], 0.30000000000000004);
        assert_eq!(t[9], 0.8999999999999999);
        let script = IsbiOptions::fiji_script().thresholds;
        assert_eq!(script.len(), 11);
        assert_eq!(script[10], 0.9999999999999999);
    }

    /// 1 x 7 section: truth cells at 0..=1 and 4..=6, membrane at 2..=3.
    fn section() -> (Vec<f32>, Vec<u8>) {
        let labels = vec![255, 255, 0, 0, 255, 255, 255];
        let prob = vec![0.9, 0.9, 0.3, 0.6, 0.9, 0.9, 0.9];
        (prob, labels)
    }

    #[test]
    fn merge_at_low_threshold_split_at_high() {
        let (prob, labels) = section();
        // t = 0.5: proposal cells 0..=1 and 3..=6; membrane pixel 2 is a single-pixel border
        // between them and stays a line. Truth {0,1} and {4,5,6}: perfect on the foreground.
        let (vr, vi) = section_scores(&prob, &labels, 1, 7, 0.5, true).unwrap();
        assert_eq!(vr, 1.0);
        assert!((vi - 1.0).abs() < 1e-12);
        // t = 0.2: everything is cell: one segment merges both truth cells.
        // sum c^2 = 4 + 9, sum s^2 = 13, sum t^2 = 25 -> 26 / 38
        let (vr, vi) = section_scores(&prob, &labels, 1, 7, 0.2, true).unwrap();
        assert!((vr - 26.0 / 38.0).abs() < 1e-15);
        assert_eq!(vi, 0.0);
    }

    #[test]
    fn stack_report_picks_first_best_threshold_and_pixel_error() {
        let (prob, labels) = section();
        let options = IsbiOptions {
            thresholds: vec![0.2, 0.5, 0.55],
            unthinned: true,
        };
        let r = isbi_scores(&prob, &labels, 1, 1, 7, &options).unwrap();
        assert_eq!(r.thinned.v_rand.value, 1.0);
        assert_eq!(r.thinned.v_rand.threshold, 0.5);
        // Pixel F at 0.5: tp 5, fp 1 (pixel 3), fn 0 -> precision 5/6, recall 1 -> 10/11.
        assert!((r.pixel_f_scores[1] - 10.0 / 11.0).abs() < 1e-15);
        // At 0.2: tp 5, fp 2 -> precision 5/7 -> F = 10/12.
        assert!((r.pixel_f_scores[0] - 10.0 / 12.0).abs() < 1e-15);
        assert!((r.pixel_error.value - 1.0 / 11.0).abs() < 1e-15);
        assert_eq!(r.pixel_error.threshold, 0.5);
        // Unthinned at 0.5: components {0,1} and {3..6}; pixel 2 (truth membrane) ignored.
        let u = r.unthinned.unwrap();
        assert_eq!(u.per_threshold[1].v_rand, 1.0);
    }

    #[test]
    fn all_membrane_prediction_scores() {
        let labels = vec![255, 255, 0, 255, 255];
        let prob = vec![0.1; 5];
        let options = IsbiOptions {
            thresholds: vec![0.5],
            unthinned: true,
        };
        let r = isbi_scores(&prob, &labels, 1, 1, 5, &options).unwrap();
        // Thinned: no cell, so the membrane is one region over everything: a merge.
        // sum c^2 = 4 + 4, sum s^2 = 8, sum t^2 = 16 -> 16 / 24
        assert!((r.thinned.v_rand.value - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(r.thinned.v_info.value, 0.0);
        // Unthinned: 4 singletons: sum c^2 = 4, sum s^2 = 8, sum t^2 = 4 -> 8/12; V-Info:
        // H(S) = ln 2, H(T) = ln 4, I = ln 2 -> 2/3.
        let u = r.unthinned.unwrap();
        assert!((u.v_rand.value - 2.0 / 3.0).abs() < 1e-15);
        assert!((u.v_info.value - 2.0 / 3.0).abs() < 1e-12);
        // Pixel F: nothing predicted: precision 1 (no false positive), recall 0 -> F 0.
        assert_eq!(r.pixel_f_scores[0], 0.0);
        assert_eq!(r.pixel_error.value, 1.0);
    }

    #[test]
    fn typed_errors() {
        let o = IsbiOptions::default();
        assert!(matches!(
            isbi_scores(&[0.5; 4], &[0; 4], 1, 2, 2, &o),
            Err(Error::NoTruthForeground { section: 0 })
        ));
        assert!(matches!(
            isbi_scores(&[0.5; 3], &[255; 4], 1, 2, 2, &o),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            isbi_scores(&[0.5; 4], &[255; 4], 0, 2, 2, &o),
            Err(Error::Empty { .. })
        ));
        let none = IsbiOptions {
            thresholds: vec![],
            unthinned: false,
        };
        assert!(matches!(
            isbi_scores(&[0.5; 4], &[255; 4], 1, 2, 2, &none),
            Err(Error::NoThresholds)
        ));
        let bad = IsbiOptions {
            thresholds: vec![1.5],
            unthinned: false,
        };
        assert!(matches!(
            isbi_scores(&[0.5; 4], &[255; 4], 1, 2, 2, &bad),
            Err(Error::InvalidThreshold { .. })
        ));
    }
}
