//! The loss weight map w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)).

use rayon::prelude::*;

use crate::distance::{nearest_two_squared, squared_cap, Needed};
use crate::error::{check_shape, Error, Result};
use crate::labelling::{label_class_components, label_components, Components, Connectivity};
use crate::scratch;

/// The border term is computed exactly wherever it is at least this large; where it is smaller
/// it is set to 0, so every weight is within this (absolute) tolerance of the exact value.
pub const BORDER_TOLERANCE: f32 = 1e-6;

/// Which pixels receive the border term (with the `serde` feature: `"background"`,
/// `"all_pixels"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BorderTerm {
    /// Background (label 0) pixels only: the gaps between cells, as the paper intends.
    #[default]
    Background,
    /// Every pixel, cells included (inside a cell d1 = 0 and d2 is the distance to the next one).
    AllPixels,
}

/// The class-balancing term w_c(x), for the two classes background (label 0) and cell (> 0),
/// or for the K classes of a class-index image
/// ([`ValidWeightMapParams::class_weight_map`]), where "H * W" below counts only the pixels that
/// are not ignored (ignored pixels get weight 0 whatever this is).
///
/// A class that does not occur in a section gets weight 0; no pixel carries it, so the map never
/// shows it, and a section of one class only gets w_c = 1 under both balanced schemes.
///
/// With the `serde` feature: `"balanced"`, `"mean1"`, `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ClassWeight {
    /// `H * W / (pixels of the class)`, per section (the reference implementation's definition).
    #[default]
    Balanced,
    /// [`ClassWeight::Balanced`] divided by the number of classes present, so that w_c averages
    /// exactly 1 over the section.
    Mean1,
    /// w_c = 1 everywhere.
    None,
}

/// Settings of the weight map; [`Default`] gives the paper's values (w0 = 10, sigma = 5 px,
/// 4-connected cells, border term on the background, balanced classes).
///
/// With the `serde` feature it is (de)serialised field by field; a missing field takes its
/// [`Default`] value, so `{"class_weight": "none"}` is the paper's settings without class balance.
/// Deserialising does not validate: call [`WeightMapParams::validate`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct WeightMapParams {
    /// Height of the border term, w0 (>= 0; 0 switches it off).
    pub w0: f32,
    /// Width of the border term in pixels, sigma (> 0).
    pub sigma: f32,
    /// Which neighbours join foreground pixels into one cell.
    pub connectivity: Connectivity,
    /// Which pixels receive the border term.
    pub border_term: BorderTerm,
    /// The class-balancing term.
    pub class_weight: ClassWeight,
}

impl Default for WeightMapParams {
    fn default() -> Self {
        Self {
            w0: 10.0,
            sigma: 5.0,
            connectivity: Connectivity::Four,
            border_term: BorderTerm::Background,
            class_weight: ClassWeight::Balanced,
        }
    }
}

impl WeightMapParams {
    /// Checks every setting, giving the type that computes weight maps.
    pub fn validate(&self) -> Result<ValidWeightMapParams> {
        if !(self.w0.is_finite() && self.w0 >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "w0",
                value: self.w0,
                requirement: "must be finite and >= 0",
            });
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(Error::InvalidParameter {
                name: "sigma",
                value: self.sigma,
                requirement: "must be finite and > 0",
            });
        }
        // Beyond d2 = R the term is below the tolerance whatever d1 is, because
        // d1 + d2 >= d2: R^2 = 2 sigma^2 ln(w0 / tolerance).
        let ratio = f64::from(self.w0) / f64::from(BORDER_TOLERANCE);
        let max_squared = (ratio > 1.0).then(|| {
            let sigma = f64::from(self.sigma);
            squared_cap(2.0 * sigma * sigma * ratio.ln())
        });
        Ok(ValidWeightMapParams {
            params: *self,
            max_squared,
        })
    }
}

/// How to read a class-index label image: values `0..n_classes` are classes (0 the
/// background), and `ignore`, if set, marks pixels left out of the loss.
///
/// With the `serde` feature it is (de)serialised field by field; `ignore` may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ClassLabels {
    /// K, the number of classes, background included (1..=65536).
    pub n_classes: usize,
    /// A label value whose pixels get weight 0, are left out of the class counts and are
    /// neither background nor part of an instance. It may be any value, `>= K` or not.
    #[cfg_attr(feature = "serde", serde(default))]
    pub ignore: Option<u16>,
}

impl ClassLabels {
    /// The ISBI convention as class indices: 0 background, 1 cell, nothing ignored.
    pub const BINARY: Self = Self {
        n_classes: 2,
        ignore: None,
    };

    /// K classes, nothing ignored.
    pub fn new(n_classes: usize) -> Self {
        Self {
            n_classes,
            ignore: None,
        }
    }

    /// The class count, checked to be one a `u16` image can hold.
    fn checked_count(&self) -> Result<usize> {
        if (1..=MAX_CLASSES).contains(&self.n_classes) {
            Ok(self.n_classes)
        } else {
            Err(Error::InvalidClassCount {
                n_classes: self.n_classes,
            })
        }
    }
}

/// The most classes a 16-bit class-index image can hold.
const MAX_CLASSES: usize = 1 << 16;

/// Checked [`WeightMapParams`], ready to compute weight maps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidWeightMapParams {
    params: WeightMapParams,
    /// Squared distance beyond which the border term is below [`BORDER_TOLERANCE`]; `None` when
    /// the term is below it everywhere (w0 <= tolerance).
    max_squared: Option<u32>,
}

impl ValidWeightMapParams {
    /// The settings.
    pub fn params(&self) -> &WeightMapParams {
        &self.params
    }

    /// The distance R from the second-nearest cell beyond which the border term is below
    /// [`BORDER_TOLERANCE`] (0 when it is below it everywhere); each cell's distance transform
    /// covers its bounding box grown by R.
    pub fn border_reach(&self) -> f32 {
        self.max_squared
            .map_or(0.0, |squared| (squared as f32).sqrt())
    }

    /// The weight map of one label image (row-major, `height * width`, cell = label > 0).
    pub fn weight_map(&self, labels: &[u8], height: usize, width: usize) -> Result<Vec<f32>> {
        let mut weights = vec![0.0; labels.len()];
        self.weight_map_into(labels, height, width, &mut weights)?;
        Ok(weights)
    }

    /// [`ValidWeightMapParams::weight_map`] into a caller's buffer of `height * width` values,
    /// for loops that compute many maps.
    pub fn weight_map_into(
        &self,
        labels: &[u8],
        height: usize,
        width: usize,
        weights: &mut [f32],
    ) -> Result<()> {
        check_shape(weights.len(), 1, height, width)?;
        let components = label_components(labels, height, width, self.params.connectivity)?;
        self.fill_binary_weight_map(&components, weights);
        scratch::recycle(components.into_labels());
        Ok(())
    }

    /// The weight map of an already labelled image (the labelling's connectivity is used as is).
    pub fn weight_map_of(&self, components: &Components) -> Vec<f32> {
        let mut weights = vec![0.0; components.labels().len()];
        self.fill_binary_weight_map(components, &mut weights);
        weights
    }

    /// The weight maps of a stack of `pages` label images (page-major), computed in parallel
    /// over pages.
    pub fn weight_maps(
        &self,
        labels: &[u8],
        pages: usize,
        height: usize,
        width: usize,
    ) -> Result<Vec<f32>> {
        check_shape(labels.len(), pages, height, width)?;
        per_page(labels, height * width, |_, page_labels, page_weights| {
            self.weight_map_into(page_labels, height, width, page_weights)
        })
    }

    /// The weight map of a class-index image (row-major, `height * width`): labels `0..K` with
    /// 0 the background, K = `classes.n_classes`, and optionally an ignore value.
    ///
    /// w_c balances the K classes over the pixels that are not ignored (see [`ClassWeight`]).
    /// The border term's instances are the connected components of each foreground class
    /// ([`label_class_components`](crate::label_class_components)), and d1, d2 are distances to
    /// the two nearest instances of any class; with [`BorderTerm::Background`] only class-0
    /// pixels get the term. Ignored pixels get weight 0. A 0/1 image with K = 2 gives exactly
    /// [`ValidWeightMapParams::weight_map`] of the same image as 0/255.
    ///
    /// A value `>= K` other than the ignore value is [`Error::LabelOutOfRange`].
    ///
    /// ```
    /// use unet_weights::{ClassLabels, ClassWeight, WeightMapParams};
    ///
    /// // A class-1 and a class-2 cell touching, class 0 around them, 255 ignored.
    /// let labels: Vec<u16> = vec![0, 1, 2, 0, 255];
    /// let params = WeightMapParams { class_weight: ClassWeight::None, ..WeightMapParams::default() };
    /// let classes = ClassLabels { n_classes: 3, ignore: Some(255) };
    /// let weights = params.validate()?.class_weight_map(&labels, 1, 5, &classes)?;
    /// // Pixel 3 is 1 px from the class-2 cell and 2 px from the class-1 cell.
    /// let expected = 1.0 + 10.0 * (-9.0f32 / 50.0).exp();
    /// assert!((weights[3] - expected).abs() < 1e-5);
    /// assert_eq!((weights[1], weights[4]), (1.0, 0.0));
    /// # Ok::<(), unet_weights::Error>(())
    /// ```
    pub fn class_weight_map(
        &self,
        labels: &[u16],
        height: usize,
        width: usize,
        classes: &ClassLabels,
    ) -> Result<Vec<f32>> {
        let mut weights = vec![0.0; labels.len()];
        self.class_weight_map_into(labels, height, width, classes, &mut weights)?;
        Ok(weights)
    }

    /// [`ValidWeightMapParams::class_weight_map`] into a caller's buffer of `height * width`
    /// values.
    pub fn class_weight_map_into(
        &self,
        labels: &[u16],
        height: usize,
        width: usize,
        classes: &ClassLabels,
        weights: &mut [f32],
    ) -> Result<()> {
        check_shape(labels.len(), 1, height, width)?;
        check_shape(weights.len(), 1, height, width)?;
        let n_classes = classes.checked_count()?;
        let ignore = classes.ignore;
        // One pass both checks the values and counts the classes.
        let mut counts = vec![0usize; n_classes];
        for (index, &value) in labels.iter().enumerate() {
            if Some(value) == ignore {
                continue;
            }
            match counts.get_mut(usize::from(value)) {
                Some(count) => *count += 1,
                None => {
                    return Err(Error::LabelOutOfRange {
                        value,
                        n_classes,
                        page: 0,
                        row: index / width,
                        column: index % width,
                    })
                }
            }
        }
        let counted = counts.iter().sum();
        let table = self.class_weight_table(&counts, counted);
        let components =
            label_class_components(labels, height, width, self.params.connectivity, ignore)?;
        // Ignored pixels look up the table's last entry (weight 0, no border term).
        let class_of = |value: u16| {
            if Some(value) == ignore {
                n_classes
            } else {
                usize::from(value)
            }
        };
        self.fill_weight_map(&components, labels, class_of, &table, weights);
        scratch::recycle(components.into_labels());
        Ok(())
    }

    /// The class weight maps of a stack of `pages` class-index images (page-major), computed in
    /// parallel over pages; see [`ValidWeightMapParams::class_weight_map`].
    pub fn class_weight_maps(
        &self,
        labels: &[u16],
        pages: usize,
        height: usize,
        width: usize,
        classes: &ClassLabels,
    ) -> Result<Vec<f32>> {
        check_shape(labels.len(), pages, height, width)?;
        classes.checked_count()?;
        per_page(labels, height * width, |page, page_labels, page_weights| {
            self.class_weight_map_into(page_labels, height, width, classes, page_weights)
                .map_err(|error| match error {
                    Error::LabelOutOfRange {
                        value,
                        n_classes,
                        row,
                        column,
                        ..
                    } => Error::LabelOutOfRange {
                        value,
                        n_classes,
                        page,
                        row,
                        column,
                    },
                    other => other,
                })
        })
    }

    /// The binary weight map of a labelled image: class 0 where the component label is 0, class
    /// 1 elsewhere.
    fn fill_binary_weight_map(&self, components: &Components, weights: &mut [f32]) {
        let labels = components.labels();
        let cells = labels.par_iter().filter(|&&label| label != 0).count();
        let table = self.class_weight_table(&[labels.len() - cells, cells], labels.len());
        let class_of = |label: u32| usize::from(label != 0);
        self.fill_weight_map(components, labels, class_of, &table, weights);
    }

    /// w(x) from the instances, each pixel's class (`class_of(classes[i])`, an index into
    /// `table`, whose last entry is the ignored pixels') and the class weights.
    fn fill_weight_map<C: Copy + Sync>(
        &self,
        components: &Components,
        classes: &[C],
        class_of: impl Fn(C) -> usize + Sync,
        table: &[f32],
        weights: &mut [f32],
    ) {
        let ignored = table.len() - 1;
        let max_squared = self.max_squared.unwrap_or(0);
        let border = match self.max_squared {
            Some(max_squared) if components.count() >= 2 => {
                let needed = match self.params.border_term {
                    BorderTerm::Background => Needed::Background,
                    BorderTerm::AllPixels => Needed::All,
                };
                Some(nearest_two_squared(components, max_squared, needed))
            }
            _ => None,
        };
        let Some(border) = border else {
            weights
                .par_iter_mut()
                .zip(classes.par_iter())
                .for_each(|(weight, &class)| *weight = table[class_of(class)]);
            return;
        };
        let w0 = self.params.w0;
        let inverse_two_variance = 1.0 / (2.0 * self.params.sigma * self.params.sigma);
        let all_pixels = self.params.border_term == BorderTerm::AllPixels;
        const BLOCK: usize = 4096;
        weights
            .par_chunks_mut(BLOCK)
            .zip(classes.par_chunks(BLOCK))
            .zip(border.first.par_chunks(BLOCK))
            .zip(border.second.par_chunks(BLOCK))
            .for_each(|(((weights, classes), first), second)| {
                for (((weight, &class), &first), &second) in
                    weights.iter_mut().zip(classes).zip(first).zip(second)
                {
                    let class = class_of(class);
                    let class_weight = table[class];
                    let applies = class == 0 || (all_pixels && class != ignored);
                    *weight = if applies && second <= max_squared {
                        let sum = (first as f32).sqrt() + (second as f32).sqrt();
                        class_weight + w0 * (-sum * sum * inverse_two_variance).exp()
                    } else {
                        class_weight
                    };
                }
            });
        border.recycle();
    }

    /// w_c of each class from its pixel count (`counted` = pixels not ignored), then 0 for the
    /// ignored pixels.
    fn class_weight_table(&self, counts: &[usize], counted: usize) -> Vec<f32> {
        let present = counts.iter().filter(|&&count| count > 0).count();
        let balanced = |count: usize| {
            if count == 0 {
                0.0
            } else {
                counted as f64 / count as f64
            }
        };
        counts
            .iter()
            .map(|&count| match self.params.class_weight {
                ClassWeight::None => 1.0,
                ClassWeight::Balanced => balanced(count) as f32,
                ClassWeight::Mean1 => (balanced(count) / present as f64) as f32,
            })
            .chain([0.0])
            .collect()
    }
}

/// The weight map w(x) of one label image (row-major `height * width`, cell = label > 0).
pub fn weight_map(
    labels: &[u8],
    height: usize,
    width: usize,
    params: &WeightMapParams,
) -> Result<Vec<f32>> {
    params.validate()?.weight_map(labels, height, width)
}

/// The weight maps of a stack of `pages` label images (page-major), in parallel over pages.
pub fn weight_maps(
    labels: &[u8],
    pages: usize,
    height: usize,
    width: usize,
    params: &WeightMapParams,
) -> Result<Vec<f32>> {
    params.validate()?.weight_maps(labels, pages, height, width)
}

/// The weight map of one class-index image; see [`ValidWeightMapParams::class_weight_map`].
pub fn class_weight_map(
    labels: &[u16],
    height: usize,
    width: usize,
    classes: &ClassLabels,
    params: &WeightMapParams,
) -> Result<Vec<f32>> {
    params
        .validate()?
        .class_weight_map(labels, height, width, classes)
}

/// The weight maps of a stack of `pages` class-index images (page-major), in parallel over
/// pages; see [`ValidWeightMapParams::class_weight_map`].
pub fn class_weight_maps(
    labels: &[u16],
    pages: usize,
    height: usize,
    width: usize,
    classes: &ClassLabels,
    params: &WeightMapParams,
) -> Result<Vec<f32>> {
    params
        .validate()?
        .class_weight_maps(labels, pages, height, width, classes)
}

/// The weights of a stack, `fill(page, labels, weights)` run on each page in parallel.
fn per_page<T: Sync>(
    labels: &[T],
    page_len: usize,
    fill: impl Fn(usize, &[T], &mut [f32]) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let mut weights = vec![0.0; labels.len()];
    if page_len == 0 {
        return Ok(weights);
    }
    weights
        .par_chunks_mut(page_len)
        .zip(labels.par_chunks(page_len))
        .enumerate()
        .try_for_each(|(page, (page_weights, page_labels))| {
            fill(page, page_labels, page_weights)
        })?;
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::tests::brute_force_nearest_two;
    use proptest::prelude::*;

    fn unbalanced(border_term: BorderTerm) -> WeightMapParams {
        WeightMapParams {
            class_weight: ClassWeight::None,
            border_term,
            ..WeightMapParams::default()
        }
    }

    fn border(d1: f32, d2: f32) -> f32 {
        10.0 * (-(d1 + d2).powi(2) / 50.0).exp()
    }

    fn assert_close(actual: f32, expected: f32) {
        assert!(
            (actual - expected).abs() <= 1e-5 * expected.abs().max(1.0),
            "{actual} != {expected}"
        );
    }

    /// Two 4x4 squares in rows 3..7, columns 2..6 and 10..14 of a 10x20 image.
    fn two_squares() -> Vec<u8> {
        let mut labels = vec![0u8; 10 * 20];
        for row in 3..7 {
            labels[row * 20 + 2..row * 20 + 6].fill(255);
            labels[row * 20 + 10..row * 20 + 14].fill(255);
        }
        labels
    }

    #[test]
    fn two_squares_a_known_gap_apart() {
        let labels = two_squares();
        let weights = weight_map(&labels, 10, 20, &unbalanced(BorderTerm::Background)).unwrap();
        // Row 4 between the squares: column 5 is the last of the left one, 10 the first of the right.
        assert_close(weights[4 * 20 + 7], 1.0 + border(2.0, 3.0));
        assert_close(weights[4 * 20 + 8], 1.0 + border(2.0, 3.0));
        assert_close(weights[4 * 20 + 6], 1.0 + border(1.0, 4.0));
        // Above the gap: from (1, 7) the corners (3, 5) and (3, 10) are sqrt(8) and sqrt(13) away.
        assert_close(weights[20 + 7], 1.0 + border(8f32.sqrt(), 13f32.sqrt()));
        // Cell pixels have no border term by default ...
        assert_eq!(weights[4 * 20 + 3], 1.0);
        // ... but do with `AllPixels`: d1 = 0, d2 = 7 from column 3 to column 10.
        let all = weight_map(&labels, 10, 20, &unbalanced(BorderTerm::AllPixels)).unwrap();
        assert_close(all[4 * 20 + 3], 1.0 + border(0.0, 7.0));
        assert_close(all[4 * 20 + 7], weights[4 * 20 + 7]);
    }

    #[test]
    fn balanced_class_weights_are_inverse_frequencies() {
        let labels = two_squares();
        let params = WeightMapParams {
            w0: 0.0,
            ..WeightMapParams::default()
        };
        let weights = weight_map(&labels, 10, 20, &params).unwrap();
        // 32 cell pixels and 168 background pixels out of 200.
        assert_close(weights[4 * 20 + 3], 200.0 / 32.0);
        assert_close(weights[0], 200.0 / 168.0);
        let mean1 = WeightMapParams {
            class_weight: ClassWeight::Mean1,
            ..params
        };
        let weights = weight_map(&labels, 10, 20, &mean1).unwrap();
        let mean = weights.iter().map(|&w| f64::from(w)).sum::<f64>() / 200.0;
        assert!((mean - 1.0).abs() < 1e-6);
        assert_close(weights[4 * 20 + 3], 100.0 / 32.0);
    }

    #[test]
    fn one_cell_has_no_border_term() {
        let mut labels = vec![0u8; 6 * 6];
        labels[2 * 6 + 2..2 * 6 + 4].fill(255);
        let weights = weight_map(&labels, 6, 6, &WeightMapParams::default()).unwrap();
        for (&weight, &label) in weights.iter().zip(&labels) {
            let expected = if label == 0 { 36.0 / 34.0 } else { 36.0 / 2.0 };
            assert_close(weight, expected);
        }
    }

    #[test]
    fn no_cell_gives_class_weight_one() {
        let labels = vec![0u8; 5 * 3];
        for class_weight in [ClassWeight::Balanced, ClassWeight::Mean1, ClassWeight::None] {
            let params = WeightMapParams {
                class_weight,
                ..WeightMapParams::default()
            };
            let weights = weight_map(&labels, 5, 3, &params).unwrap();
            assert!(
                weights.iter().all(|&w| w == 1.0),
                "{class_weight:?}: {weights:?}"
            );
        }
        let all_cell = vec![255u8; 4 * 4];
        let weights = weight_map(&all_cell, 4, 4, &WeightMapParams::default()).unwrap();
        assert!(weights.iter().all(|&w| w == 1.0));
    }

    #[test]
    fn cells_touching_the_image_border() {
        // Columns 0 and 6 of a 3x7 image are cells; column 3 is 3 px from both.
        let mut labels = vec![0u8; 3 * 7];
        for row in 0..3 {
            labels[row * 7] = 255;
            labels[row * 7 + 6] = 255;
        }
        let weights = weight_map(&labels, 3, 7, &unbalanced(BorderTerm::Background)).unwrap();
        for row in 0..3 {
            assert_close(weights[row * 7 + 1], 1.0 + border(1.0, 5.0));
            assert_close(weights[row * 7 + 3], 1.0 + border(3.0, 3.0));
            assert_eq!(weights[row * 7 + 6], 1.0);
        }
    }

    #[test]
    fn diagonal_pixels_are_two_cells_only_under_four_connectivity() {
        // Background pixel (0, 1) is 1 px from both diagonal pixels.
        let labels = [255, 0, 0, 255];
        let four = weight_map(&labels, 2, 2, &unbalanced(BorderTerm::Background)).unwrap();
        assert_close(four[1], 1.0 + border(1.0, 1.0));
        let eight_params = WeightMapParams {
            connectivity: Connectivity::Eight,
            ..unbalanced(BorderTerm::Background)
        };
        let eight = weight_map(&labels, 2, 2, &eight_params).unwrap();
        assert_eq!(eight, vec![1.0; 4]);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let bad = [
            ("w0", -1.0, 5.0),
            ("w0", f32::NAN, 5.0),
            ("w0", f32::INFINITY, 5.0),
            ("sigma", 10.0, 0.0),
            ("sigma", 10.0, -2.0),
            ("sigma", 10.0, f32::NAN),
            ("sigma", 10.0, f32::INFINITY),
        ];
        for (name, w0, sigma) in bad {
            let params = WeightMapParams {
                w0,
                sigma,
                ..WeightMapParams::default()
            };
            match params.validate() {
                Err(Error::InvalidParameter { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{params:?} gave {other:?}"),
            }
            assert!(weight_map(&[0], 1, 1, &params).is_err());
        }
    }

    #[test]
    fn border_reach_is_where_the_term_falls_below_the_tolerance() {
        let valid = WeightMapParams::default().validate().unwrap();
        let reach = valid.border_reach();
        // R^2 = 2 * 25 * ln(1e7) = 805.9; the reach is the root of its integer part.
        assert_close(reach, 805f32.sqrt());
        assert!(10.0 * (-(reach + 1.0).powi(2) / 50.0).exp() < BORDER_TOLERANCE);
        let off = WeightMapParams {
            w0: 0.0,
            ..WeightMapParams::default()
        };
        assert_eq!(off.validate().unwrap().border_reach(), 0.0);
    }

    #[test]
    fn stack_equals_pages_and_checks_its_length() {
        let first = two_squares();
        let mut second = two_squares();
        second[0..40].fill(255);
        let stack = [first.clone(), second.clone()].concat();
        let params = WeightMapParams::default();
        let weights = weight_maps(&stack, 2, 10, 20, &params).unwrap();
        let expected = [
            weight_map(&first, 10, 20, &params).unwrap(),
            weight_map(&second, 10, 20, &params).unwrap(),
        ]
        .concat();
        assert_eq!(weights, expected);
        let error = weight_maps(&stack, 3, 10, 20, &params).unwrap_err();
        assert!(matches!(
            error,
            Error::LengthMismatch {
                expected: 600,
                actual: 400,
                ..
            }
        ));
        assert!(weight_map(&first, 10, 21, &params).is_err());
        assert!(weight_maps(&[], 4, 0, 20, &params).unwrap().is_empty());
        let valid = params.validate().unwrap();
        let mut reused = vec![f32::NAN; 200];
        for (page, expected) in [&first, &second].into_iter().zip(expected.chunks(200)) {
            valid.weight_map_into(page, 10, 20, &mut reused).unwrap();
            assert_eq!(reused, expected);
        }
        let mut short = vec![0.0; 199];
        assert!(matches!(
            valid.weight_map_into(&first, 10, 20, &mut short),
            Err(Error::LengthMismatch {
                expected: 200,
                actual: 199,
                ..
            })
        ));
    }

    fn all_params() -> Vec<WeightMapParams> {
        let mut all = Vec::new();
        for class_weight in [ClassWeight::Balanced, ClassWeight::Mean1, ClassWeight::None] {
            for border_term in [BorderTerm::Background, BorderTerm::AllPixels] {
                for connectivity in [Connectivity::Four, Connectivity::Eight] {
                    for (w0, sigma) in [(10.0, 5.0), (3.0, 1.5), (0.0, 5.0)] {
                        all.push(WeightMapParams {
                            w0,
                            sigma,
                            connectivity,
                            border_term,
                            class_weight,
                        });
                    }
                }
            }
        }
        all
    }

    #[test]
    fn binary_classes_give_the_binary_map_bit_for_bit() {
        let labels = two_squares();
        let classes: Vec<u16> = labels.iter().map(|&l| u16::from(l != 0)).collect();
        for params in all_params() {
            let binary = weight_map(&labels, 10, 20, &params).unwrap();
            let indexed =
                class_weight_map(&classes, 10, 20, &ClassLabels::BINARY, &params).unwrap();
            let bits = |weights: &[f32]| weights.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&binary), bits(&indexed), "{params:?}");
        }
    }

    #[test]
    fn touching_cells_of_different_classes_get_the_border_term() {
        // The two squares of `two_squares`, widened until they touch: class 1 in columns 2..8,
        // class 2 in columns 8..14. As one class they would be one cell and get no border term.
        let mut classes = vec![0u16; 10 * 20];
        for row in 3..7 {
            classes[row * 20 + 2..row * 20 + 8].fill(1);
            classes[row * 20 + 8..row * 20 + 14].fill(2);
        }
        let params = unbalanced(BorderTerm::Background);
        let weights = class_weight_map(&classes, 10, 20, &ClassLabels::new(3), &params).unwrap();
        // Just above the seam, (2, 7) is 1 px from class 1 and sqrt(2) px from class 2.
        assert_close(weights[2 * 20 + 7], 1.0 + border(1.0, 2f32.sqrt()));
        assert_eq!(weights[4 * 20 + 7], 1.0);
        let merged: Vec<u16> = classes.iter().map(|&c| u16::from(c != 0)).collect();
        let one_cell = class_weight_map(&merged, 10, 20, &ClassLabels::BINARY, &params).unwrap();
        assert!(one_cell.iter().all(|&w| w == 1.0));
    }

    #[test]
    fn class_balance_over_k_leaves_out_ignored_pixels() {
        // 12 pixels: 5 of class 0, 3 of class 1, none of class 2, 1 of class 3, 3 ignored (9).
        let classes: Vec<u16> = vec![0, 0, 0, 0, 0, 1, 1, 1, 3, 9, 9, 9];
        let ignore = ClassLabels {
            n_classes: 4,
            ignore: Some(9),
        };
        let balanced = WeightMapParams {
            w0: 0.0,
            ..WeightMapParams::default()
        };
        let weights = class_weight_map(&classes, 3, 4, &ignore, &balanced).unwrap();
        let expected = [9.0 / 5.0, 9.0 / 3.0, 9.0];
        for (index, &class) in classes.iter().enumerate() {
            match class {
                9 => assert_eq!(weights[index], 0.0),
                0 => assert_close(weights[index], expected[0]),
                1 => assert_close(weights[index], expected[1]),
                _ => assert_close(weights[index], expected[2]),
            }
        }
        let mean1 = WeightMapParams {
            class_weight: ClassWeight::Mean1,
            ..balanced
        };
        let weights = class_weight_map(&classes, 3, 4, &ignore, &mean1).unwrap();
        // Three classes present; w_c averages 1 over the 9 counted pixels.
        assert_close(weights[0], 9.0 / 5.0 / 3.0);
        assert_close(weights.iter().sum::<f32>(), 9.0);
        // The ignore value may be a class index too: then that class is left out.
        let ignore_three = ClassLabels {
            n_classes: 4,
            ignore: Some(3),
        };
        let classes: Vec<u16> = vec![0, 0, 0, 0, 0, 1, 1, 1, 3, 0, 0, 0];
        let weights = class_weight_map(&classes, 3, 4, &ignore_three, &balanced).unwrap();
        assert_eq!(weights[8], 0.0);
        assert_close(weights[0], 11.0 / 8.0);
        // All pixels ignored: all weights 0.
        let weights = class_weight_map(&[9; 4], 2, 2, &ignore, &balanced).unwrap();
        assert_eq!(weights, vec![0.0; 4]);
    }

    #[test]
    fn ignored_pixels_are_neither_cells_nor_weighted() {
        // Cells of class 1 at columns 0 and 6; an ignored pixel at column 3 between them.
        let classes: Vec<u16> = vec![1, 0, 0, 255, 0, 0, 1];
        let ignore = ClassLabels {
            n_classes: 2,
            ignore: Some(255),
        };
        for border_term in [BorderTerm::Background, BorderTerm::AllPixels] {
            let params = unbalanced(border_term);
            let weights = class_weight_map(&classes, 1, 7, &ignore, &params).unwrap();
            assert_eq!(weights[3], 0.0);
            assert_close(weights[2], 1.0 + border(2.0, 4.0));
            let cell = if border_term == BorderTerm::AllPixels {
                1.0 + border(0.0, 6.0)
            } else {
                1.0
            };
            assert_close(weights[0], cell);
        }
    }

    #[test]
    fn labels_outside_the_classes_are_errors_with_their_position() {
        let params = WeightMapParams::default();
        let mut classes = vec![0u16; 3 * 4];
        classes[6] = 3;
        let error = class_weight_map(&classes, 3, 4, &ClassLabels::new(3), &params).unwrap_err();
        assert_eq!(
            error,
            Error::LabelOutOfRange {
                value: 3,
                n_classes: 3,
                page: 0,
                row: 1,
                column: 2
            }
        );
        assert!(error.to_string().contains("row 1, column 2"), "{error}");
        // The same value as the ignore value is fine.
        let ignore = ClassLabels {
            n_classes: 3,
            ignore: Some(3),
        };
        assert!(class_weight_map(&classes, 3, 4, &ignore, &params).is_ok());
        // In a stack, the page is named.
        let stack = [vec![0u16; 12], classes.clone()].concat();
        let error = class_weight_maps(&stack, 2, 3, 4, &ClassLabels::new(2), &params).unwrap_err();
        assert!(
            matches!(
                error,
                Error::LabelOutOfRange {
                    value: 3,
                    page: 1,
                    row: 1,
                    column: 2,
                    ..
                }
            ),
            "{error:?}"
        );
        for n_classes in [0, 65_537] {
            let error = class_weight_map(&classes, 3, 4, &ClassLabels::new(n_classes), &params);
            assert_eq!(error, Err(Error::InvalidClassCount { n_classes }));
        }
        assert!(class_weight_map(&[65_535], 1, 1, &ClassLabels::new(65_536), &params).is_ok());
        assert!(matches!(
            class_weight_map(&classes, 3, 5, &ClassLabels::new(4), &params),
            Err(Error::LengthMismatch { .. })
        ));
    }

    #[test]
    fn class_stack_equals_pages() {
        let first: Vec<u16> = two_squares().iter().map(|&l| u16::from(l != 0)).collect();
        let mut second = first.clone();
        second[0..40].fill(2);
        second[45] = 7;
        let classes = ClassLabels {
            n_classes: 3,
            ignore: Some(7),
        };
        let stack = [first.clone(), second.clone()].concat();
        let params = WeightMapParams::default();
        let weights = class_weight_maps(&stack, 2, 10, 20, &classes, &params).unwrap();
        let expected = [
            class_weight_map(&first, 10, 20, &classes, &params).unwrap(),
            class_weight_map(&second, 10, 20, &classes, &params).unwrap(),
        ]
        .concat();
        assert_eq!(weights, expected);
        assert!(class_weight_maps(&stack, 3, 10, 20, &classes, &params).is_err());
        assert!(class_weight_maps(&[], 4, 0, 20, &classes, &params)
            .unwrap()
            .is_empty());
        let valid = params.validate().unwrap();
        let mut reused = vec![f32::NAN; 200];
        valid
            .class_weight_map_into(&second, 10, 20, &classes, &mut reused)
            .unwrap();
        assert_eq!(reused, expected[200..]);
    }

    #[test]
    fn images_too_large_for_u32_distances_are_errors() {
        let error = check_shape(0, 0, 50_000, 50_000).unwrap_err();
        assert!(matches!(error, Error::ImageTooLarge { .. }));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn matches_brute_force_formula(
            (height, width, labels) in (1usize..20, 1usize..20).prop_flat_map(|(h, w)| {
                let pixel = prop_oneof![3 => Just(0u8), 1 => Just(255u8)];
                (Just(h), Just(w), proptest::collection::vec(pixel, h * w))
            }),
            w0 in 0.0f32..20.0,
            // Small sigmas make the reach smaller than the images, so the cut-off is exercised.
            sigma in 0.3f32..6.0,
            eight in any::<bool>(),
            all_pixels in any::<bool>(),
            class_weight in prop_oneof![Just(ClassWeight::Balanced), Just(ClassWeight::Mean1), Just(ClassWeight::None)],
        ) {
            let params = WeightMapParams {
                w0,
                sigma,
                connectivity: if eight { Connectivity::Eight } else { Connectivity::Four },
                border_term: if all_pixels { BorderTerm::AllPixels } else { BorderTerm::Background },
                class_weight,
            };
            let weights = weight_map(&labels, height, width, &params).unwrap();
            let components = label_components(&labels, height, width, params.connectivity).unwrap();
            let (d1, d2) = brute_force_nearest_two(&components);
            let total = labels.len() as f64;
            let cells = labels.iter().filter(|&&l| l > 0).count() as f64;
            let present = f64::from(u8::from(cells > 0.0) + u8::from(cells < total));
            for index in 0..labels.len() {
                let count = if labels[index] > 0 { cells } else { total - cells };
                let class = match class_weight {
                    ClassWeight::None => 1.0,
                    ClassWeight::Balanced => total / count,
                    ClassWeight::Mean1 => total / count / present,
                };
                let applies = all_pixels || labels[index] == 0;
                let sum = d1[index] + d2[index];
                let border_term = if applies && sum.is_finite() {
                    f64::from(w0) * (-sum * sum / (2.0 * f64::from(sigma).powi(2))).exp()
                } else {
                    0.0
                };
                let expected = class + border_term;
                let actual = f64::from(weights[index]);
                prop_assert!(
                    (actual - expected).abs() <= 1e-5 * expected.max(1.0),
                    "pixel {index}: {actual} != {expected}"
                );
            }
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    fn json<T: serde::Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn missing_fields_come_from_the_defaults() {
        let params: WeightMapParams =
            serde_json::from_str(r#"{"w0": 10.0, "sigma": 5.0, "class_weight": "none"}"#).unwrap();
        assert_eq!(
            params,
            WeightMapParams {
                class_weight: ClassWeight::None,
                ..WeightMapParams::default()
            }
        );
        let empty: WeightMapParams = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, WeightMapParams::default());
    }

    #[test]
    fn enums_are_snake_case_strings() {
        assert_eq!(json(&ClassWeight::Balanced), r#""balanced""#);
        assert_eq!(json(&ClassWeight::Mean1), r#""mean1""#);
        assert_eq!(json(&ClassWeight::None), r#""none""#);
        assert_eq!(json(&Connectivity::Four), r#""four""#);
        assert_eq!(json(&Connectivity::Eight), r#""eight""#);
        assert_eq!(json(&BorderTerm::Background), r#""background""#);
        assert_eq!(json(&BorderTerm::AllPixels), r#""all_pixels""#);
        assert!(serde_json::from_str::<ClassWeight>(r#""Balanced""#).is_err());
    }

    #[test]
    fn class_labels_round_trip_and_ignore_may_be_left_out() {
        let classes = ClassLabels {
            n_classes: 4,
            ignore: Some(255),
        };
        let text = json(&classes);
        assert_eq!(text, r#"{"n_classes":4,"ignore":255}"#);
        assert_eq!(serde_json::from_str::<ClassLabels>(&text).unwrap(), classes);
        let plain: ClassLabels = serde_json::from_str(r#"{"n_classes": 3}"#).unwrap();
        assert_eq!(plain, ClassLabels::new(3));
    }

    #[test]
    fn params_round_trip() {
        let params = WeightMapParams {
            w0: 7.5,
            sigma: 3.25,
            connectivity: Connectivity::Eight,
            border_term: BorderTerm::AllPixels,
            class_weight: ClassWeight::Mean1,
        };
        let text = serde_json::to_string(&params).unwrap();
        assert_eq!(
            text,
            r#"{"w0":7.5,"sigma":3.25,"connectivity":"eight","border_term":"all_pixels","class_weight":"mean1"}"#
        );
        assert_eq!(
            serde_json::from_str::<WeightMapParams>(&text).unwrap(),
            params
        );
    }
}
