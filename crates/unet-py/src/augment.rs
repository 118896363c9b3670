//! `unet_rs.Augmenter`: joint augmentation of image, label and weights through `unet_augment`.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use unet_augment::{
    BorderMode, FieldSmoothing, Fill, Interpolation, Pipeline, PipelineBuilder, Preset, Range,
    Sample, Transform,
};

use crate::convert::{check_shape, read_f32, read_grey, read_labels, to_array};
use crate::weights::parse_name;

/// The keyword arguments `Augmenter` takes besides `preset` and `seed`.
pub const OVERRIDES: [&str; 6] = [
    "interpolation",
    "border",
    "fill",
    "elastic_smoothing",
    "noise_std",
    "crop",
];

const INTERPOLATIONS: [(&str, Interpolation); 3] = [
    ("nearest", Interpolation::Nearest),
    ("bilinear", Interpolation::Bilinear),
    ("bicubic", Interpolation::Bicubic),
];

const BORDERS: [(&str, BorderMode); 2] = [
    ("mirror", BorderMode::Mirror),
    ("constant", BorderMode::Constant),
];

const SMOOTHINGS: [(&str, FieldSmoothing); 2] = [
    ("exact", FieldSmoothing::Exact),
    ("recursive", FieldSmoothing::Recursive),
];

/// Changes to a preset's pipeline, parsed from the keyword arguments.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Overrides {
    /// Interpolation of image and weights.
    pub interpolation: Option<Interpolation>,
    /// Border rule of the geometric steps.
    pub border: Option<BorderMode>,
    /// Values outside the image under the constant border.
    pub fill: Option<Fill>,
    /// Smoothing of the dense elastic field.
    pub elastic_smoothing: Option<FieldSmoothing>,
    /// Standard deviation of the Gaussian noise step.
    pub noise_std: Option<f32>,
    /// A random crop of `(height, width)` appended to the pipeline.
    pub crop: Option<(usize, usize)>,
}

/// The keys of `keys` that are not [`OVERRIDES`], or `None` when all are.
pub fn unknown_overrides<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let unknown: Vec<String> = keys
        .into_iter()
        .filter(|k| !OVERRIDES.contains(k))
        .map(|k| format!("{k:?}"))
        .collect();
    (!unknown.is_empty()).then(|| unknown.join(", "))
}

/// `preset`'s pipeline with `overrides` applied; the error says which override does not fit.
pub fn build_pipeline(preset: Preset, overrides: &Overrides) -> Result<Pipeline, String> {
    let base = preset.pipeline().map_err(|e| e.to_string())?;
    let mut builder: PipelineBuilder = Pipeline::builder()
        .interpolation(overrides.interpolation.unwrap_or(base.interpolation()))
        .border(overrides.border.unwrap_or(base.border()));
    if let Some(fill) = overrides.fill {
        builder = builder.fill(fill);
    }
    let (mut elastic_steps, mut noise_steps) = (0, 0);
    for step in base.steps() {
        let mut transform = step.transform.clone();
        match &mut transform {
            Transform::DenseElastic { smoothing, .. } => {
                elastic_steps += 1;
                if let Some(s) = overrides.elastic_smoothing {
                    *smoothing = s;
                }
            }
            Transform::GaussianNoise { std } => {
                noise_steps += 1;
                if let Some(s) = overrides.noise_std {
                    *std = Range::fixed(s);
                }
            }
            _ => {}
        }
        builder = builder.step(transform, step.probability);
    }
    if overrides.elastic_smoothing.is_some() && elastic_steps == 0 {
        return Err(format!(
            "elastic_smoothing: the preset {:?} has no dense elastic step",
            preset.name()
        ));
    }
    if overrides.noise_std.is_some() && noise_steps == 0 {
        return Err(format!(
            "noise_std: the preset {:?} has no Gaussian noise step",
            preset.name()
        ));
    }
    if let Some((height, width)) = overrides.crop {
        builder = builder.always(Transform::RandomCrop { width, height });
    }
    builder.build().map_err(|e| e.to_string())
}

fn parse_overrides(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Overrides> {
    let mut out = Overrides::default();
    let Some(kwargs) = kwargs else {
        return Ok(out);
    };
    let keys: Vec<String> = kwargs
        .keys()
        .iter()
        .map(|k| k.extract::<String>())
        .collect::<PyResult<_>>()?;
    if let Some(unknown) = unknown_overrides(keys.iter().map(String::as_str)) {
        return Err(PyTypeError::new_err(format!(
            "Augmenter() got unexpected keyword argument(s) {unknown}; it takes preset, seed \
             and the overrides {}",
            OVERRIDES.join(", ")
        )));
    }
    let value_error = |e: String| PyValueError::new_err(e);
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        let extract_err = |e: PyErr| PyTypeError::new_err(format!("Augmenter({key}=...): {e}"));
        match key.as_str() {
            "interpolation" => {
                let name: String = value.extract().map_err(extract_err)?;
                out.interpolation =
                    Some(parse_name(&name, "interpolation", &INTERPOLATIONS).map_err(value_error)?);
            }
            "border" => {
                let name: String = value.extract().map_err(extract_err)?;
                out.border = Some(parse_name(&name, "border", &BORDERS).map_err(value_error)?);
            }
            "elastic_smoothing" => {
                let name: String = value.extract().map_err(extract_err)?;
                out.elastic_smoothing =
                    Some(parse_name(&name, "elastic_smoothing", &SMOOTHINGS).map_err(value_error)?);
            }
            "fill" => {
                let (image, label, weight): (f32, u8, f32) =
                    value.extract().map_err(extract_err)?;
                out.fill = Some(Fill {
                    image,
                    label,
                    weight,
                });
            }
            "noise_std" => out.noise_std = Some(value.extract().map_err(extract_err)?),
            "crop" => {
                let (height, width): (usize, usize) = value.extract().map_err(extract_err)?;
                out.crop = Some((height, width));
            }
            _ => unreachable!("unknown keys are refused above"),
        }
    }
    Ok(out)
}

/// Augmenter(preset="reference", seed=0, **overrides)
///
/// Joint augmentation of an image, its label and its loss weights: every geometric step
/// (flips, affine, elastic deformation, crops) is composed into one coordinate map and
/// resampled once; labels by nearest neighbour, so they keep their values; intensity steps
/// touch the image only. Reproducible: sample `i` of seed `s` is the same on every platform
/// and in every process.
///
/// Args:
///     preset: "none", "reference" (the reference implementation's recipe: flips, dense
///         elastic deformation, brightness, noise), "paper" (shifts, rotations, coarse-grid
///         elastic deformation, grey values) or "robust".
///     seed: the base seed (an unsigned 64-bit integer).
///     interpolation: "nearest", "bilinear" or "bicubic" for image and weights.
///     border: "mirror" or "constant" outside the image.
///     fill: (image, label, weight) values outside the image under border="constant".
///     elastic_smoothing: "exact" (scipy's gaussian_filter) or "recursive" (faster) for the
///         dense elastic field.
///     noise_std: the standard deviation of the preset's Gaussian noise step.
///     crop: (height, width) of a random crop appended to the pipeline.
///
/// Unknown keyword arguments are a TypeError naming them.
#[pyclass(module = "unet_rs", frozen)]
pub struct Augmenter {
    pipeline: Pipeline,
    preset: Preset,
    seed: u64,
    /// The index of the next `__call__`.
    calls: AtomicU64,
}

#[pymethods]
impl Augmenter {
    #[new]
    #[pyo3(signature = (preset="reference", seed=0, **overrides))]
    fn new(preset: &str, seed: u64, overrides: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let preset: Preset = preset
            .parse()
            .map_err(|e: unet_augment::Error| PyValueError::new_err(e.to_string()))?;
        let overrides = parse_overrides(overrides)?;
        let pipeline = build_pipeline(preset, &overrides).map_err(PyValueError::new_err)?;
        Ok(Self {
            pipeline,
            preset,
            seed,
            calls: AtomicU64::new(0),
        })
    }

    /// The preset's name.
    #[getter]
    fn preset(&self) -> &'static str {
        self.preset.name()
    }

    /// The base seed.
    #[getter]
    fn seed(&self) -> u64 {
        self.seed
    }

    /// Augments with the next index (0, 1, 2, ... per Augmenter): the same as
    /// `sample(n, image, label, weight)` for the n-th call. In PyTorch DataLoader workers, each
    /// worker has its own copy and so its own count: call `sample` with the item's index there.
    ///
    /// Args and returns: as `sample`.
    #[pyo3(signature = (image, label, weight=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        label: &Bound<'py, PyAny>,
        weight: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let index = self.calls.fetch_add(1, Ordering::Relaxed);
        self.augment(py, index, image, label, weight)
    }

    /// Augments image, label and (optionally) weights together, with the transform drawn for
    /// `index`: the same index gives the same result, another index another one.
    ///
    /// Args:
    ///     index: which draw (a non-negative integer), e.g. the dataset item's index, plus
    ///         epoch * len(dataset) for new draws every epoch.
    ///     image: (H, W) or (C, H, W), any numeric dtype; uint8 is divided by 255 and uint16
    ///         by 65535, other dtypes are taken as they are; the presets' intensity steps
    ///         expect grey values in [0, 1].
    ///     label: (H, W) class ids, integers in 0..=255 of any numeric dtype.
    ///     weight: optional (H, W) loss weights, any numeric dtype.
    ///
    /// Returns:
    ///     (image, label) or, with weight, (image, label, weight): float32 image of shape
    ///     (H', W') or (C, H', W'), uint8 label and float32 weights of shape (H', W') (H', W'
    ///     differ from H, W only with a crop), all C-contiguous.
    ///
    /// Raises:
    ///     ValueError: shapes that do not fit together, empty arrays, labels that are not
    ///         class ids, a crop larger than the image.
    ///     TypeError: arrays that do not hold numbers.
    #[pyo3(signature = (index, image, label, weight=None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        index: u64,
        image: &Bound<'py, PyAny>,
        label: &Bound<'py, PyAny>,
        weight: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        self.augment(py, index, image, label, weight)
    }

    fn __repr__(&self) -> String {
        format!(
            "Augmenter(preset={:?}, seed={}, steps={})",
            self.preset.name(),
            self.seed,
            self.pipeline.steps().len()
        )
    }
}

impl Augmenter {
    fn augment<'py>(
        &self,
        py: Python<'py>,
        index: u64,
        image: &Bound<'py, PyAny>,
        label: &Bound<'py, PyAny>,
        weight: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (image, image_shape) = read_grey(image, "image")?;
        check_shape(&image_shape, &[2, 3], "image", "(H, W) or (C, H, W)")?;
        let (label, label_shape) = read_labels(label, "label")?;
        check_shape(&label_shape, &[2], "label", "(H, W)")?;
        let (channels, height, width) = match image_shape[..] {
            [h, w] => (1, h, w),
            [c, h, w] => (c, h, w),
            _ => unreachable!("checked above"),
        };
        if label_shape != [height, width] {
            return Err(PyValueError::new_err(format!(
                "label has shape {label_shape:?}, but the image {image_shape:?} is {height}x{width}"
            )));
        }
        let weight = match weight.filter(|w| !w.is_none()) {
            Some(w) => {
                let (values, shape) = read_f32(w, "weight")?;
                if shape != [height, width] {
                    return Err(PyValueError::new_err(format!(
                        "weight has shape {shape:?}, but the image {image_shape:?} is \
                         {height}x{width}"
                    )));
                }
                Some(values)
            }
            None => None,
        };
        let has_weight = weight.is_some();
        let sample = Sample::new(width, height, channels, image, label, weight)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let seed = Pipeline::batch_seed(self.seed, index as usize);
        let pipeline = &self.pipeline;
        let out = py
            .detach(move || pipeline.apply(&sample, seed))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let (w, h) = (out.width(), out.height());
        let (image, label, weight) = out.into_parts();
        let image_shape: Vec<usize> = if image_shape.len() == 2 {
            vec![h, w]
        } else {
            vec![channels, h, w]
        };
        let image = to_array(py, image, &image_shape)?.into_any();
        let label = to_array(py, label, &[h, w])?.into_any();
        match weight {
            Some(weight) if has_weight => {
                let weight = to_array(py, weight, &[h, w])?.into_any();
                PyTuple::new(py, [image, label, weight])
            }
            _ => PyTuple::new(py, [image, label]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_override_keys_are_named() {
        assert_eq!(unknown_overrides(["crop", "noise_std"]), None);
        assert_eq!(
            unknown_overrides(["crop", "sigma", "alpha"]),
            Some("\"sigma\", \"alpha\"".to_string())
        );
    }

    #[test]
    fn overrides_change_the_preset_steps() {
        let overrides = Overrides {
            elastic_smoothing: Some(FieldSmoothing::Exact),
            noise_std: Some(0.05),
            crop: Some((32, 48)),
            ..Overrides::default()
        };
        let p = build_pipeline(Preset::Reference, &overrides).unwrap();
        let base = Preset::Reference.pipeline().unwrap();
        assert_eq!(p.steps().len(), base.steps().len() + 1);
        assert!(p.steps().iter().any(|s| matches!(
            s.transform,
            Transform::DenseElastic {
                smoothing: FieldSmoothing::Exact,
                ..
            }
        )));
        assert!(p.steps().iter().any(
            |s| matches!(s.transform, Transform::GaussianNoise { std } if std == Range::fixed(0.05))
        ));
        assert_eq!(
            p.steps().last().unwrap().transform,
            Transform::RandomCrop {
                width: 48,
                height: 32
            }
        );
        // Without overrides the preset is unchanged.
        assert_eq!(
            build_pipeline(Preset::Reference, &Overrides::default()).unwrap(),
            base
        );
    }

    #[test]
    fn overrides_that_do_not_fit_the_preset_are_refused() {
        let noise = Overrides {
            noise_std: Some(0.1),
            ..Overrides::default()
        };
        assert!(build_pipeline(Preset::Paper, &noise)
            .unwrap_err()
            .contains("no Gaussian noise step"));
        let negative = Overrides {
            noise_std: Some(-1.0),
            ..Overrides::default()
        };
        assert!(build_pipeline(Preset::Reference, &negative).is_err());
    }
}
