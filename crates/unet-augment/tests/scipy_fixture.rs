//! Our resampler and Gaussian smoothing against scipy.ndimage on a committed fixture
//! (scripts/make_fixtures.py: map_coordinates order 1 / 0, mode "mirror"; gaussian_filter
//! mode "constant", cval 0, truncate 4).

use serde_json::Value;
use unet_augment::{
    gaussian_filter, remap, BorderMode, DisplacementField, Interpolation, GAUSSIAN_TRUNCATE,
};

fn fixture() -> Value {
    let text = include_str!("fixtures/scipy_remap_gaussian.json");
    serde_json::from_str(text).expect("fixture is valid JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn remap_matches_scipy_map_coordinates_mirror() {
    let f = fixture();
    let r = &f["remap"];
    let (w, h) = (
        r["width"].as_u64().unwrap() as usize,
        r["height"].as_u64().unwrap() as usize,
    );
    let image = floats(&r["image"]);
    // The fixed displacement field of the fixture, turned into coordinates by our code.
    let field = DisplacementField {
        width: w,
        height: h,
        dx: floats(&r["dx"]),
        dy: floats(&r["dy"]),
    };
    let map = field.to_coord_map();
    assert_eq!(map.xs, floats(&r["xs"]), "x + dx as in numpy float32");
    assert_eq!(map.ys, floats(&r["ys"]));
    let leaving = map
        .xs
        .iter()
        .filter(|&&x| x < 0.0 || x > (w - 1) as f32)
        .count();
    assert!(leaving > 50, "the fixture exercises the mirror border");

    let bilinear = remap(
        &image,
        w,
        h,
        &map,
        Interpolation::Bilinear,
        BorderMode::Mirror,
        0.0,
    )
    .unwrap();
    let diff = max_abs_diff(&bilinear, &floats(&r["bilinear_mirror"]));
    assert!(diff < 1e-4, "bilinear vs scipy order=1: {diff}");

    let nearest = remap(
        &image,
        w,
        h,
        &map,
        Interpolation::Nearest,
        BorderMode::Mirror,
        0.0,
    )
    .unwrap();
    assert_eq!(
        nearest,
        floats(&r["nearest_mirror"]),
        "nearest vs scipy order=0"
    );
}

#[test]
fn gaussian_filter_matches_scipy_constant_zero() {
    let f = fixture();
    let g = &f["gaussian"];
    let (w, h) = (
        g["width"].as_u64().unwrap() as usize,
        g["height"].as_u64().unwrap() as usize,
    );
    let noise = floats(&g["noise"]);
    let smoothed = g["smoothed"].as_object().unwrap();
    assert_eq!(smoothed.len(), 3);
    for (sigma, expected) in smoothed {
        let sigma: f32 = sigma.parse().unwrap();
        let ours = gaussian_filter(&noise, w, h, sigma, GAUSSIAN_TRUNCATE).unwrap();
        // f32 arithmetic against scipy's f64: ~1e-7 here; 1e-6 leaves room, far below 1e-4.
        let diff = max_abs_diff(&ours, &floats(expected));
        assert!(diff < 1e-6, "sigma {sigma}: {diff}");
    }
}
