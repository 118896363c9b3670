//! Everything at once: [`score_stack`] and its JSON-friendly [`ScoreReport`].

use std::fmt::Write as _;

use crate::error::Result;
use crate::isbi::{isbi_scores, IsbiOptions, IsbiReport};
use crate::pixel::{stack_pixel_scores, PixelScores};
use crate::validate::check_threshold;

/// Settings of [`score_stack`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOptions {
    /// Threshold of the pixel scores: cell where `P > pixel_threshold`.
    pub pixel_threshold: f64,
    /// Settings of the ISBI scores.
    pub isbi: IsbiOptions,
}

impl Default for ScoreOptions {
    /// Pixel threshold 0.5, [`IsbiOptions::default`].
    fn default() -> Self {
        Self {
            pixel_threshold: 0.5,
            isbi: IsbiOptions::default(),
        }
    }
}

/// Pixel and ISBI scores of a probability stack against its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreReport {
    /// Number of sections scored.
    pub sections: usize,
    /// Section height.
    pub height: usize,
    /// Section width.
    pub width: usize,
    /// Threshold of the pixel scores.
    pub pixel_threshold: f64,
    /// Pixel accuracy, the reference's aggregation (mean over sections).
    pub pixel_accuracy: f64,
    /// `1 - pixel_accuracy`.
    pub pixel_error: f64,
    /// `[membrane, cell]` IoU, mean over sections.
    pub iou_per_class: Vec<f64>,
    /// Mean over the two classes of `iou_per_class` (the reference's IoU).
    pub mean_iou: f64,
    /// Dice (F1) of the cell class, mean over sections.
    pub dice: f64,
    /// All pixel scores, mean over sections.
    pub pixel: PixelScores,
    /// All pixel scores pooled over every pixel of the stack.
    pub pixel_pooled: PixelScores,
    /// Leaderboard pixel error: `1 - max_t` pooled pixel F-score.
    pub isbi_pixel_error: f64,
    /// Threshold of the maximal pixel F-score.
    pub isbi_pixel_error_threshold: f64,
    /// Maximal mean V-Rand after thinning (the official score).
    pub v_rand: f64,
    /// Its threshold.
    pub v_rand_threshold: f64,
    /// Maximal mean V-Info after thinning (the official score).
    pub v_info: f64,
    /// Its threshold.
    pub v_info_threshold: f64,
    /// Maximal mean V-Rand without thinning, if computed.
    pub v_rand_unthinned: Option<f64>,
    /// Maximal mean V-Info without thinning, if computed.
    pub v_info_unthinned: Option<f64>,
    /// The full ISBI report (per threshold, per section).
    pub isbi: IsbiReport,
}

/// Computes pixel scores at `options.pixel_threshold` and the ISBI 2012 scores of `prob`
/// (P(cell) in [0, 1]) against `labels` (0 membrane, > 0 cell): `pages` sections of
/// `height x width`, page-major, row-major.
pub fn score_stack(
    prob: &[f32],
    labels: &[u8],
    pages: usize,
    height: usize,
    width: usize,
    options: &ScoreOptions,
) -> Result<ScoreReport> {
    check_threshold(options.pixel_threshold)?;
    let isbi = isbi_scores(prob, labels, pages, height, width, &options.isbi)?;
    let pixels = stack_pixel_scores(prob, labels, pages, height, width, options.pixel_threshold)?;
    let pixel = pixels.mean_over_images;
    Ok(ScoreReport {
        sections: pages,
        height,
        width,
        pixel_threshold: options.pixel_threshold,
        pixel_accuracy: pixel.pixel_accuracy,
        pixel_error: pixel.pixel_error,
        iou_per_class: pixel.iou_per_class.clone(),
        mean_iou: pixel.mean_iou,
        dice: pixel.dice_per_class[1],
        isbi_pixel_error: isbi.pixel_error.value,
        isbi_pixel_error_threshold: isbi.pixel_error.threshold,
        v_rand: isbi.thinned.v_rand.value,
        v_rand_threshold: isbi.thinned.v_rand.threshold,
        v_info: isbi.thinned.v_info.value,
        v_info_threshold: isbi.thinned.v_info.threshold,
        v_rand_unthinned: isbi.unthinned.as_ref().map(|u| u.v_rand.value),
        v_info_unthinned: isbi.unthinned.as_ref().map(|u| u.v_info.value),
        pixel,
        pixel_pooled: pixels.pooled,
        isbi,
    })
}

impl ScoreReport {
    /// The report as a JSON object: the flat scores, the pooled pixel scores and the scores per
    /// threshold (`null` for a score not computed or not finite).
    pub fn to_json(&self) -> String {
        let mut j = Json::default();
        j.open('{');
        j.field("sections", &self.sections.to_string());
        j.field("height", &self.height.to_string());
        j.field("width", &self.width.to_string());
        j.field("pixel_threshold", &num(self.pixel_threshold));
        j.field("pixel_accuracy", &num(self.pixel_accuracy));
        j.field("pixel_error", &num(self.pixel_error));
        j.field("iou_per_class", &nums(&self.iou_per_class));
        j.field("mean_iou", &num(self.mean_iou));
        j.field("dice", &num(self.dice));
        j.field("isbi_pixel_error", &num(self.isbi_pixel_error));
        j.field(
            "isbi_pixel_error_threshold",
            &num(self.isbi_pixel_error_threshold),
        );
        j.field("v_rand", &num(self.v_rand));
        j.field("v_rand_threshold", &num(self.v_rand_threshold));
        j.field("v_info", &num(self.v_info));
        j.field("v_info_threshold", &num(self.v_info_threshold));
        j.field("v_rand_unthinned", &opt(self.v_rand_unthinned));
        j.field("v_info_unthinned", &opt(self.v_info_unthinned));
        j.field(
            "v_rand_unthinned_threshold",
            &opt(self.isbi.unthinned.as_ref().map(|u| u.v_rand.threshold)),
        );
        j.field(
            "v_info_unthinned_threshold",
            &opt(self.isbi.unthinned.as_ref().map(|u| u.v_info.threshold)),
        );
        j.field("pixel_pooled", &pixel_json(&self.pixel_pooled));
        j.field("pixel_mean_over_sections", &pixel_json(&self.pixel));
        let thresholds: Vec<f64> = self
            .isbi
            .thinned
            .per_threshold
            .iter()
            .map(|s| s.threshold)
            .collect();
        j.field("thresholds", &nums(&thresholds));
        j.field(
            "pixel_f_score_per_threshold",
            &nums(&self.isbi.pixel_f_scores),
        );
        let per = |f: &dyn Fn(&crate::ThresholdScores) -> f64, s: &crate::SegmentationScores| {
            nums(&s.per_threshold.iter().map(f).collect::<Vec<_>>())
        };
        j.field(
            "v_rand_per_threshold",
            &per(&|s| s.v_rand, &self.isbi.thinned),
        );
        j.field(
            "v_info_per_threshold",
            &per(&|s| s.v_info, &self.isbi.thinned),
        );
        if let Some(u) = &self.isbi.unthinned {
            j.field("v_rand_unthinned_per_threshold", &per(&|s| s.v_rand, u));
            j.field("v_info_unthinned_per_threshold", &per(&|s| s.v_info, u));
        }
        j.close('}');
        j.out
    }
}

fn pixel_json(p: &PixelScores) -> String {
    let mut j = Json::default();
    j.open('{');
    j.field("pixel_accuracy", &num(p.pixel_accuracy));
    j.field("pixel_error", &num(p.pixel_error));
    j.field("iou_per_class", &nums(&p.iou_per_class));
    j.field("mean_iou", &num(p.mean_iou));
    j.field("dice_per_class", &nums(&p.dice_per_class));
    j.field("mean_dice", &num(p.mean_dice));
    j.close('}');
    j.out
}

/// A JSON number, or `null` when not finite (JSON has no NaN).
fn num(x: f64) -> String {
    if x.is_finite() {
        // Rust's shortest round-trip form never uses an exponent: valid JSON.
        format!("{x}")
    } else {
        "null".to_string()
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "null".to_string(), num)
}

fn nums(xs: &[f64]) -> String {
    let inner: Vec<String> = xs.iter().map(|&x| num(x)).collect();
    format!("[{}]", inner.join(", "))
}

/// A minimal writer for one flat JSON object.
#[derive(Default)]
struct Json {
    out: String,
    first: bool,
}

impl Json {
    fn open(&mut self, c: char) {
        self.out.push(c);
        self.first = true;
    }
    fn field(&mut self, key: &str, value: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        // Keys are our own identifiers: no escaping needed.
        let _ = write!(self.out, "\"{key}\": {value}");
    }
    fn close(&mut self, c: char) {
        self.out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_valid_json() {
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1.0), "1");
        assert_eq!(num(1e-7), "0.0000001");
        assert_eq!(num(f64::NAN), "null");
        assert_eq!(opt(None), "null");
        assert_eq!(nums(&[0.25, 1.0]), "[0.25, 1]");
    }

    #[test]
    fn report_fields_and_json() {
        // 2 sections of 1 x 7 (see isbi tests).
        let labels: Vec<u8> = [255, 255, 0, 0, 255, 255, 255].repeat(2);
        let prob: Vec<f32> = [0.9, 0.9, 0.3, 0.6, 0.9, 0.9, 0.9].repeat(2);
        let r = score_stack(&prob, &labels, 2, 1, 7, &ScoreOptions::default()).unwrap();
        assert_eq!(r.sections, 2);
        assert_eq!(r.v_rand, 1.0);
        assert_eq!(r.v_rand_threshold, 0.4);
        assert_eq!(r.pixel_accuracy, 6.0 / 7.0);
        // membrane: tp 1 (pixel 2), truth 2, predicted 1 -> 1/2; cell: 5 / 6
        assert_eq!(r.iou_per_class, vec![0.5, 5.0 / 6.0]);
        assert_eq!(r.dice, 10.0 / 11.0);
        let json = r.to_json();
        assert!(json.starts_with("{\"sections\": 2,"), "{json}");
        assert!(json.contains("\"v_rand\": 1,"), "{json}");
        assert!(json.contains("\"v_rand_threshold\": 0.4,"), "{json}");
        assert!(
            json.contains("\"iou_per_class\": [0.5, 0.8333333333333334],"),
            "{json}"
        );
        assert!(json.ends_with("]}"), "{json}");
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }
}
