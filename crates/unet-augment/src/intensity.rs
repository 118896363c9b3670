//! Grey-value transforms of one image plane (never applied to labels or weights).

use crate::rng::{self, SplitMix64};

/// Additive brightness: `x + delta`.
pub fn adjust_brightness(plane: &mut [f32], delta: f32) {
    plane.iter_mut().for_each(|v| *v += delta);
}

/// Multiplicative brightness (torchvision `ColorJitter(brightness)`): `x * factor`.
pub fn scale_brightness(plane: &mut [f32], factor: f32) {
    plane.iter_mut().for_each(|v| *v *= factor);
}

/// Contrast around the plane's mean: `mean + factor * (x - mean)`.
pub fn adjust_contrast(plane: &mut [f32], factor: f32) {
    if plane.is_empty() {
        return;
    }
    let mean = (plane.iter().map(|&v| v as f64).sum::<f64>() / plane.len() as f64) as f32;
    plane
        .iter_mut()
        .for_each(|v| *v = mean + factor * (*v - mean));
}

/// Gamma: `sign(x) * |x|^gamma` (for images in [0, 1], plain `x^gamma`), computed with a
/// portable power so the result is the same on every platform.
pub fn adjust_gamma(plane: &mut [f32], gamma: f32) {
    plane.iter_mut().for_each(|v| {
        let magnitude = rng::powf(v.abs() as f64, gamma as f64) as f32;
        *v = if *v < 0.0 { -magnitude } else { magnitude };
    });
}

/// Additive Gaussian noise of standard deviation `std`, one N(0, 1) draw from `rng` per pixel.
pub fn add_gaussian_noise(plane: &mut [f32], std: f32, rng: &mut SplitMix64) {
    plane
        .iter_mut()
        .for_each(|v| *v += (rng.normal() * std as f64) as f32);
}

/// Poisson-like (shot) noise: `x + sqrt(max(x, 0) / peak) * N(0, 1)`, one draw from `rng` per
/// pixel, the Gaussian approximation of a photon count of `peak` at value 1.
pub fn add_shot_noise(plane: &mut [f32], peak: f32, rng: &mut SplitMix64) {
    let peak = f64::from(peak);
    plane.iter_mut().for_each(|v| {
        let std = (f64::from(*v).max(0.0) / peak).sqrt();
        *v += (rng.normal() * std) as f32;
    });
}

/// Clamp to `[min, max]`.
pub fn clamp(plane: &mut [f32], min: f32, max: f32) {
    plane.iter_mut().for_each(|v| *v = v.clamp(min, max));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_transforms_do_what_they_say() {
        let mut p = vec![0.0, 0.5, 1.0];
        adjust_contrast(&mut p, 2.0);
        assert_eq!(p, vec![-0.5, 0.5, 1.5]);
        adjust_brightness(&mut p, 0.5);
        assert_eq!(p, vec![0.0, 1.0, 2.0]);
        scale_brightness(&mut p, 0.5);
        assert_eq!(p, vec![0.0, 0.5, 1.0]);
        adjust_gamma(&mut p, 2.0);
        assert!((p[1] - 0.25).abs() < 1e-7 && p[0] == 0.0 && (p[2] - 1.0).abs() < 1e-7);
        clamp(&mut p, 0.1, 0.9);
        assert_eq!(p[0], 0.1);
        let mut flat = vec![0.0f32; 50_000];
        add_gaussian_noise(&mut flat, 0.5, &mut SplitMix64::new(5));
        let var = flat.iter().map(|&v| (v * v) as f64).sum::<f64>() / flat.len() as f64;
        assert!((var.sqrt() - 0.5).abs() < 0.01);
    }
}
