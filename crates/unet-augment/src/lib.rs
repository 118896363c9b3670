//! Joint augmentation of image, label and weight map for segmentation training.
//!
//! With 30 labelled sections (ISBI 2012), augmentation is what lets U-Net learn. This crate
//! moves an image (f32 planes), its label (u8) and its optional loss weights (f32) together
//! through flips, quarter turns, affine transforms, crops, mirror padding and elastic
//! deformations (the reference's dense field and the paper's coarse grid), composed into one
//! coordinate map and resampled once; labels by nearest neighbour, so they keep their values.
//! Intensity steps (brightness, contrast, gamma, noise) touch the image only.
//!
//! Everything is reproducible from a seed with a portable generator ([`SplitMix64`]) and
//! portable arithmetic: the same seed gives the same output on every platform, and a batch gives
//! the same output whatever the number of threads.
//!
//! ```
//! use unet_augment::{Preset, Sample};
//!
//! let (w, h) = (64, 48);
//! let image: Vec<f32> = (0..w * h).map(|i| (i % w) as f32 / w as f32).collect();
//! let label: Vec<u8> = (0..w * h).map(|i| if i % w < 20 { 0 } else { 255 }).collect();
//! let sample = Sample::grey(w, h, image, label, Some(vec![1.0; w * h])).unwrap();
//!
//! let pipeline = Preset::Reference.pipeline().unwrap();
//! let out = pipeline.apply(&sample, 7).unwrap();
//! assert_eq!((out.width(), out.height()), (w, h));
//! assert!(out.label().iter().all(|&l| l == 0 || l == 255));
//!
//! let batch = pipeline.apply_batch(&[sample.clone(), sample], 1).unwrap();
//! assert_eq!(batch.len(), 2);
//! ```

mod elastic;
mod error;
mod gaussian;
pub mod intensity;
mod pipeline;
mod recursive;
mod remap;
mod rng;
mod sample;
mod scratch;

pub use elastic::{
    DenseElastic, DisplacementField, FieldSmoothing, GridElastic, GAUSSIAN_TRUNCATE,
};
pub use error::{Error, Result};
pub use gaussian::{
    gaussian_blur_mirrored, gaussian_filter, gaussian_half_kernel, gaussian_kernel,
};
pub use pipeline::{AffineRanges, Fill, Pipeline, PipelineBuilder, Preset, Range, Step, Transform};
pub use remap::{remap, remap_labels, BorderMode, CoordMap, Interpolation};
pub use rng::{derive_seed, mix64, SplitMix64};
pub use sample::Sample;
