//! A pipeline of random transforms, each with a probability; one resampling per sample.
//!
//! How a sample goes through [`Pipeline::apply`]:
//! 1. Plan: step `i` gets its own generator seeded from `(seed, i)`; it draws whether it runs
//!    (probability `p`), then its parameters (and noise/elastic fields). The streams do not
//!    depend on each other, so changing one step's range does not reshuffle the others.
//! 2. Compose: all geometric steps become one coordinate map, built from the output backwards
//!    (for each output pixel, where it comes from in the input). After each step the coordinate
//!    is folded back into that step's input by the border rule (mirror: reflected; constant:
//!    marked outside), which is what running the steps one after the other would see.
//! 3. Resample once: images and weights with the chosen interpolation (exact nearest when the
//!    map only moves whole pixels: flips, rot90, crops, padding), labels by nearest neighbour.
//! 4. Intensity steps act on the resampled image, in their pipeline order. (They commute with
//!    geometry except contrast, whose mean is then the mean of the output image.)

use rayon::prelude::*;

use crate::elastic::{DenseElastic, DisplacementField, FieldSmoothing, GridElastic};
use crate::error::{Error, Result};
use crate::gaussian::gaussian_blur_mirrored;
use crate::intensity;
use crate::remap::{
    fold_coord, mirror_coord, resample_span, BorderMode, Interpolation, Planes, SpanScratch,
};
use crate::rng::{derive_seed, sin_cos, SplitMix64};
use crate::sample::Sample;
use crate::scratch;

/// A closed interval `[min, max]` a parameter is drawn from uniformly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Lower bound.
    pub min: f32,
    /// Upper bound.
    pub max: f32,
}

impl Range {
    /// `[min, max]`.
    pub const fn new(min: f32, max: f32) -> Self {
        Self { min, max }
    }

    /// The single value `value`.
    pub const fn fixed(value: f32) -> Self {
        Self {
            min: value,
            max: value,
        }
    }

    /// `[-half_width, half_width]`.
    pub const fn symmetric(half_width: f32) -> Self {
        Self {
            min: -half_width,
            max: half_width,
        }
    }

    fn check(&self, name: &'static str) -> Result<()> {
        if self.min.is_finite() && self.max.is_finite() && self.min <= self.max {
            Ok(())
        } else {
            Err(Error::InvalidRange {
                name,
                min: self.min as f64,
                max: self.max as f64,
            })
        }
    }

    fn check_at_least(&self, name: &'static str, bound: f32, strict: bool) -> Result<()> {
        self.check(name)?;
        let ok = if strict {
            self.min > bound
        } else {
            self.min >= bound
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidParameter {
                name,
                value: self.min as f64,
                reason: if strict {
                    "the range must lie above its lower limit (> 0)"
                } else {
                    "the range must not go below 0"
                },
            })
        }
    }

    fn draw(&self, rng: &mut SplitMix64) -> f32 {
        rng.uniform_range(self.min as f64, self.max as f64) as f32
    }
}

/// The parameter ranges of a random affine transform about the image centre:
/// `source = c + A^-1 (output - c - t)` with `A = Rotation * Shear * Scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineRanges {
    /// Rotation in degrees (positive turns clockwise on screen, where y points down).
    pub rotation_deg: Range,
    /// Isotropic scale factor (> 0; above 1 zooms in).
    pub scale: Range,
    /// Shear angle in degrees along x, within (-90, 90).
    pub shear_deg: Range,
    /// Translation along x in pixels.
    pub translate_x: Range,
    /// Translation along y in pixels.
    pub translate_y: Range,
}

impl Default for AffineRanges {
    /// The identity.
    fn default() -> Self {
        Self {
            rotation_deg: Range::fixed(0.0),
            scale: Range::fixed(1.0),
            shear_deg: Range::fixed(0.0),
            translate_x: Range::fixed(0.0),
            translate_y: Range::fixed(0.0),
        }
    }
}

/// One transform of a pipeline, with the ranges its parameters are drawn from.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Mirror left-right.
    FlipHorizontal,
    /// Mirror top-bottom.
    FlipVertical,
    /// Rotate by `k` quarter turns counter-clockwise on screen (`numpy.rot90(a, k)`).
    Rot90 {
        /// Quarter turns (taken modulo 4).
        k: u8,
    },
    /// Rotate by 0, 1, 2 or 3 quarter turns, uniformly.
    RandomRot90,
    /// A random affine transform (rotation, scale, shear, translation).
    Affine(AffineRanges),
    /// A crop of the given size at a uniformly random position (changes the sample size).
    RandomCrop {
        /// Crop width.
        width: usize,
        /// Crop height.
        height: usize,
    },
    /// Add a mirrored border of `border` pixels on each side (changes the sample size).
    MirrorPad {
        /// Border width in pixels.
        border: usize,
    },
    /// The reference's dense elastic field ([`DenseElastic`]).
    DenseElastic {
        /// Strength in pixels (reference: 100..300).
        alpha: Range,
        /// Gaussian smoothing in pixels (reference: 10..15).
        sigma: Range,
        /// Exact scipy smoothing or the faster recursive approximation.
        smoothing: FieldSmoothing,
    },
    /// The paper's coarse-grid elastic field ([`GridElastic`]).
    GridElastic {
        /// Grid nodes along x (paper: 3).
        nodes_x: usize,
        /// Grid nodes along y (paper: 3).
        nodes_y: usize,
        /// Standard deviation of the node displacements in pixels (paper: 10).
        std: Range,
    },
    /// Additive brightness `x + delta`.
    Brightness {
        /// Added value.
        delta: Range,
    },
    /// Multiplicative brightness `x * factor` (torchvision `ColorJitter(brightness=b)` draws the
    /// factor from `[1 - b, 1 + b]`).
    BrightnessFactor {
        /// Factor (>= 0).
        factor: Range,
    },
    /// Contrast around the image mean.
    Contrast {
        /// Factor (>= 0).
        factor: Range,
    },
    /// Gamma `x^gamma` (sign-preserving).
    Gamma {
        /// Exponent (> 0).
        gamma: Range,
    },
    /// Additive Gaussian noise.
    GaussianNoise {
        /// Standard deviation (>= 0), in the image's units.
        std: Range,
    },
    /// Poisson-like (shot) noise: each value `x` gets Gaussian noise of standard deviation
    /// `sqrt(max(x, 0) / peak)`, as a photon count of `peak` at value 1 would.
    PoissonNoise {
        /// Photons at value 1 (> 0); fewer is noisier.
        peak: Range,
    },
    /// Gaussian blur of the image, mirrored at its borders (labels and weights stay sharp).
    GaussianBlur {
        /// Standard deviation in pixels (> 0).
        sigma: Range,
    },
    /// Clamp the image to `[min, max]`.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
}

impl Transform {
    fn check(&self) -> Result<()> {
        match self {
            Transform::FlipHorizontal
            | Transform::FlipVertical
            | Transform::Rot90 { .. }
            | Transform::RandomRot90 => Ok(()),
            Transform::Affine(a) => {
                a.rotation_deg.check("rotation_deg")?;
                a.scale.check_at_least("scale", 0.0, true)?;
                a.translate_x.check("translate_x")?;
                a.translate_y.check("translate_y")?;
                a.shear_deg.check("shear_deg")?;
                if a.shear_deg.min <= -90.0 || a.shear_deg.max >= 90.0 {
                    return Err(Error::InvalidRange {
                        name: "shear_deg",
                        min: a.shear_deg.min as f64,
                        max: a.shear_deg.max as f64,
                    });
                }
                Ok(())
            }
            Transform::RandomCrop { width, height } => {
                if *width == 0 || *height == 0 {
                    return Err(Error::EmptyImage {
                        width: *width,
                        height: *height,
                        channels: 1,
                    });
                }
                Ok(())
            }
            Transform::MirrorPad { .. } => Ok(()),
            Transform::DenseElastic { alpha, sigma, .. } => {
                alpha.check_at_least("alpha", 0.0, false)?;
                sigma.check_at_least("sigma", 0.0, false)
            }
            Transform::GridElastic {
                nodes_x,
                nodes_y,
                std,
            } => {
                std.check_at_least("std", 0.0, false)?;
                GridElastic::new(*nodes_x, *nodes_y, std.min).map(|_| ())
            }
            Transform::Brightness { delta } => delta.check("delta"),
            Transform::BrightnessFactor { factor } | Transform::Contrast { factor } => {
                factor.check_at_least("factor", 0.0, false)
            }
            Transform::Gamma { gamma } => gamma.check_at_least("gamma", 0.0, true),
            Transform::GaussianNoise { std } => std.check_at_least("std", 0.0, false),
            Transform::PoissonNoise { peak } => peak.check_at_least("peak", 0.0, true),
            Transform::GaussianBlur { sigma } => sigma.check_at_least("sigma", 0.0, true),
            Transform::Clamp { min, max } => Range::new(*min, *max).check("clamp"),
        }
    }
}

/// A transform and the probability that it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What to do.
    pub transform: Transform,
    /// Probability in [0, 1] that the step runs for a given sample.
    pub probability: f32,
}

/// Values outside the image under [`BorderMode::Constant`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fill {
    /// For image planes.
    pub image: f32,
    /// For the label plane.
    pub label: u8,
    /// For the weight plane (0 keeps invented pixels out of the loss).
    pub weight: f32,
}

impl Default for Fill {
    fn default() -> Self {
        Self {
            image: 0.0,
            label: 0,
            weight: 0.0,
        }
    }
}

/// Builds a [`Pipeline`]; [`PipelineBuilder::build`] validates every parameter.
#[derive(Debug, Clone, Default)]
pub struct PipelineBuilder {
    steps: Vec<Step>,
    interpolation: Interpolation,
    border: BorderMode,
    fill: Fill,
}

impl PipelineBuilder {
    /// Append `transform`, run with `probability`.
    pub fn step(mut self, transform: Transform, probability: f32) -> Self {
        self.steps.push(Step {
            transform,
            probability,
        });
        self
    }

    /// Append `transform`, always run.
    pub fn always(self, transform: Transform) -> Self {
        self.step(transform, 1.0)
    }

    /// Interpolation of image and weight planes (default bilinear; labels: nearest).
    pub fn interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// Border rule of the geometric steps (default mirror).
    pub fn border(mut self, border: BorderMode) -> Self {
        self.border = border;
        self
    }

    /// Fill values for [`BorderMode::Constant`] (default all 0).
    pub fn fill(mut self, fill: Fill) -> Self {
        self.fill = fill;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<Pipeline> {
        for step in &self.steps {
            let p = step.probability;
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::InvalidParameter {
                    name: "probability",
                    value: p as f64,
                    reason: "must be in [0, 1]",
                });
            }
            step.transform.check()?;
        }
        Ok(Pipeline {
            steps: self.steps,
            interpolation: self.interpolation,
            border: self.border,
            fill: self.fill,
        })
    }
}

/// A validated augmentation pipeline.
///
/// ```
/// use unet_augment::{FieldSmoothing, Pipeline, Range, Sample, Transform};
/// let pipeline = Pipeline::builder()
///     .step(Transform::FlipHorizontal, 0.5)
///     .step(Transform::DenseElastic {
///         alpha: Range::new(100.0, 300.0),
///         sigma: Range::new(10.0, 15.0),
///         smoothing: FieldSmoothing::Exact,
///     }, 0.5)
///     .build()
///     .unwrap();
/// let sample = Sample::grey(32, 32, vec![0.5; 32 * 32], vec![255; 32 * 32], None).unwrap();
/// let out = pipeline.apply(&sample, 42).unwrap();
/// assert_eq!(out, pipeline.apply(&sample, 42).unwrap());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    steps: Vec<Step>,
    interpolation: Interpolation,
    border: BorderMode,
    fill: Fill,
}

/// A geometric step with its parameters drawn.
enum GeoOp {
    FlipHorizontal,
    FlipVertical,
    Rot90(u8),
    /// `source = m[0] x + m[1] y + m[2], m[3] x + m[4] y + m[5]`.
    Affine([f64; 6]),
    Crop {
        x0: usize,
        y0: usize,
    },
    Pad(usize),
    Field(DisplacementField),
}

struct PlannedGeo {
    op: GeoOp,
    in_width: usize,
    in_height: usize,
}

/// An intensity step with its parameters drawn: brightness, contrast and gamma one per channel
/// (channels move independently, as a microscope's channels do), noise from one stream per
/// channel.
enum IntensityOp {
    Add(Vec<f32>),
    Scale(Vec<f32>),
    Contrast(Vec<f32>),
    Gamma(Vec<f32>),
    /// Standard deviation and the seed of the per-channel noise streams.
    Noise(f32, u64),
    /// Photons at value 1 and the seed of the per-channel noise streams.
    Poisson(f32, u64),
    /// Blur sigma in pixels.
    Blur(f32),
    Clamp(f32, f32),
}

struct Plan {
    geometry: Vec<PlannedGeo>,
    intensity: Vec<IntensityOp>,
    width: usize,
    height: usize,
}

impl Drop for Plan {
    /// The displacement planes go back to the thread's scratch pool for the next sample.
    fn drop(&mut self) {
        for step in self.geometry.drain(..) {
            if let GeoOp::Field(field) = step.op {
                scratch::give(field.dx);
                scratch::give(field.dy);
            }
        }
    }
}

impl Pipeline {
    /// Start building a pipeline.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The interpolation of image and weight planes.
    pub fn interpolation(&self) -> Interpolation {
        self.interpolation
    }

    /// The border rule.
    pub fn border(&self) -> BorderMode {
        self.border
    }

    /// The seed [`Pipeline::apply_batch`] uses for sample `index` of a batch.
    pub fn batch_seed(base_seed: u64, index: usize) -> u64 {
        derive_seed(base_seed, index as u64)
    }

    /// Augment one sample; the same `seed` gives the same output on every platform.
    pub fn apply(&self, sample: &Sample, seed: u64) -> Result<Sample> {
        let plan = self.plan(sample.width(), sample.height(), sample.channels(), seed)?;
        let mut out = if plan.geometry.is_empty() {
            sample.clone()
        } else {
            self.resample(sample, &plan)?
        };
        let (out_w, out_h) = (out.width(), out.height());
        let pixels = out_w * out_h;
        for op in &plan.intensity {
            for (c, plane) in out.image_mut().chunks_exact_mut(pixels).enumerate() {
                match &op {
                    IntensityOp::Add(d) => intensity::adjust_brightness(plane, d[c]),
                    IntensityOp::Scale(f) => intensity::scale_brightness(plane, f[c]),
                    IntensityOp::Contrast(f) => intensity::adjust_contrast(plane, f[c]),
                    IntensityOp::Gamma(g) => intensity::adjust_gamma(plane, g[c]),
                    IntensityOp::Noise(std, seed) => {
                        // One stream per channel, so channels get independent noise.
                        let mut rng = SplitMix64::new(derive_seed(*seed, c as u64));
                        intensity::add_gaussian_noise(plane, *std, &mut rng);
                    }
                    IntensityOp::Poisson(peak, seed) => {
                        let mut rng = SplitMix64::new(derive_seed(*seed, c as u64));
                        intensity::add_shot_noise(plane, *peak, &mut rng);
                    }
                    IntensityOp::Blur(sigma) => {
                        let blurred = gaussian_blur_mirrored(plane, out_w, out_h, *sigma)?;
                        plane.copy_from_slice(&blurred);
                    }
                    IntensityOp::Clamp(lo, hi) => intensity::clamp(plane, *lo, *hi),
                }
            }
        }
        Ok(out)
    }

    /// Augment a batch in parallel (rayon); sample `i` uses seed
    /// [`Pipeline::batch_seed`]`(base_seed, i)`, so the result does not depend on the number of
    /// threads.
    pub fn apply_batch(&self, samples: &[Sample], base_seed: u64) -> Result<Vec<Sample>> {
        samples
            .par_iter()
            .enumerate()
            .map(|(i, s)| self.apply(s, Self::batch_seed(base_seed, i)))
            .collect()
    }

    fn plan(&self, width: usize, height: usize, channels: usize, seed: u64) -> Result<Plan> {
        let (mut w, mut h) = (width, height);
        let mut geometry = Vec::new();
        let mut intensity = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let step_seed = derive_seed(seed, i as u64);
            let mut rng = SplitMix64::new(step_seed);
            // Channel 0 draws from the step's stream, as a grey sample always has; each further
            // channel from a stream of its own.
            let per_channel = |rng: &mut SplitMix64, range: &Range| -> Vec<f32> {
                std::iter::once(range.draw(rng))
                    .chain((1..channels).map(|c| {
                        range.draw(&mut SplitMix64::new(derive_seed(step_seed, c as u64)))
                    }))
                    .collect()
            };
            if !rng.bernoulli(step.probability as f64) {
                continue;
            }
            let (in_width, in_height) = (w, h);
            let geo = |op| PlannedGeo {
                op,
                in_width,
                in_height,
            };
            match &step.transform {
                Transform::FlipHorizontal => geometry.push(geo(GeoOp::FlipHorizontal)),
                Transform::FlipVertical => geometry.push(geo(GeoOp::FlipVertical)),
                Transform::Rot90 { k } => {
                    let k = k % 4;
                    if k % 2 == 1 {
                        (w, h) = (h, w);
                    }
                    geometry.push(geo(GeoOp::Rot90(k)));
                }
                Transform::RandomRot90 => {
                    let k = rng.below(4) as u8;
                    if k % 2 == 1 {
                        (w, h) = (h, w);
                    }
                    geometry.push(geo(GeoOp::Rot90(k)));
                }
                Transform::Affine(a) => {
                    let m = affine_inverse(a, &mut rng, w, h);
                    geometry.push(geo(GeoOp::Affine(m)));
                }
                Transform::RandomCrop { width, height } => {
                    if *width > w || *height > h {
                        return Err(Error::CropTooLarge {
                            crop_width: *width,
                            crop_height: *height,
                            width: w,
                            height: h,
                        });
                    }
                    let x0 = rng.below((w - width + 1) as u64) as usize;
                    let y0 = rng.below((h - height + 1) as u64) as usize;
                    (w, h) = (*width, *height);
                    geometry.push(geo(GeoOp::Crop { x0, y0 }));
                }
                Transform::MirrorPad { border } => {
                    (w, h) = (w + 2 * border, h + 2 * border);
                    geometry.push(geo(GeoOp::Pad(*border)));
                }
                Transform::DenseElastic {
                    alpha,
                    sigma,
                    smoothing,
                } => {
                    let generator = DenseElastic::new(alpha.draw(&mut rng), sigma.draw(&mut rng))?
                        .with_smoothing(*smoothing);
                    // Pooled planes, given back when the plan is dropped.
                    let (mut dx, mut dy) = (scratch::take(w * h), scratch::take(w * h));
                    generator.fill_field(w, h, &mut rng, &mut dx, &mut dy);
                    let field = DisplacementField {
                        width: w,
                        height: h,
                        dx,
                        dy,
                    };
                    geometry.push(geo(GeoOp::Field(field)));
                }
                Transform::GridElastic {
                    nodes_x,
                    nodes_y,
                    std,
                } => {
                    let generator = GridElastic::new(*nodes_x, *nodes_y, std.draw(&mut rng))?;
                    let field = generator.field_with(w, h, &mut rng);
                    geometry.push(geo(GeoOp::Field(field)));
                }
                Transform::Brightness { delta } => {
                    intensity.push(IntensityOp::Add(per_channel(&mut rng, delta)))
                }
                Transform::BrightnessFactor { factor } => {
                    intensity.push(IntensityOp::Scale(per_channel(&mut rng, factor)))
                }
                Transform::Contrast { factor } => {
                    intensity.push(IntensityOp::Contrast(per_channel(&mut rng, factor)))
                }
                Transform::Gamma { gamma } => {
                    intensity.push(IntensityOp::Gamma(per_channel(&mut rng, gamma)))
                }
                Transform::GaussianNoise { std } => {
                    intensity.push(IntensityOp::Noise(std.draw(&mut rng), rng.next_u64()))
                }
                Transform::PoissonNoise { peak } => {
                    intensity.push(IntensityOp::Poisson(peak.draw(&mut rng), rng.next_u64()))
                }
                Transform::GaussianBlur { sigma } => {
                    intensity.push(IntensityOp::Blur(sigma.draw(&mut rng)))
                }
                Transform::Clamp { min, max } => intensity.push(IntensityOp::Clamp(*min, *max)),
            }
        }
        Ok(Plan {
            geometry,
            intensity,
            width: w,
            height: h,
        })
    }

    /// The source coordinates of output row `y` through the plan's geometric steps, folded
    /// (in range or NaN), built from the output backwards. Row by row so the coordinates stay
    /// in L1 and no full-size map is ever stored; the per-pixel arithmetic is the same as
    /// composing whole maps.
    fn row_coords(&self, plan: &Plan, y: usize, xs: &mut [f32], ys: &mut [f32]) {
        for (x, (cx, cy)) in xs.iter_mut().zip(ys.iter_mut()).enumerate() {
            (*cx, *cy) = (x as f32, y as f32);
        }
        let mut integral = true;
        let border = self.border;
        for step in plan.geometry.iter().rev() {
            let (w, h) = (step.in_width, step.in_height);
            let coords = xs.iter_mut().zip(ys.iter_mut());
            match &step.op {
                GeoOp::FlipHorizontal => xs.iter_mut().for_each(|x| *x = (w - 1) as f32 - *x),
                GeoOp::FlipVertical => ys.iter_mut().for_each(|y| *y = (h - 1) as f32 - *y),
                GeoOp::Rot90(k) => {
                    let (last_x, last_y) = ((w - 1) as f32, (h - 1) as f32);
                    for (x, y) in coords {
                        (*x, *y) = match k {
                            1 => (last_x - *y, *x),
                            2 => (last_x - *x, last_y - *y),
                            3 => (*y, last_y - *x),
                            _ => (*x, *y),
                        };
                    }
                }
                GeoOp::Affine(m) => {
                    integral = false;
                    for (x, y) in coords {
                        let (px, py) = (*x as f64, *y as f64);
                        let sx = (m[0] * px + m[1] * py + m[2]) as f32;
                        let sy = (m[3] * px + m[4] * py + m[5]) as f32;
                        *x = fold_coord(sx, w, border);
                        *y = fold_coord(sy, h, border);
                    }
                }
                GeoOp::Crop { x0, y0 } => {
                    xs.iter_mut().for_each(|x| *x += *x0 as f32);
                    ys.iter_mut().for_each(|y| *y += *y0 as f32);
                }
                GeoOp::Pad(b) => {
                    xs.iter_mut()
                        .for_each(|x| *x = mirror_coord(*x - *b as f32, w));
                    ys.iter_mut()
                        .for_each(|y| *y = mirror_coord(*y - *b as f32, h));
                }
                GeoOp::Field(field) => {
                    for (x, y) in coords {
                        if x.is_nan() || y.is_nan() {
                            continue;
                        }
                        let (dx, dy) = if integral {
                            let i = *y as usize * w + *x as usize;
                            (field.dx[i], field.dy[i])
                        } else {
                            sample_field(field, *x, *y)
                        };
                        *x = fold_coord(*x + dx, w, border);
                        *y = fold_coord(*y + dy, h, border);
                    }
                    integral = false;
                }
            }
        }
    }

    fn resample(&self, sample: &Sample, plan: &Plan) -> Result<Sample> {
        let (width, height) = (plan.width, plan.height);
        let pixels = width * height;
        let in_pixels = sample.width() * sample.height();
        let mut smooth: Vec<(&[f32], f32)> = sample
            .image()
            .chunks_exact(in_pixels)
            .map(|plane| (plane, self.fill.image))
            .collect();
        if let Some(weight) = sample.weight() {
            smooth.push((weight, self.fill.weight));
        }
        let planes = Planes {
            width: sample.width(),
            height: sample.height(),
            smooth,
            label: Some((sample.label(), self.fill.label)),
        };
        // Only whole-pixel moves (flips, rot90, crops, padding): exact nearest.
        let integral = plan
            .geometry
            .iter()
            .all(|step| !matches!(step.op, GeoOp::Affine(_) | GeoOp::Field(_)));
        let interpolation = if integral {
            Interpolation::Nearest
        } else {
            self.interpolation
        };
        let mut image = vec![0.0f32; sample.channels() * pixels];
        let mut weight = sample.weight().map(|_| vec![0.0f32; pixels]);
        let mut label = vec![0u8; pixels];
        let mut outs: Vec<&mut [f32]> = image.chunks_exact_mut(pixels).collect();
        if let Some(weight) = weight.as_mut() {
            outs.push(weight);
        }
        let (mut xs, mut ys) = (vec![0.0f32; width], vec![0.0f32; width]);
        let mut scratch = SpanScratch::default();
        for (y, label_row) in label.chunks_exact_mut(width).enumerate() {
            self.row_coords(plan, y, &mut xs, &mut ys);
            resample_span(
                &planes,
                (&xs, &ys),
                interpolation,
                &mut outs,
                y * width,
                Some(label_row),
                &mut scratch,
            );
        }
        Sample::new(width, height, sample.channels(), image, label, weight)
    }
}

/// Bilinear sample of a field at an in-range point (edges clamped).
#[inline]
fn sample_field(field: &DisplacementField, x: f32, y: f32) -> (f32, f32) {
    let w = field.width;
    let x0 = (x.floor() as usize).min(w - 1);
    let y0 = (y.floor() as usize).min(field.height - 1);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let i00 = y0 * w + x0;
    let dxi = (x0 + 1 < w) as usize;
    let dyi = if y0 + 1 < field.height { w } else { 0 };
    let lerp = |p: &[f32]| {
        let top = p[i00] * (1.0 - fx) + p[i00 + dxi] * fx;
        let bottom = p[i00 + dyi] * (1.0 - fx) + p[i00 + dyi + dxi] * fx;
        top * (1.0 - fy) + bottom * fy
    };
    (lerp(&field.dx), lerp(&field.dy))
}

/// Draw an affine transform's parameters and return its inverse as `[a, b, c, d, e, f]`:
/// `source = (a x + b y + c, d x + e y + f)`.
fn affine_inverse(ranges: &AffineRanges, rng: &mut SplitMix64, w: usize, h: usize) -> [f64; 6] {
    let to_rad = std::f64::consts::PI / 180.0;
    let angle = ranges.rotation_deg.draw(rng) as f64 * to_rad;
    let scale = ranges.scale.draw(rng) as f64;
    let (s_sh, c_sh) = sin_cos(ranges.shear_deg.draw(rng) as f64 * to_rad);
    let shear = s_sh / c_sh;
    let tx = ranges.translate_x.draw(rng) as f64;
    let ty = ranges.translate_y.draw(rng) as f64;
    let (s, c) = sin_cos(angle);
    // A = scale * [[c, c*shear - s], [s, s*shear + c]]
    let a = [
        scale * c,
        scale * (c * shear - s),
        scale * s,
        scale * (s * shear + c),
    ];
    let det = a[0] * a[3] - a[1] * a[2];
    let inv = [a[3] / det, -a[1] / det, -a[2] / det, a[0] / det];
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    // source = c + inv (q - c - t)
    let (ox, oy) = (cx + tx, cy + ty);
    [
        inv[0],
        inv[1],
        cx - inv[0] * ox - inv[1] * oy,
        inv[2],
        inv[3],
        cy - inv[2] * ox - inv[3] * oy,
    ]
}

/// Ready-made pipelines, by name: `"none"`, `"reference"`, `"paper"`, `"robust"` ([`Preset::name`],
/// [`std::str::FromStr`], [`std::fmt::Display`]; with the `serde` feature the same strings in
/// serialised form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Preset {
    /// No augmentation (an empty pipeline): samples come out unchanged, so tiles are plain crops.
    None,
    /// The reference implementation's recipe (hayashimasa/UNet-PyTorch), with its faults fixed:
    /// horizontal flip p 0.5, a real vertical flip p 0.5, dense elastic (alpha U[100, 300],
    /// sigma U[10, 15]) p 0.5, brightness factor U[0.6, 1.4] (ColorJitter 0.4) then clamp to
    /// [0, 1] (as ColorJitter on an 8-bit image), Gaussian noise of std
    /// [`Preset::REFERENCE_NOISE_STD`] p 0.5. Expects images in [0, 1] before normalisation:
    /// the reference's noise std 1 after normalising by std 0.173 is a noise std of 0.173 here.
    /// The elastic step comes after the flips (the reference warps first): the same
    /// distribution, since the field's law is flip-invariant, and the composition is cheaper.
    /// The field is smoothed by the recursive Gaussian ([`FieldSmoothing::Recursive`]: within
    /// 0.05 px of scipy's exact field, several times faster). For another noise level, or
    /// [`FieldSmoothing::Exact`] for scipy's numbers, build the same steps yourself with
    /// [`Pipeline::builder`].
    Reference,
    /// The paper's: shifts (translation U[-20, 20] px), rotations (U[-180, 180] degrees),
    /// coarse-grid elastic deformation (3 x 3 nodes, 10 px), all always; grey-value variation:
    /// brightness U[-0.1, 0.1] p 0.5, contrast U[0.8, 1.2] p 0.5 (for images in [0, 1]).
    Paper,
    /// The reference's geometry (flips, dense elastic) with zoom U[0.8, 1.25] p 0.5, and the
    /// grey values of other microscopes and exposures: contrast U[0.3, 1.5] p 0.5, gamma
    /// U[0.5, 2] p 0.5, brightness factor U[0.6, 1.4], clamped to [0, 1], Gaussian blur sigma
    /// U[0.5, 1.5] p 0.2, Poisson-like noise (peak U[20, 200]) p 0.3, Gaussian noise std
    /// U[0, 0.08] p 0.5.
    Robust,
}

impl Preset {
    /// The reference's noise std (1 after normalisation) in [0, 1] units: the dataset std 0.173.
    pub const REFERENCE_NOISE_STD: f32 = 0.173;

    /// Every preset, in the order of [`Preset::name`]'s list.
    pub const ALL: [Preset; 4] = [
        Preset::None,
        Preset::Reference,
        Preset::Paper,
        Preset::Robust,
    ];

    /// The preset's name: `"none"`, `"reference"`, `"paper"` or `"robust"` (what [`std::str::FromStr`]
    /// parses and, with the `serde` feature, what it serialises to).
    pub fn name(self) -> &'static str {
        match self {
            Preset::None => "none",
            Preset::Reference => "reference",
            Preset::Paper => "paper",
            Preset::Robust => "robust",
        }
    }

    /// The pipeline (the presets' parameters are valid, so this errors only if the builder's
    /// checks do).
    pub fn pipeline(&self) -> Result<Pipeline> {
        match *self {
            Preset::None => Pipeline::builder().build(),
            Preset::Reference => Pipeline::builder()
                .step(Transform::FlipHorizontal, 0.5)
                .step(Transform::FlipVertical, 0.5)
                .step(
                    Transform::DenseElastic {
                        alpha: Range::new(100.0, 300.0),
                        sigma: Range::new(10.0, 15.0),
                        smoothing: FieldSmoothing::Recursive,
                    },
                    0.5,
                )
                .always(Transform::BrightnessFactor {
                    factor: Range::new(0.6, 1.4),
                })
                .always(Transform::Clamp { min: 0.0, max: 1.0 })
                .step(
                    Transform::GaussianNoise {
                        std: Range::fixed(Self::REFERENCE_NOISE_STD),
                    },
                    0.5,
                )
                .build(),
            Preset::Paper => Pipeline::builder()
                .always(Transform::Affine(AffineRanges {
                    rotation_deg: Range::symmetric(180.0),
                    translate_x: Range::symmetric(20.0),
                    translate_y: Range::symmetric(20.0),
                    ..AffineRanges::default()
                }))
                .always(Transform::GridElastic {
                    nodes_x: 3,
                    nodes_y: 3,
                    std: Range::fixed(10.0),
                })
                .step(
                    Transform::Brightness {
                        delta: Range::symmetric(0.1),
                    },
                    0.5,
                )
                .step(
                    Transform::Contrast {
                        factor: Range::new(0.8, 1.2),
                    },
                    0.5,
                )
                .build(),
            Preset::Robust => Pipeline::builder()
                .step(Transform::FlipHorizontal, 0.5)
                .step(Transform::FlipVertical, 0.5)
                .step(
                    Transform::Affine(AffineRanges {
                        scale: Range::new(0.8, 1.25),
                        ..AffineRanges::default()
                    }),
                    0.5,
                )
                .step(
                    Transform::DenseElastic {
                        alpha: Range::new(100.0, 300.0),
                        sigma: Range::new(10.0, 15.0),
                        smoothing: FieldSmoothing::Recursive,
                    },
                    0.5,
                )
                .step(
                    Transform::Contrast {
                        factor: Range::new(0.3, 1.5),
                    },
                    0.5,
                )
                .step(
                    Transform::Gamma {
                        gamma: Range::new(0.5, 2.0),
                    },
                    0.5,
                )
                .always(Transform::BrightnessFactor {
                    factor: Range::new(0.6, 1.4),
                })
                .always(Transform::Clamp { min: 0.0, max: 1.0 })
                .step(
                    Transform::GaussianBlur {
                        sigma: Range::new(0.5, 1.5),
                    },
                    0.2,
                )
                .step(
                    Transform::PoissonNoise {
                        peak: Range::new(20.0, 200.0),
                    },
                    0.3,
                )
                .step(
                    Transform::GaussianNoise {
                        std: Range::new(0.0, 0.08),
                    },
                    0.5,
                )
                .build(),
        }
    }
}

impl std::fmt::Display for Preset {
    /// The preset's [name](Preset::name).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;

    /// A preset by its [name](Preset::name) (exact, lower case).
    fn from_str(name: &str) -> Result<Self> {
        Preset::ALL
            .into_iter()
            .find(|preset| preset.name() == name)
            .ok_or_else(|| Error::UnknownPreset {
                name: name.to_owned(),
            })
    }
}
