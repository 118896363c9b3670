//! Class-index weight maps against a plain O(N^2) reference written here (flood-fill instances,
//! distances from every pixel to every pixel of every instance), and the binary case against
//! `weight_map` bit for bit.

use std::path::Path;

use proptest::prelude::*;
use unet_weights::{
    class_weight_map, weight_map, BorderTerm, ClassLabels, ClassWeight, Connectivity,
    WeightMapParams,
};

/// Instances: 4- or 8-connected components of equal foreground values (not 0, not `ignore`),
/// numbered from 1; 0 elsewhere.
fn reference_instances(
    classes: &[u16],
    height: usize,
    width: usize,
    eight: bool,
    ignore: Option<u16>,
) -> Vec<usize> {
    let mut instances = vec![0; classes.len()];
    let mut count = 0;
    for seed in 0..classes.len() {
        if classes[seed] == 0 || Some(classes[seed]) == ignore || instances[seed] != 0 {
            continue;
        }
        count += 1;
        instances[seed] = count;
        let mut stack = vec![seed];
        while let Some(index) = stack.pop() {
            let (y, x) = ((index / width) as i64, (index % width) as i64);
            for dy in -1..=1i64 {
                for dx in -1..=1i64 {
                    if (dy, dx) == (0, 0) || (!eight && dy != 0 && dx != 0) {
                        continue;
                    }
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= height as i64 || nx >= width as i64 {
                        continue;
                    }
                    let neighbour = ny as usize * width + nx as usize;
                    if classes[neighbour] == classes[seed] && instances[neighbour] == 0 {
                        instances[neighbour] = count;
                        stack.push(neighbour);
                    }
                }
            }
        }
    }
    instances
}

/// The weight map straight from its definition, in f64.
fn reference_weight_map(
    classes: &[u16],
    height: usize,
    width: usize,
    labels: &ClassLabels,
    params: &WeightMapParams,
) -> Vec<f64> {
    let ignored = |value: u16| Some(value) == labels.ignore;
    let instances = reference_instances(
        classes,
        height,
        width,
        params.connectivity == Connectivity::Eight,
        labels.ignore,
    );
    let count = instances.iter().copied().max().unwrap_or(0);
    let mut class_counts = vec![0usize; labels.n_classes];
    for &value in classes.iter().filter(|&&value| !ignored(value)) {
        class_counts[usize::from(value)] += 1;
    }
    let counted: usize = class_counts.iter().sum();
    let present = class_counts.iter().filter(|&&c| c > 0).count() as f64;
    let sigma = f64::from(params.sigma);
    (0..classes.len())
        .map(|index| {
            let value = classes[index];
            if ignored(value) {
                return 0.0;
            }
            let class_count = class_counts[usize::from(value)] as f64;
            let class_weight = match params.class_weight {
                ClassWeight::None => 1.0,
                ClassWeight::Balanced => counted as f64 / class_count,
                ClassWeight::Mean1 => counted as f64 / class_count / present,
            };
            if !(value == 0 || params.border_term == BorderTerm::AllPixels) {
                return class_weight;
            }
            // Distance to each instance: the nearest of its pixels.
            let (y, x) = ((index / width) as f64, (index % width) as f64);
            let mut nearest = vec![f64::INFINITY; count + 1];
            for (other, &instance) in instances.iter().enumerate() {
                if instance == 0 {
                    continue;
                }
                let (oy, ox) = ((other / width) as f64, (other % width) as f64);
                let distance = ((y - oy).powi(2) + (x - ox).powi(2)).sqrt();
                nearest[instance] = nearest[instance].min(distance);
            }
            let mut distances = nearest[1..].to_vec();
            distances.sort_by(f64::total_cmp);
            if distances.len() < 2 {
                return class_weight;
            }
            let sum = distances[0] + distances[1];
            class_weight + f64::from(params.w0) * (-sum * sum / (2.0 * sigma * sigma)).exp()
        })
        .collect()
}

/// A small class map with K in 2..5 and maybe an ignore value (K itself, or 255).
fn class_image() -> impl Strategy<Value = (usize, usize, ClassLabels, Vec<u16>)> {
    (1usize..16, 1usize..16, 2usize..5, 0u8..3).prop_flat_map(|(height, width, k, ignore)| {
        let ignore = match ignore {
            0 => None,
            1 => Some(k as u16),
            _ => Some(255),
        };
        let foreground = 1..k as u16;
        let pixel = match ignore {
            Some(value) => prop_oneof![
                4 => Just(0u16),
                4 => foreground,
                1 => Just(value)
            ]
            .boxed(),
            None => prop_oneof![4 => Just(0u16), 4 => foreground].boxed(),
        };
        let labels = ClassLabels {
            n_classes: k,
            ignore,
        };
        (
            Just(height),
            Just(width),
            Just(labels),
            proptest::collection::vec(pixel, height * width),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn class_weight_map_matches_the_definition(
        (height, width, labels, classes) in class_image(),
        w0 in 0.0f32..20.0,
        // Small sigmas make the reach smaller than the images, so the cut-off is exercised.
        sigma in 0.3f32..6.0,
        eight in any::<bool>(),
        all_pixels in any::<bool>(),
        class_weight in prop_oneof![
            Just(ClassWeight::Balanced),
            Just(ClassWeight::Mean1),
            Just(ClassWeight::None)
        ],
    ) {
        let params = WeightMapParams {
            w0,
            sigma,
            connectivity: if eight { Connectivity::Eight } else { Connectivity::Four },
            border_term: if all_pixels { BorderTerm::AllPixels } else { BorderTerm::Background },
            class_weight,
        };
        let actual = class_weight_map(&classes, height, width, &labels, &params).unwrap();
        let expected = reference_weight_map(&classes, height, width, &labels, &params);
        for (index, (&actual, &expected)) in actual.iter().zip(&expected).enumerate() {
            let actual = f64::from(actual);
            prop_assert!(
                (actual - expected).abs() <= 1e-5 * expected.max(1.0),
                "pixel ({}, {}): {} != {}",
                index / width,
                index % width,
                actual,
                expected
            );
        }
    }

    #[test]
    fn binary_classes_equal_weight_map_bit_for_bit(
        (height, width, _, classes) in class_image(),
        eight in any::<bool>(),
        all_pixels in any::<bool>(),
        class_weight in prop_oneof![
            Just(ClassWeight::Balanced),
            Just(ClassWeight::Mean1),
            Just(ClassWeight::None)
        ],
    ) {
        let params = WeightMapParams {
            connectivity: if eight { Connectivity::Eight } else { Connectivity::Four },
            border_term: if all_pixels { BorderTerm::AllPixels } else { BorderTerm::Background },
            class_weight,
            ..WeightMapParams::default()
        };
        let binary: Vec<u16> = classes.iter().map(|&c| u16::from(c != 0)).collect();
        let isbi: Vec<u8> = binary.iter().map(|&c| if c == 0 { 0 } else { 255 }).collect();
        let expected = weight_map(&isbi, height, width, &params).unwrap();
        let actual = class_weight_map(&binary, height, width, &ClassLabels::BINARY, &params).unwrap();
        prop_assert_eq!(bits(&actual), bits(&expected));
    }
}

fn bits(weights: &[f32]) -> Vec<u32> {
    weights.iter().map(|w| w.to_bits()).collect()
}

fn all_params() -> Vec<WeightMapParams> {
    let mut all = Vec::new();
    for class_weight in [ClassWeight::Balanced, ClassWeight::Mean1, ClassWeight::None] {
        for border_term in [BorderTerm::Background, BorderTerm::AllPixels] {
            for connectivity in [Connectivity::Four, Connectivity::Eight] {
                all.push(WeightMapParams {
                    connectivity,
                    border_term,
                    class_weight,
                    ..WeightMapParams::default()
                });
            }
        }
    }
    all
}

/// Membrane-like synthetic labels: a jittered grid of cells (255) separated by 0-valued walls
/// 1-3 px thick, some cells touching, a few holes; deterministic.
fn synthetic_membranes(height: usize, width: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut labels = vec![255u8; height * width];
    // Bands of rows between horizontal walls; each band has its own vertical walls, some left
    // out so that neighbouring cells merge.
    let mut top = 0;
    while top < height {
        let thickness = 1 + (next() % 3) as usize;
        let bottom = (top + 12 + (next() % 20) as usize).min(height);
        let wall_end = (top + thickness).min(bottom);
        for row in top..wall_end {
            labels[row * width..(row + 1) * width].fill(0);
        }
        let mut x = (next() % 15) as usize;
        while x < width {
            let thickness = 1 + (next() % 3) as usize;
            if next() % 6 != 0 {
                for row in wall_end..bottom {
                    for column in x..(x + thickness).min(width) {
                        labels[row * width + column] = 0;
                    }
                }
            }
            x += 12 + (next() % 10) as usize;
        }
        top = bottom;
    }
    for _ in 0..40 {
        let (cy, cx) = ((next() as usize) % height, (next() as usize) % width);
        let radius = 1 + (next() % 4) as usize;
        for row in cy.saturating_sub(radius)..(cy + radius).min(height) {
            for column in cx.saturating_sub(radius)..(cx + radius).min(width) {
                labels[row * width + column] = 0;
            }
        }
    }
    labels
}

#[test]
fn binary_classes_equal_weight_map_on_realistic_images() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let manifest = std::fs::read_to_string(fixtures.join("manifest.txt")).unwrap();
    let mut images = vec![(
        "synthetic".to_string(),
        256,
        320,
        synthetic_membranes(256, 320),
    )];
    for line in manifest.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let labels = std::fs::read(fixtures.join(format!("{}.labels.u8", fields[0]))).unwrap();
        images.push((
            fields[0].to_string(),
            fields[1].parse().unwrap(),
            fields[2].parse().unwrap(),
            labels,
        ));
    }
    assert_eq!(images.len(), 5);
    for (name, height, width, labels) in &images {
        let classes: Vec<u16> = labels.iter().map(|&l| u16::from(l != 0)).collect();
        for params in all_params() {
            let expected = weight_map(labels, *height, *width, &params).unwrap();
            let actual =
                class_weight_map(&classes, *height, *width, &ClassLabels::BINARY, &params).unwrap();
            assert_eq!(bits(&actual), bits(&expected), "{name} {params:?}");
        }
    }
    // The synthetic image does exercise the border term.
    let (_, height, width, labels) = &images[0];
    let weights = weight_map(labels, *height, *width, &WeightMapParams::default()).unwrap();
    let mut distinct: Vec<u32> = bits(&weights);
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 50, "{} distinct weights", distinct.len());
}
