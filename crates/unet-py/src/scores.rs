//! `unet_rs.scores`: pixel and ISBI 2012 scores through `unet_metrics`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use unet_metrics::{score_stack, IsbiOptions, ScoreOptions, ScoreReport, SegmentationScores};

use crate::convert::{check_binary, check_shape, read_f32, read_labels, unravel};
use crate::weights::parse_name;

/// How the V-Rand and V-Info segmentations are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinning {
    /// The challenge's Fiji watershed thinning of the borders (the official scores).
    Fiji,
    /// No thinning.
    None,
}

const THINNINGS: [(&str, Thinning); 2] = [("fiji", Thinning::Fiji), ("none", Thinning::None)];

/// Pixel accuracy, IoU and Dice at one threshold, and the ISBI 2012 challenge's V-Rand and
/// V-Info (foreground-restricted, as the challenge's Fiji script) at every threshold and the
/// best of them.
///
/// Args:
///     prob: P(cell) in [0, 1], one section (H, W) or a stack (N, H, W); any numeric dtype.
///     labels: the truth, the same shape, binary: 0 for membrane, one value (255 or 1) for
///         cell. Each section needs cell pixels (V-Rand and V-Info are restricted to them).
///     thresholds: the thresholds of V-Rand and V-Info (cell where P > t), each in [0, 1];
///         None for the challenge's 0.0, 0.1, ..., 0.9.
///     thinning: "fiji" (the challenge's border thinning before V-Rand / V-Info, the official
///         scores) or "none".
///     pixel_threshold: the threshold of the pixel scores (cell where P > t).
///
/// Returns:
///     dict with "pixel_accuracy", "pixel_error", "iou" (mean over the two classes, the
///     reference's IoU), "iou_per_class" ([membrane, cell]), "dice" (of the cell class),
///     "pixel_threshold" (pixel scores are the mean over sections), "v_rand", "v_info" (the
///     best over thresholds, mean over sections) with "v_rand_threshold",
///     "v_info_threshold", "thresholds", "v_rand_per_threshold", "v_info_per_threshold",
///     "v_rand_per_section", "v_info_per_section" (at the best thresholds),
///     "isbi_pixel_error" (1 - the best pooled pixel F-score), "thinning", "sections".
///
/// Raises:
///     ValueError: shapes that differ or are not 2-D / 3-D, empty arrays, NaN or
///         probabilities outside [0, 1], labels that are not binary, a section without cell
///         pixels, thresholds outside [0, 1] or none, an unknown thinning.
///     TypeError: arrays that do not hold numbers.
#[pyfunction]
#[pyo3(signature = (prob, labels, thresholds=None, thinning="fiji", pixel_threshold=0.5))]
pub fn scores<'py>(
    py: Python<'py>,
    prob: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    thresholds: Option<Vec<f64>>,
    thinning: &str,
    pixel_threshold: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let thinning = parse_name(thinning, "thinning", &THINNINGS).map_err(PyValueError::new_err)?;
    let (prob, shape) = read_f32(prob, "prob")?;
    check_shape(
        &shape,
        &[2, 3],
        "prob",
        "one section (H, W) or a stack (N, H, W)",
    )?;
    let (labels, label_shape) = read_labels(labels, "labels")?;
    if label_shape != shape {
        return Err(PyValueError::new_err(format!(
            "labels have shape {label_shape:?}, prob {shape:?}: they must be the same"
        )));
    }
    check_binary(&labels, "labels")?;
    // NaN is named here with its pixel; the library names its flat index.
    if let Some(i) = prob.iter().position(|p| p.is_nan()) {
        return Err(PyValueError::new_err(format!(
            "prob is NaN at {:?}",
            unravel(i, &shape)
        )));
    }
    let (pages, height, width) = match shape[..] {
        [h, w] => (1, h, w),
        [n, h, w] => (n, h, w),
        _ => unreachable!("checked above"),
    };
    let options = ScoreOptions {
        pixel_threshold,
        isbi: IsbiOptions {
            thresholds: thresholds.unwrap_or_else(|| IsbiOptions::default().thresholds),
            unthinned: thinning == Thinning::None,
        },
    };
    let report = py
        .detach(move || score_stack(&prob, &labels, pages, height, width, &options))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    report_dict(py, &report, thinning)
}

fn report_dict<'py>(
    py: Python<'py>,
    report: &ScoreReport,
    thinning: Thinning,
) -> PyResult<Bound<'py, PyDict>> {
    let segmentation: &SegmentationScores = match thinning {
        Thinning::Fiji => &report.isbi.thinned,
        Thinning::None => report
            .isbi
            .unthinned
            .as_ref()
            .expect("unthinned scores were asked for"),
    };
    let d = PyDict::new(py);
    d.set_item("sections", report.sections)?;
    d.set_item("pixel_threshold", report.pixel_threshold)?;
    d.set_item("pixel_accuracy", report.pixel_accuracy)?;
    d.set_item("pixel_error", report.pixel_error)?;
    d.set_item("iou", report.mean_iou)?;
    d.set_item("iou_per_class", report.iou_per_class.clone())?;
    d.set_item("dice", report.dice)?;
    d.set_item("isbi_pixel_error", report.isbi_pixel_error)?;
    d.set_item(
        "thinning",
        match thinning {
            Thinning::Fiji => "fiji",
            Thinning::None => "none",
        },
    )?;
    d.set_item("v_rand", segmentation.v_rand.value)?;
    d.set_item("v_rand_threshold", segmentation.v_rand.threshold)?;
    d.set_item("v_info", segmentation.v_info.value)?;
    d.set_item("v_info_threshold", segmentation.v_info.threshold)?;
    let per = &segmentation.per_threshold;
    d.set_item(
        "thresholds",
        per.iter().map(|s| s.threshold).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "v_rand_per_threshold",
        per.iter().map(|s| s.v_rand).collect::<Vec<_>>(),
    )?;
    d.set_item(
        "v_info_per_threshold",
        per.iter().map(|s| s.v_info).collect::<Vec<_>>(),
    )?;
    let at = |t: f64| per.iter().find(|s| s.threshold == t);
    if let Some(best) = at(segmentation.v_rand.threshold) {
        d.set_item("v_rand_per_section", best.v_rand_per_section.clone())?;
    }
    if let Some(best) = at(segmentation.v_info.threshold) {
        d.set_item("v_info_per_section", best.v_info_per_section.clone())?;
    }
    Ok(d)
}
