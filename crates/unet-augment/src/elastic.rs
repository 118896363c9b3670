//! Elastic deformation fields, both kinds: the reference's dense smoothed noise and the paper's
//! coarse grid of Gaussian displacement vectors with bicubic upsampling.

use crate::error::{non_negative, Error, Result};
use crate::gaussian::{gaussian_half_kernel, ZeroPadded};
use crate::recursive::{smooth_recursive_transposed, Deriche};
use crate::remap::{cubic_weights, mirror_index, CoordMap};
use crate::rng::SplitMix64;
use crate::scratch;

/// scipy's default truncation of the Gaussian kernel, in sigmas.
pub const GAUSSIAN_TRUNCATE: f32 = 4.0;

/// A per-pixel displacement: output pixel `(x, y)` samples the source at `(x + dx, y + dy)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplacementField {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Displacement along x (columns), row-major.
    pub dx: Vec<f32>,
    /// Displacement along y (rows), row-major.
    pub dy: Vec<f32>,
}

impl DisplacementField {
    /// The zero field.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            dx: vec![0.0; width * height],
            dy: vec![0.0; width * height],
        }
    }

    /// The coordinate map `(x + dx, y + dy)` (feed it to [`crate::remap`]).
    pub fn to_coord_map(&self) -> CoordMap {
        let mut map = CoordMap::identity(self.width, self.height);
        for (c, d) in map.xs.iter_mut().zip(&self.dx) {
            *c += d;
        }
        for (c, d) in map.ys.iter_mut().zip(&self.dy) {
            *c += d;
        }
        map
    }
}

fn check_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        Err(Error::EmptyImage {
            width,
            height,
            channels: 1,
        })
    } else {
        Ok(())
    }
}

/// The reference's dense elastic field (Simard et al. 2003): each component is uniform(-1, 1)
/// noise smoothed by `scipy.ndimage.gaussian_filter(noise, sigma, mode="constant", cval=0)`,
/// times `alpha`.
///
/// ```
/// let field = unet_augment::DenseElastic::new(250.0, 10.0).unwrap().field(64, 48, 1).unwrap();
/// assert_eq!(field.dx.len(), 64 * 48);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseElastic {
    alpha: f32,
    sigma: f32,
    smoothing: FieldSmoothing,
}

/// How [`DenseElastic`] smooths its noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldSmoothing {
    /// scipy's `gaussian_filter` exactly (f32 FIR truncated at 4 sigma, to ~1e-7): cost grows
    /// with sigma (81 to 121 taps per pass for sigma 10 to 15).
    #[default]
    Exact,
    /// Deriche's 4th-order recursive Gaussian, a fixed ~16 operations per pixel and pass
    /// whatever sigma: several times faster for the reference's sigma 10..15. The field
    /// differs from the exact one by about 0.05% of its size (0.002 px RMS, under 0.01 px
    /// max, for alpha 250 and sigma 10 or 15; a test bounds it at 0.05 px RMS); its
    /// statistics are those of the exact field. The noise fills the plane column by column
    /// (the recursion's layout), so a seed gives another field than with `Exact`. Below sigma [`FieldSmoothing::RECURSIVE_MIN_SIGMA`] the exact FIR is used (it is
    /// cheap there, and the recursion's fit is made for wide kernels).
    Recursive,
}

impl FieldSmoothing {
    /// The smallest sigma [`FieldSmoothing::Recursive`] applies the recursion to.
    pub const RECURSIVE_MIN_SIGMA: f32 = 2.0;
}

impl DenseElastic {
    /// A generator with strength `alpha` (pixels) and smoothness `sigma` (pixels), both >= 0.
    pub fn new(alpha: f32, sigma: f32) -> Result<Self> {
        non_negative("alpha", alpha as f64)?;
        non_negative("sigma", sigma as f64)?;
        Ok(Self {
            alpha,
            sigma,
            smoothing: FieldSmoothing::Exact,
        })
    }

    /// The same generator with another smoothing (default [`FieldSmoothing::Exact`]).
    pub fn with_smoothing(self, smoothing: FieldSmoothing) -> Self {
        Self { smoothing, ..self }
    }

    /// A field for a `width` x `height` image from `seed`.
    pub fn field(&self, width: usize, height: usize, seed: u64) -> Result<DisplacementField> {
        check_size(width, height)?;
        Ok(self.field_with(width, height, &mut SplitMix64::new(seed)))
    }

    /// A field drawing from `rng`: all of dx's noise, then all of dy's.
    pub fn field_with(
        &self,
        width: usize,
        height: usize,
        rng: &mut SplitMix64,
    ) -> DisplacementField {
        let mut dx = vec![0.0f32; width * height];
        let mut dy = vec![0.0f32; width * height];
        self.fill_field(width, height, rng, &mut dx, &mut dy);
        DisplacementField {
            width,
            height,
            dx,
            dy,
        }
    }

    /// [`DenseElastic::field_with`] into given planes (`width * height` each).
    pub(crate) fn fill_field(
        &self,
        width: usize,
        height: usize,
        rng: &mut SplitMix64,
        dx: &mut [f32],
        dy: &mut [f32],
    ) {
        if self.smoothing == FieldSmoothing::Recursive
            && self.sigma >= FieldSmoothing::RECURSIVE_MIN_SIGMA
        {
            let coefficients = Deriche::new(self.sigma as f64);
            // The noise fills the transposed layout: column after column of the plane.
            let mut noise = scratch::take(width * height);
            for out in [dx, dy] {
                rng.fill_uniform_symmetric(&mut noise);
                smooth_recursive_transposed(&noise, out, width, height, &coefficients, self.alpha);
            }
            scratch::give(noise);
            return;
        }
        let half = gaussian_half_kernel(self.sigma, GAUSSIAN_TRUNCATE)
            .expect("sigma was validated by DenseElastic::new");
        // The noise goes straight into the padded plane the smoothing reads.
        let mut noise = ZeroPadded::new(width, height, half.len() - 1);
        for out in [dx, dy] {
            rng.fill_uniform_symmetric(noise.interior_mut());
            noise.smooth_into(out, &half, self.alpha);
        }
    }

    /// The theoretical standard deviation of each component far (> truncate * sigma) from the
    /// border: `alpha * sqrt(1/3) * sum_k g_k^2`, with `g` the normalised 1-D kernel (the 2-D
    /// kernel is `g g^T`, so its sum of squares is `(sum_k g_k^2)^2`, and uniform(-1, 1) has
    /// variance 1/3). For a continuous Gaussian `sum g^2 = 1 / (2 sqrt(pi) sigma)`: alpha 250,
    /// sigma 10 gives 4.07 px.
    pub fn interior_std(&self) -> f64 {
        let half = gaussian_half_kernel(self.sigma, GAUSSIAN_TRUNCATE)
            .expect("sigma was validated by DenseElastic::new");
        let sum_sq: f64 = half
            .iter()
            .enumerate()
            .map(|(k, &g)| (if k == 0 { 1.0 } else { 2.0 }) * (g as f64).powi(2))
            .sum();
        self.alpha as f64 * (1.0f64 / 3.0).sqrt() * sum_sq
    }
}

/// The paper's elastic field: displacement vectors on a coarse `nodes_x` x `nodes_y` grid
/// (3 x 3 in the paper) drawn from N(0, std^2) per component, upsampled to every pixel by
/// bicubic interpolation.
///
/// Grid node `i` sits at `x = i * (width - 1) / (nodes_x - 1)` (the corner nodes on the corner
/// pixels). The upsampling is Keys cubic convolution (a = -0.5), which passes through the nodes
/// (so the std at a node is exactly `std`); the 4 taps beyond the grid are mirrored like image
/// borders. A single node along an axis means no variation along it.
///
/// ```
/// let grid = unet_augment::GridElastic::paper();
/// let field = grid.field(64, 48, 1).unwrap();
/// assert_eq!(field.dy.len(), 64 * 48);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridElastic {
    nodes_x: usize,
    nodes_y: usize,
    std: f32,
}

impl GridElastic {
    /// A generator with a grid of `nodes_x` x `nodes_y` (each >= 1) and per-component `std`.
    pub fn new(nodes_x: usize, nodes_y: usize, std: f32) -> Result<Self> {
        for (name, nodes) in [("nodes_x", nodes_x), ("nodes_y", nodes_y)] {
            if nodes == 0 {
                return Err(Error::InvalidParameter {
                    name,
                    value: 0.0,
                    reason: "the grid needs at least one node per axis",
                });
            }
        }
        non_negative("std", std as f64)?;
        Ok(Self {
            nodes_x,
            nodes_y,
            std,
        })
    }

    /// The paper's setting: 3 x 3 nodes, 10 px standard deviation.
    pub fn paper() -> Self {
        Self {
            nodes_x: 3,
            nodes_y: 3,
            std: 10.0,
        }
    }

    /// A field for a `width` x `height` image from `seed`.
    pub fn field(&self, width: usize, height: usize, seed: u64) -> Result<DisplacementField> {
        check_size(width, height)?;
        Ok(self.field_with(width, height, &mut SplitMix64::new(seed)))
    }

    /// A field drawing from `rng`: the nodes' dx row by row, then their dy.
    pub fn field_with(
        &self,
        width: usize,
        height: usize,
        rng: &mut SplitMix64,
    ) -> DisplacementField {
        let (nx, ny) = (self.nodes_x, self.nodes_y);
        let wx = node_weights(width, nx);
        let wy = node_weights(height, ny);
        let mut components = [vec![0.0f32; width * height], vec![0.0f32; width * height]];
        let mut rows = vec![0.0f32; ny * width];
        for out in &mut components {
            let nodes: Vec<f32> = (0..nx * ny)
                .map(|_| (rng.normal() * self.std as f64) as f32)
                .collect();
            // Interpolate each node row along x, then the rows along y.
            for (j, row) in rows.chunks_exact_mut(width).enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    let weights = &wx[x * nx..(x + 1) * nx];
                    *v = weights
                        .iter()
                        .zip(&nodes[j * nx..])
                        .map(|(a, b)| a * b)
                        .sum();
                }
            }
            for (y, line) in out.chunks_exact_mut(width).enumerate() {
                for (j, &weight) in wy[y * ny..(y + 1) * ny].iter().enumerate() {
                    if weight != 0.0 {
                        for (o, &r) in line.iter_mut().zip(&rows[j * width..(j + 1) * width]) {
                            *o += weight * r;
                        }
                    }
                }
            }
        }
        let [dx, dy] = components;
        DisplacementField {
            width,
            height,
            dx,
            dy,
        }
    }

    /// The theoretical standard deviation of each component at pixel `(x, y)` of a
    /// `width` x `height` field: `std * sqrt(sum_i a_i^2) * sqrt(sum_j b_j^2)` where `a`, `b` are
    /// the (mirror-folded) cubic weights of the nodes along x and y at that pixel, because the
    /// field is a weighted sum of independent N(0, std^2) node values. It is `std` at a node.
    pub fn std_at(&self, width: usize, height: usize, x: usize, y: usize) -> f64 {
        let wx = node_weights(width, self.nodes_x);
        let wy = node_weights(height, self.nodes_y);
        let sum_sq = |w: &[f32]| w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        self.std as f64
            * (sum_sq(&wx[x * self.nodes_x..(x + 1) * self.nodes_x])
                * sum_sq(&wy[y * self.nodes_y..(y + 1) * self.nodes_y]))
            .sqrt()
    }
}

/// For each of `len` pixels, the weight of each of `nodes` grid nodes (row-major `len x nodes`).
fn node_weights(len: usize, nodes: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; len * nodes];
    if nodes == 1 || len == 1 {
        for row in out.chunks_exact_mut(nodes) {
            row[0] = 1.0;
        }
        return out;
    }
    let step = (nodes - 1) as f64 / (len - 1) as f64;
    for (p, row) in out.chunks_exact_mut(nodes).enumerate() {
        let u = p as f64 * step;
        let i0 = (u.floor() as usize).min(nodes - 1);
        let taps = cubic_weights((u - i0 as f64) as f32);
        for (k, &w) in taps.iter().enumerate() {
            row[mirror_index(i0 as isize + k as isize - 1, nodes)] += w;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interior_std_of_reference_setting_is_about_4_07() {
        let std = DenseElastic::new(250.0, 10.0).unwrap().interior_std();
        assert!((std - 4.07).abs() < 0.01, "{std}");
    }

    #[test]
    fn grid_field_passes_through_nodes() {
        let grid = GridElastic::new(3, 3, 10.0).unwrap();
        let mut rng = SplitMix64::new(9);
        let field = grid.field_with(21, 11, &mut rng);
        let mut rng = SplitMix64::new(9);
        let nodes_dx: Vec<f32> = (0..9).map(|_| (rng.normal() * 10.0) as f32).collect();
        for j in 0..3 {
            for i in 0..3 {
                let (x, y) = (i * 10, j * 5);
                assert!((field.dx[y * 21 + x] - nodes_dx[j * 3 + i]).abs() < 1e-5);
            }
        }
        assert!((grid.std_at(21, 11, 10, 5) - 10.0).abs() < 1e-9);
        assert!(grid.std_at(21, 11, 5, 5) < 10.0);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(DenseElastic::new(-1.0, 10.0).is_err());
        assert!(DenseElastic::new(1.0, -10.0).is_err());
        assert!(GridElastic::new(0, 3, 10.0).is_err());
        assert!(GridElastic::new(3, 3, f32::NAN).is_err());
        assert!(GridElastic::paper().field(0, 3, 1).is_err());
    }
}
