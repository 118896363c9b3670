//! The U-Net paper's loss weight map (Ronneberger et al. 2015, eq. 2):
//!
//! w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))
//!
//! where w_c balances the class frequencies and d1, d2 are the Euclidean distances from pixel x
//! to the nearest and the second-nearest cell (cells = connected components of label > 0).
//!
//! Class-index images (labels 0..K, 0 the background, optionally an ignore value) go through
//! the same computation ([`ValidWeightMapParams::class_weight_map`]): w_c balances the K
//! classes, and the cells are the connected components of each foreground class.
//!
//! The distances are exact: each cell gets its own linear-time squared distance transform
//! (Felzenszwalb & Huttenlocher), restricted to its bounding box grown by the distance beyond
//! which the border term drops below [`BORDER_TOLERANCE`], folded into running nearest/second
//! nearest arrays. A 512x512 ISBI section takes a few milliseconds, so the map can be recomputed
//! for every augmented sample.
//!
//! ```
//! use unet_weights::{weight_map, nearest_two_distances, ClassWeight, Connectivity, WeightMapParams};
//!
//! // Two 2x2 cells (255) with a 3-pixel gap of membrane (0) between them.
//! #[rustfmt::skip]
//! let labels: Vec<u8> = [
//!     [255, 255, 0, 0, 0, 255, 255],
//!     [255, 255, 0, 0, 0, 255, 255],
//! ].concat();
//! let params = WeightMapParams { class_weight: ClassWeight::None, ..WeightMapParams::default() };
//! let weights = weight_map(&labels, 2, 7, &params)?;
//!
//! // The middle of the gap is 2 px from each cell: w = 1 + 10 exp(-(2 + 2)^2 / (2 * 5^2)).
//! let expected = 1.0 + 10.0 * (-16.0f32 / 50.0).exp();
//! assert!((weights[3] - expected).abs() < 1e-5);
//! // Cell pixels get no border term by default.
//! assert_eq!(weights[0], 1.0);
//!
//! let nearest = nearest_two_distances(&labels, 2, 7, Connectivity::Four)?;
//! assert_eq!((nearest.d1[2], nearest.d2[2]), (1.0, 3.0));
//! # Ok::<(), unet_weights::Error>(())
//! ```

mod distance;
mod error;
mod labelling;
mod scratch;
mod weight_map;

pub use distance::{nearest_two_distances, nearest_two_distances_within, NearestTwo};
pub use error::{Error, Result};
pub use labelling::{
    label_class_components, label_components, BoundingBox, Components, Connectivity,
};
pub use weight_map::{
    class_weight_map, class_weight_maps, weight_map, weight_maps, BorderTerm, ClassLabels,
    ClassWeight, ValidWeightMapParams, WeightMapParams, BORDER_TOLERANCE,
};
