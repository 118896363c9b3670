//! The measured displacement std of both elastic kinds against their theory, over many seeds.
//!
//! Dense: each component is alpha * (g * g^T) * U where U is iid uniform(-1, 1) (variance 1/3)
//! and g the normalised 1-D Gaussian kernel; away from the border (where scipy's cval 0 cuts
//! the kernel) its variance is alpha^2 / 3 * (sum g^2)^2, so std = alpha / sqrt(3) * sum g^2
//! (continuous limit: sum g^2 = 1 / (2 sqrt(pi) sigma); alpha 250, sigma 10 -> 4.07 px).
//! The field is correlated over ~sigma, so many pixels of one field are worth few samples:
//! 80 fields of 256^2 with an interior of 160^2 give ~6000 effective samples, a ~1% standard
//! error on the std; the tolerance is 4%.
//!
//! Grid: the field at a pixel is sum_ij a_i b_j G_ij with iid G ~ N(0, std^2) and a, b the
//! (mirror-folded) cubic weights of the nodes, so its std is std * |a| * |b|: exactly `std` at
//! the nodes (cubic convolution interpolates) and less between them. 4000 fields give a 0.8%
//! standard error; the tolerance is 3%.

use unet_augment::{gaussian_filter, DenseElastic, FieldSmoothing, GridElastic, SplitMix64};

fn std_of(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
}

#[test]
fn dense_field_interior_std_matches_theory() {
    let dense = DenseElastic::new(250.0, 10.0).unwrap();
    let theory = dense.interior_std();
    assert!((theory - 4.07).abs() < 0.01, "theory {theory}");
    let (size, margin) = (256, 48); // margin > truncate * sigma = 40
    let mut values = Vec::new();
    for seed in 0..80 {
        let field = dense.field(size, size, seed).unwrap();
        for y in margin..size - margin {
            for x in margin..size - margin {
                values.push(field.dx[y * size + x] as f64);
                values.push(field.dy[y * size + x] as f64);
            }
        }
    }
    let measured = std_of(&values);
    assert!(
        (measured / theory - 1.0).abs() < 0.04,
        "measured {measured} vs theory {theory}"
    );
}

#[test]
fn grid_field_std_matches_theory_at_and_between_nodes() {
    let grid = GridElastic::paper();
    let size = 33; // nodes at 0, 16, 32
    let points = [(16, 16), (0, 32), (8, 16), (8, 8), (4, 20)];
    let mut samples = vec![Vec::new(); points.len()];
    for seed in 0..4000 {
        let field = grid.field(size, size, seed).unwrap();
        for (s, &(x, y)) in samples.iter_mut().zip(&points) {
            s.push(field.dx[y * size + x] as f64);
            s.push(field.dy[y * size + x] as f64);
        }
    }
    for (s, &(x, y)) in samples.iter().zip(&points) {
        let theory = grid.std_at(size, size, x, y);
        let measured = std_of(s);
        assert!(
            (measured / theory - 1.0).abs() < 0.03,
            "({x}, {y}): measured {measured} vs theory {theory}"
        );
    }
    assert!((grid.std_at(size, size, 16, 16) - 10.0).abs() < 1e-9);
    assert!(
        grid.std_at(size, size, 8, 8) < 9.0,
        "variance dips between nodes"
    );
}

/// The recursive smoothing (the reference preset's) against the exact scipy FIR on the same
/// noise: alpha 250, sigma 10 and 15, RMS displacement difference < 0.05 px (the documented
/// bound; measured ~0.003 px) and max < 0.1 px, border rows and columns included.
#[test]
fn recursive_field_is_within_bound_of_the_exact_field() {
    let (w, h) = (160usize, 120usize);
    for (sigma, seed) in [(10.0f32, 5u64), (15.0, 6)] {
        let generator = DenseElastic::new(250.0, sigma)
            .unwrap()
            .with_smoothing(FieldSmoothing::Recursive);
        let field = generator.field(w, h, seed).unwrap();
        // The same noise: all of dx's then all of dy's, each filled column after column.
        let mut rng = SplitMix64::new(seed);
        let mut sum_sq = 0.0f64;
        let mut max_diff = 0.0f32;
        for component in [&field.dx, &field.dy] {
            let mut columns = vec![0.0f32; w * h];
            rng.fill_uniform_symmetric(&mut columns);
            let noise: Vec<f32> = (0..w * h).map(|i| columns[(i % w) * h + i / w]).collect();
            let exact = gaussian_filter(&noise, w, h, sigma, 4.0).unwrap();
            for (&fast, &slow) in component.iter().zip(&exact) {
                let diff = fast - 250.0 * slow;
                sum_sq += (diff as f64).powi(2);
                max_diff = max_diff.max(diff.abs());
            }
        }
        let rms = (sum_sq / (2 * w * h) as f64).sqrt();
        assert!(rms < 0.05, "sigma {sigma}: rms {rms} px");
        assert!(max_diff < 0.1, "sigma {sigma}: max {max_diff} px");
        // Not a trivially small field: the exact interior std is ~4 px (alpha 250, sigma 10).
        let std = std_of(&field.dx.iter().map(|&v| v as f64).collect::<Vec<_>>());
        assert!(std > 1.0, "sigma {sigma}: std {std}");
    }
}
