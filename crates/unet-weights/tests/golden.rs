//! Weight maps against golden fixtures written by `scripts/make_fixtures.py`, an independent
//! implementation (SciPy's exact EDT per cell and `scipy.ndimage.label`).

use std::path::{Path, PathBuf};

use unet_weights::{weight_map, BorderTerm, ClassWeight, Connectivity, WeightMapParams};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The script's configurations, by file-name part.
fn configs() -> [(&'static str, WeightMapParams); 2] {
    [
        ("default", WeightMapParams::default()),
        (
            "eight_mean1_all",
            WeightMapParams {
                connectivity: Connectivity::Eight,
                class_weight: ClassWeight::Mean1,
                border_term: BorderTerm::AllPixels,
                ..WeightMapParams::default()
            },
        ),
    ]
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn weight_maps_match_scipy_fixtures() {
    let manifest = std::fs::read_to_string(fixtures().join("manifest.txt")).unwrap();
    let mut images = 0;
    for line in manifest.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, height, width] = fields[..] else {
            panic!("bad manifest line {line:?}");
        };
        let (height, width): (usize, usize) = (height.parse().unwrap(), width.parse().unwrap());
        let labels = std::fs::read(fixtures().join(format!("{name}.labels.u8"))).unwrap();
        for (config, params) in configs() {
            let expected = read_f32(&fixtures().join(format!("{name}.{config}.f32")));
            assert_eq!(expected.len(), height * width, "{name}.{config}");
            let actual = weight_map(&labels, height, width, &params).unwrap();
            for (index, (&a, &e)) in actual.iter().zip(&expected).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-4 * e.abs(),
                    "{name}.{config} pixel ({}, {}): {a} != {e}",
                    index / width,
                    index % width
                );
            }
        }
        images += 1;
    }
    assert_eq!(images, 4);
}

#[test]
fn fixtures_exercise_the_border_term_and_both_connectivities() {
    // Guards the test above against trivial fixtures: the border term must show up, and the
    // connectivities must disagree somewhere.
    let labels = std::fs::read(fixtures().join("sparse.labels.u8")).unwrap();
    let default = read_f32(&fixtures().join("sparse.default.f32"));
    // Without the border term every background pixel would carry the same class weight.
    let mut background: Vec<u32> = default
        .iter()
        .zip(&labels)
        .filter(|&(_, &label)| label == 0)
        .map(|(weight, _)| weight.to_bits())
        .collect();
    background.sort_unstable();
    background.dedup();
    assert!(
        background.len() > 20,
        "{} distinct background weights",
        background.len()
    );
    let labels = std::fs::read(fixtures().join("voronoi.labels.u8")).unwrap();
    let four = unet_weights::label_components(&labels, 48, 64, Connectivity::Four).unwrap();
    let eight = unet_weights::label_components(&labels, 48, 64, Connectivity::Eight).unwrap();
    assert!(four.count() > eight.count());
}
