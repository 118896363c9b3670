//! The training loader: tiles cropped and aligned right (image, label and weights move
//! together), valid-padding geometry, determinism whatever the thread count, mid-epoch starts.

use unet_augment::{Pipeline, Preset};
use unet_data::{LabelClasses, Stack};
use unet_model::Normalisation;
use unet_train::{Loader, LoaderConfig, SectionSet};
use unet_weights::{ClassWeight, WeightMapParams};

const H: usize = 40;
const W: usize = 48;

/// Two sections of smooth grey values with one bright marker pixel each, labels all cell except
/// one membrane pixel at the marker (so the class-balanced weight map peaks there too).
fn marked(markers: [(usize, usize); 2]) -> (Stack<u8>, Stack<u8>) {
    let mut img = Vec::new();
    let mut lab = Vec::new();
    for (p, &(my, mx)) in markers.iter().enumerate() {
        for y in 0..H {
            for x in 0..W {
                let marker = (y, x) == (my, mx);
                img.push(if marker {
                    255
                } else {
                    (20 + x + y + 10 * p) as u8
                });
                lab.push(if marker { 0 } else { 255 });
            }
        }
    }
    (
        Stack::new(2, H, W, img).unwrap(),
        Stack::new(2, H, W, lab).unwrap(),
    )
}

fn identity() -> Pipeline {
    Pipeline::builder().build().unwrap()
}

/// numpy 'reflect' (scipy 'mirror') index into 0..n.
fn reflect(i: isize, n: usize) -> usize {
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Checks one batch of an identity pipeline against the sections: finds each sample's crop
/// offset from its label marker, then compares every input pixel with the mirror-padded
/// section and the weights' maximum with the marker.
fn check_alignment(loader: &Loader, sections: &Stack<u8>, markers: [(usize, usize); 2]) -> usize {
    let cfg = loader.config().clone();
    let (n_in, n_out) = (cfg.input_size, cfg.output_size);
    let margin = (n_in - n_out) / 2;
    let stats = loader.data().stats()[0];
    let mut seen_markers = 0;
    for epoch in 0..3 {
        for batch in loader.epoch(epoch, 0) {
            let batch = batch.unwrap();
            assert_eq!(batch.images.len(), batch.size * n_in * n_in);
            assert_eq!(batch.labels.len(), batch.size * n_out * n_out);
            assert_eq!(batch.weights.len(), batch.size * n_out * n_out);
            for k in 0..batch.size {
                let section = batch.sections[k];
                let labels = &batch.labels[k * n_out * n_out..(k + 1) * n_out * n_out];
                let weights = &batch.weights[k * n_out * n_out..(k + 1) * n_out * n_out];
                let image = &batch.images[k * n_in * n_in..(k + 1) * n_in * n_in];
                let membrane: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 0).collect();
                assert!(labels.iter().all(|&l| l <= 1));
                if membrane.is_empty() {
                    // The crop missed the marker: no weight stands out.
                    let (lo, hi) = weights
                        .iter()
                        .fold((f32::MAX, f32::MIN), |(a, b), &w| (a.min(w), b.max(w)));
                    assert!((hi - lo).abs() < 1e-6);
                    continue;
                }
                seen_markers += 1;
                assert_eq!(membrane.len(), 1, "one marker per label tile");
                let (ty, tx) = (membrane[0] / n_out, membrane[0] % n_out);
                let (my, mx) = markers[section];
                let (oy, ox) = (my as isize - ty as isize, mx as isize - tx as isize);
                // The weight map peaks on the marker (the lone membrane pixel).
                let argmax = (0..weights.len())
                    .max_by(|&a, &b| weights[a].total_cmp(&weights[b]))
                    .unwrap();
                assert_eq!(argmax, membrane[0]);
                // Every input pixel is the section's pixel at the same offset, mirrored outside.
                let page = sections.page(section);
                for y in 0..n_in {
                    for x in 0..n_in {
                        let sy = reflect(oy + y as isize - margin as isize, H);
                        let sx = reflect(ox + x as isize - margin as isize, W);
                        let expected =
                            ((page[sy * W + sx] as f64 / 255.0 - stats.mean) / stats.std) as f32;
                        let got = image[y * n_in + x];
                        assert!(
                            (got - expected).abs() < 1e-4,
                            "input ({y}, {x}) of a tile at offset ({oy}, {ox}): {got} vs {expected}"
                        );
                    }
                }
            }
        }
    }
    seen_markers
}

#[test]
fn same_padding_tiles_are_aligned() {
    let markers = [(20, 30), (5, 6)];
    let (img, lab) = marked(markers);
    let data =
        SectionSet::from_stacks(&img.clone().into(), &lab, LabelClasses::Binary, &[0, 1]).unwrap();
    let cfg = LoaderConfig {
        samples_per_epoch: 6,
        ..LoaderConfig::new(24, 4, 2, 11)
    };
    let loader = Loader::new(data, &identity(), cfg).unwrap();
    assert_eq!(loader.config().batches_per_epoch(), 2);
    let seen = check_alignment(&loader, &img, markers);
    assert!(seen > 0, "some crops hold the marker");
}

#[test]
fn valid_padding_tiles_are_mirrored_and_centre_cropped() {
    let markers = [(1, 2), (38, 45)];
    let (img, lab) = marked(markers);
    let data =
        SectionSet::from_stacks(&img.clone().into(), &lab, LabelClasses::Binary, &[0, 1]).unwrap();
    // A depth-2 valid net: 36 -> 28 would be 4 lost per side; use margin 6 (28 in, 16 out).
    let cfg = LoaderConfig {
        input_size: 28,
        output_size: 16,
        samples_per_epoch: 8,
        ..LoaderConfig::new(28, 3, 2, 5)
    };
    let loader = Loader::new(data, &identity(), cfg).unwrap();
    let batch = loader.batch(0, 0).unwrap();
    assert_eq!(
        (batch.input_size, batch.output_size, batch.size),
        (28, 16, 3)
    );
    // Markers sit at the section border, so tiles that hold them have mirrored context.
    check_alignment(&loader, &img, markers);
}

#[test]
fn deterministic_whatever_the_threads_and_start() {
    let (img, lab) = marked([(3, 3), (30, 40)]);
    let data =
        SectionSet::from_stacks(&img.clone().into(), &lab, LabelClasses::Binary, &[0, 1]).unwrap();
    let base = LoaderConfig {
        samples_per_epoch: 5,
        weights: Some(WeightMapParams {
            class_weight: ClassWeight::Mean1,
            ..WeightMapParams::default()
        }),
        ..LoaderConfig::new(32, 2, 2, 77)
    };
    let pipeline = Preset::Reference.pipeline().unwrap();
    let run = |threads: usize, first: usize| -> Vec<_> {
        let cfg = LoaderConfig {
            threads,
            ..base.clone()
        };
        let loader = Loader::new(data.clone(), &pipeline, cfg).unwrap();
        loader.epoch(1, first).map(|b| b.unwrap()).collect()
    };
    let one = run(1, 0);
    let two = run(2, 0);
    assert_eq!(one.len(), 3);
    assert_eq!(one[2].size, 1, "the last batch holds the remainder");
    assert_eq!(one, two);
    assert_eq!(
        run(2, 1),
        one[1..].to_vec(),
        "starting mid-epoch gives the same batches"
    );
    // Augmentation really happened and differs between epochs.
    let loader = Loader::new(data.clone(), &pipeline, base.clone()).unwrap();
    assert_ne!(loader.batch(2, 0).unwrap().images, one[0].images);
    // Another seed, other batches.
    let other = Loader::new(
        data,
        &pipeline,
        LoaderConfig {
            seed: 78,
            ..base.clone()
        },
    )
    .unwrap();
    assert_ne!(other.batch(1, 0).unwrap().images, one[0].images);
}

#[test]
fn normalisation_uses_the_given_statistics() {
    let (img, lab) = marked([(3, 3), (30, 40)]);
    let data =
        SectionSet::from_stacks(&img.clone().into(), &lab, LabelClasses::Binary, &[0]).unwrap();
    let own = data.stats()[0];
    let mean: f64 = img.page(0).iter().map(|&v| v as f64 / 255.0).sum::<f64>() / (H * W) as f64;
    assert!((own.mean - mean).abs() < 1e-6);
    let given = Normalisation::dataset(0.5, 0.25).unwrap();
    let cfg = LoaderConfig {
        normalisation: Some(given),
        input_size: H,
        output_size: H,
        weights: None,
        ..LoaderConfig::new(H, 1, 1, 0)
    };
    let loader = Loader::new(data, &identity(), cfg).unwrap();
    let batch = loader.batch(0, 0).unwrap();
    assert!(batch.weights.iter().all(|&w| w == 1.0));
    let x0 = (0..=W - H)
        .find(|&x0| {
            let v = img.page(0)[x0] as f64 / 255.0;
            ((v - 0.5) / 0.25 - batch.images[0] as f64).abs() < 1e-5
        })
        .expect("the first input pixel is a normalised section pixel");
    assert!(x0 <= W - H);
    let bad = LoaderConfig {
        normalisation: Some(Normalisation::Dataset {
            mean: 0.5,
            std: 0.0,
        }),
        ..LoaderConfig::new(H, 1, 1, 0)
    };
    let data =
        SectionSet::from_stacks(&img.clone().into(), &lab, LabelClasses::Binary, &[0]).unwrap();
    assert!(Loader::new(data, &identity(), bad).is_err());
}
