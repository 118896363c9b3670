//! How a trained model holds up on other microscopes: labelled sections changed the way another
//! instrument or exposure changes them ([`Shift`]: contrast, gamma, brightness, noise, blur,
//! pixel size, 16-bit storage), predicted whole as `unet predict` does and scored as
//! `unet score` does ([`robustness`], `unet robustness`).

use std::fmt;

use unet_augment::{
    gaussian_blur_mirrored, intensity, remap, remap_labels, BorderMode, CoordMap, Interpolation,
    SplitMix64,
};
use unet_data::Stack;
use unet_metrics::{score_stack, ScoreOptions, ScoreReport};
use unet_model::tiling::TileOptions;
use unet_model::{overlap_tile_predict, Normalisation, UNet};

use crate::{Error, Result};

/// One change of the grey values or the geometry of a section, with grey values in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// The sections as they are.
    Identity,
    /// Contrast around mid-grey: `0.5 + factor (v - 0.5)`.
    Contrast(f32),
    /// Gamma: `v^gamma`.
    Gamma(f32),
    /// Brightness: `v * factor`, clamped to [0, 1].
    Brightness(f32),
    /// Additive Gaussian noise of this standard deviation, clamped to [0, 1] (seeded).
    Noise(f32),
    /// Gaussian blur of this sigma in pixels (mirrored at the borders).
    Blur(f32),
    /// The pixel size changed: the section resampled by this factor (bilinear image, nearest
    /// labels), so the cells are that much larger.
    Zoom(f32),
    /// Stored as 16-bit (`round(v * 65535)`) and read back.
    Bits16,
}

impl Shift {
    /// The kind of shift (`"contrast"`, ...), the figure's panel.
    pub fn kind(&self) -> &'static str {
        match self {
            Shift::Identity => "none",
            Shift::Contrast(_) => "contrast",
            Shift::Gamma(_) => "gamma",
            Shift::Brightness(_) => "brightness",
            Shift::Noise(_) => "noise",
            Shift::Blur(_) => "blur",
            Shift::Zoom(_) => "zoom",
            Shift::Bits16 => "16-bit",
        }
    }

    /// The shift's amount (1 for the identity and 16-bit storage).
    pub fn amount(&self) -> f32 {
        match *self {
            Shift::Identity | Shift::Bits16 => 1.0,
            Shift::Contrast(v)
            | Shift::Gamma(v)
            | Shift::Brightness(v)
            | Shift::Noise(v)
            | Shift::Blur(v)
            | Shift::Zoom(v) => v,
        }
    }

    /// The shifted section `image` (`h x w`, values in [0, 1]) and its labels; returns the new
    /// size too (only [`Shift::Zoom`] changes it). `seed` drives the noise.
    pub fn apply(
        &self,
        image: &[f32],
        labels: &[u8],
        (h, w): (usize, usize),
        seed: u64,
    ) -> Result<(Vec<f32>, Vec<u8>, usize, usize)> {
        let mut out = image.to_vec();
        match *self {
            Shift::Identity => {}
            Shift::Contrast(c) => out.iter_mut().for_each(|v| *v = 0.5 + c * (*v - 0.5)),
            Shift::Gamma(g) => intensity::adjust_gamma(&mut out, g),
            Shift::Brightness(b) => {
                intensity::scale_brightness(&mut out, b);
                intensity::clamp(&mut out, 0.0, 1.0);
            }
            Shift::Noise(std) => {
                intensity::add_gaussian_noise(&mut out, std, &mut SplitMix64::new(seed));
                intensity::clamp(&mut out, 0.0, 1.0);
            }
            Shift::Blur(sigma) => out = gaussian_blur_mirrored(&out, w, h, sigma)?,
            Shift::Zoom(z) => {
                let (zh, zw) = (zoomed(h, z), zoomed(w, z));
                let mut map = CoordMap::identity(zw, zh);
                // Pixel centres map to pixel centres.
                for (x, y) in map.xs.iter_mut().zip(map.ys.iter_mut()) {
                    *x = (*x + 0.5) / z - 0.5;
                    *y = (*y + 0.5) / z - 0.5;
                }
                let image = remap(
                    image,
                    w,
                    h,
                    &map,
                    Interpolation::Bilinear,
                    BorderMode::Mirror,
                    0.0,
                )?;
                let labels = remap_labels(labels, w, h, &map, BorderMode::Mirror, 0)?;
                return Ok((image, labels, zh, zw));
            }
            Shift::Bits16 => out
                .iter_mut()
                .for_each(|v| *v = (v.clamp(0.0, 1.0) * 65535.0).round() / 65535.0),
        }
        Ok((out, labels.to_vec(), h, w))
    }
}

fn zoomed(n: usize, z: f32) -> usize {
    ((n as f32 * z).round() as usize).max(1)
}

impl fmt::Display for Shift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shift::Identity => write!(f, "as they are"),
            Shift::Contrast(v) => write!(f, "contrast x{v} around mid-grey"),
            Shift::Gamma(v) => write!(f, "gamma {v}"),
            Shift::Brightness(v) => write!(f, "brightness x{v}"),
            Shift::Noise(v) => write!(f, "Gaussian noise, std {v}"),
            Shift::Blur(v) => write!(f, "blur, sigma {v} px"),
            Shift::Zoom(v) => write!(f, "rescaled x{v}"),
            Shift::Bits16 => write!(f, "stored as 16-bit"),
        }
    }
}

/// The benchmark's grid: contrast 0.3-1.0, gamma 0.5-2.0, brightness x0.6-x1.4, noise std
/// 0.02-0.08, blur sigma 0.5-1.5, zoom 0.8-1.25, 16-bit storage, and the sections as they are.
pub fn default_grid() -> Vec<Shift> {
    let mut grid = vec![Shift::Identity];
    grid.extend([0.3, 0.4, 0.6, 0.8].map(Shift::Contrast));
    grid.extend([0.5, 0.6, 0.8, 1.25, 1.6, 2.0].map(Shift::Gamma));
    grid.extend([0.6, 0.8, 1.2, 1.4].map(Shift::Brightness));
    grid.extend([0.02, 0.05, 0.08].map(Shift::Noise));
    grid.extend([0.5, 1.0, 1.5].map(Shift::Blur));
    grid.extend([0.8, 0.87, 1.15, 1.25].map(Shift::Zoom));
    grid.push(Shift::Bits16);
    grid
}

/// The scores of one shift.
#[derive(Debug, Clone)]
pub struct RobustnessRow {
    /// The shift.
    pub shift: Shift,
    /// Pixel scores at `P(cell) > 0.5`, thinned V-Rand and V-Info (best threshold), over the
    /// shifted sections.
    pub report: ScoreReport,
}

/// How [`robustness`] shifts and predicts.
#[derive(Debug, Clone)]
pub struct RobustnessOptions {
    /// The shifts ([`default_grid`]).
    pub grid: Vec<Shift>,
    /// The overlap-tile settings, as `unet predict`'s.
    pub tiles: TileOptions,
    /// The noise of section `s` uses seed `seed + s`.
    pub seed: u64,
}

impl Default for RobustnessOptions {
    fn default() -> Self {
        RobustnessOptions {
            grid: default_grid(),
            tiles: TileOptions {
                output_tile: 512,
                ..TileOptions::default()
            },
            seed: 2015,
        }
    }
}

/// Predicts `sections` of the 8-bit `images`, changed by each shift of the grid, with `model`
/// (its input `normalisation`, overlap-tile as `unet predict`), and scores them against the
/// equally changed `labels`.
pub fn robustness(
    model: &UNet,
    normalisation: &Normalisation,
    images: &Stack<u8>,
    labels: &Stack<u8>,
    sections: &[usize],
    options: &RobustnessOptions,
) -> Result<Vec<RobustnessRow>> {
    let RobustnessOptions { grid, tiles, seed } = options;
    if sections.is_empty() {
        return Err(Error::Config("no section to score".into()));
    }
    let (h, w) = (images.height(), images.width());
    let mut rows = Vec::with_capacity(grid.len());
    for &shift in grid {
        let (mut probs, mut truth) = (Vec::new(), Vec::new());
        let mut size = (h, w);
        for &s in sections {
            let unit: Vec<f32> = images
                .page(s)
                .iter()
                .map(|&v| f32::from(v) / 255.0)
                .collect();
            let (mut x, y, sh, sw) = shift.apply(&unit, labels.page(s), (h, w), seed + s as u64)?;
            normalisation.apply(&mut x, 1);
            probs.extend(overlap_tile_predict(model, &x, sh, sw, tiles)?);
            truth.extend(y);
            size = (sh, sw);
        }
        let report = score_stack(
            &probs,
            &truth,
            sections.len(),
            size.0,
            size.1,
            &ScoreOptions::default(),
        )?;
        rows.push(RobustnessRow { shift, report });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_change_grey_values_and_sizes_as_documented() {
        let (h, w) = (8, 10);
        let image: Vec<f32> = (0..h * w).map(|i| i as f32 / (h * w) as f32).collect();
        let labels: Vec<u8> = (0..h * w)
            .map(|i| if i % 3 == 0 { 0 } else { 255 })
            .collect();
        let apply = |s: Shift| s.apply(&image, &labels, (h, w), 1).unwrap();
        assert_eq!(apply(Shift::Identity).0, image);
        let (c, ..) = apply(Shift::Contrast(0.5));
        assert!((c[0] - 0.25).abs() < 1e-6, "{}", c[0]);
        let (g, ..) = apply(Shift::Gamma(2.0));
        assert!((g[40] - image[40] * image[40]).abs() < 1e-6);
        let (b, ..) = apply(Shift::Brightness(1.4));
        assert!(b.iter().all(|&v| (0.0..=1.0).contains(&v)));
        let (n, ..) = apply(Shift::Noise(0.05));
        assert_ne!(n, image);
        assert_eq!(n, apply(Shift::Noise(0.05)).0, "seeded");
        let (z, zl, zh, zw) = apply(Shift::Zoom(1.25));
        assert_eq!((zh, zw, z.len(), zl.len()), (10, 13, 130, 130));
        assert!(zl.iter().all(|&l| l == 0 || l == 255), "labels stay labels");
        let (q, ..) = apply(Shift::Bits16);
        assert!(q.iter().zip(&image).all(|(a, b)| (a - b).abs() < 1e-5));
        assert_eq!(default_grid().len(), 26);
        assert_eq!(default_grid()[0], Shift::Identity);
    }
}
