//! Property tests of the pipeline: identities, label values, seeds, joint motion, errors.

use proptest::prelude::*;
use std::collections::BTreeSet;
use unet_augment::{
    remap, AffineRanges, BorderMode, CoordMap, DisplacementField, Error, FieldSmoothing, Fill,
    Interpolation, Pipeline, Preset, Range, Sample, Transform,
};

/// A random sample: 1-2 channels, labels from a small set, weights.
fn sample_strategy() -> impl Strategy<Value = Sample> {
    (2usize..24, 2usize..24, 1usize..3, any::<u64>()).prop_map(|(w, h, c, seed)| {
        let mut rng = unet_augment::SplitMix64::new(seed);
        let image = (0..w * h * c).map(|_| rng.uniform() as f32).collect();
        let label = (0..w * h)
            .map(|_| [0u8, 3, 255][rng.below(3) as usize])
            .collect();
        let weight = (0..w * h).map(|_| 1.0 + rng.uniform() as f32).collect();
        Sample::new(w, h, c, image, label, Some(weight)).unwrap()
    })
}

fn build(steps: &[Transform]) -> Pipeline {
    steps
        .iter()
        .fold(Pipeline::builder(), |b, t| b.always(t.clone()))
        .build()
        .unwrap()
}

fn elastic_and_affine() -> Vec<Transform> {
    vec![
        Transform::Affine(AffineRanges {
            rotation_deg: Range::symmetric(30.0),
            scale: Range::new(0.8, 1.2),
            shear_deg: Range::symmetric(10.0),
            translate_x: Range::symmetric(3.0),
            translate_y: Range::symmetric(3.0),
        }),
        Transform::DenseElastic {
            alpha: Range::new(5.0, 30.0),
            sigma: Range::new(1.0, 4.0),
            smoothing: FieldSmoothing::Recursive,
        },
        Transform::GridElastic {
            nodes_x: 3,
            nodes_y: 3,
            std: Range::fixed(3.0),
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn identity_parameters_give_the_identity(sample in sample_strategy(), seed in any::<u64>()) {
        let pipeline = build(&[
            Transform::Rot90 { k: 0 },
            Transform::Affine(AffineRanges::default()),
            Transform::DenseElastic { alpha: Range::fixed(0.0), sigma: Range::new(1.0, 3.0), smoothing: FieldSmoothing::Exact },
            Transform::DenseElastic { alpha: Range::fixed(0.0), sigma: Range::new(1.0, 3.0), smoothing: FieldSmoothing::Recursive },
            Transform::GridElastic { nodes_x: 3, nodes_y: 3, std: Range::fixed(0.0) },
            Transform::Brightness { delta: Range::fixed(0.0) },
            Transform::BrightnessFactor { factor: Range::fixed(1.0) },
            Transform::GaussianNoise { std: Range::fixed(0.0) },
        ]);
        prop_assert_eq!(pipeline.apply(&sample, seed).unwrap(), sample.clone());
        // Probability 0 runs nothing, however wild the step.
        let never = Pipeline::builder().step(elastic_and_affine()[0].clone(), 0.0).build().unwrap();
        prop_assert_eq!(never.apply(&sample, seed).unwrap(), sample);
    }

    #[test]
    fn flips_twice_and_rot90_four_times_are_the_identity(sample in sample_strategy(), seed in any::<u64>()) {
        for steps in [
            vec![Transform::FlipHorizontal, Transform::FlipHorizontal],
            vec![Transform::FlipVertical, Transform::FlipVertical],
            vec![Transform::Rot90 { k: 1 }; 4],
            vec![Transform::Rot90 { k: 3 }, Transform::Rot90 { k: 1 }],
            vec![Transform::Rot90 { k: 2 }, Transform::FlipHorizontal, Transform::FlipVertical],
        ] {
            prop_assert_eq!(build(&steps).apply(&sample, seed).unwrap(), sample.clone());
        }
        // One flip really moves pixels: the first column becomes the last.
        let flipped = build(&[Transform::FlipHorizontal]).apply(&sample, seed).unwrap();
        let w = sample.width();
        prop_assert_eq!(flipped.label()[w - 1], sample.label()[0]);
        let turned = build(&[Transform::Rot90 { k: 1 }]).apply(&sample, seed).unwrap();
        prop_assert_eq!((turned.width(), turned.height()), (sample.height(), sample.width()));
    }

    #[test]
    fn zoom_and_flips_compose_exactly(
        sample in sample_strategy(),
        seed in any::<u64>(),
        scale in 0.8f32..1.25,
        vertical in any::<bool>(),
    ) {
        // A flip after a zoom, composed into one resampling, equals the zoomed sample flipped
        // by itself: the same coordinates, so the same values to the last bit.
        let zoom = Transform::Affine(AffineRanges { scale: Range::fixed(scale), ..AffineRanges::default() });
        let flip = if vertical { Transform::FlipVertical } else { Transform::FlipHorizontal };
        let composed = build(&[zoom.clone(), flip.clone()]).apply(&sample, seed).unwrap();
        let zoomed = build(&[zoom]).apply(&sample, seed).unwrap();
        let apart = build(&[flip]).apply(&zoomed, seed).unwrap();
        prop_assert_eq!(composed, apart);
    }

    #[test]
    fn labels_stay_within_their_input_values(
        sample in sample_strategy(),
        seed in any::<u64>(),
        bicubic in any::<bool>(),
        constant in any::<bool>(),
    ) {
        let mut builder = elastic_and_affine().into_iter().fold(Pipeline::builder(), |b, t| b.step(t, 0.8));
        builder = builder.interpolation(if bicubic { Interpolation::Bicubic } else { Interpolation::Bilinear });
        if constant {
            builder = builder.border(BorderMode::Constant).fill(Fill { image: 0.0, label: 3, weight: 0.0 });
        }
        let out = builder.build().unwrap().apply(&sample, seed).unwrap();
        let mut allowed: BTreeSet<u8> = sample.label().iter().copied().collect();
        if constant {
            allowed.insert(3);
        }
        prop_assert!(out.label().iter().all(|l| allowed.contains(l)));
    }

    #[test]
    fn seeds_decide_the_output(sample in sample_strategy(), seed in any::<u64>()) {
        let pipeline = build(&elastic_and_affine());
        let a = pipeline.apply(&sample, seed).unwrap();
        prop_assert_eq!(&a, &pipeline.apply(&sample, seed).unwrap());
        let b = pipeline.apply(&sample, seed.wrapping_add(1)).unwrap();
        prop_assert_ne!(a.image(), b.image());
    }

    #[test]
    fn zero_displacement_is_the_identity(sample in sample_strategy()) {
        let (w, h) = (sample.width(), sample.height());
        let map = DisplacementField::zeros(w, h).to_coord_map();
        prop_assert_eq!(&map, &CoordMap::identity(w, h));
        for interpolation in [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic] {
            let plane = sample.image_plane(0);
            let out = remap(plane, w, h, &map, interpolation, BorderMode::Mirror, 0.0).unwrap();
            prop_assert_eq!(out, plane.to_vec());
        }
    }

    #[test]
    fn image_label_and_weight_move_together(
        w in 6usize..30,
        h in 6usize..30,
        marker in any::<(u16, u16)>(),
        seed in any::<u64>(),
        whole_pixels in any::<bool>(),
    ) {
        // One marked pixel, the same in the three planes.
        let (mx, my) = (marker.0 as usize % w, marker.1 as usize % h);
        let mut image = vec![0.0f32; w * h];
        image[my * w + mx] = 1.0;
        let mut label = vec![0u8; w * h];
        label[my * w + mx] = 255;
        let sample = Sample::grey(w, h, image.clone(), label, Some(image)).unwrap();
        let steps = if whole_pixels {
            vec![
                Transform::MirrorPad { border: 3 },
                Transform::RandomRot90,
                Transform::FlipVertical,
                Transform::RandomCrop { width: w.min(h), height: w.min(h) },
            ]
        } else {
            elastic_and_affine()
        };
        let out = build(&steps).apply(&sample, seed).unwrap();
        // Image and weight went through the same interpolation: identical.
        prop_assert_eq!(Some(out.image()), out.weight());
        for (i, &l) in out.label().iter().enumerate() {
            if whole_pixels {
                // Exact moves: the marker is at the same place in all three.
                prop_assert_eq!(l == 255, out.image()[i] == 1.0);
            } else if l == 255 {
                // The label's nearest source pixel is the marker, so the marker carries at
                // least a quarter of the bilinear weight there.
                prop_assert!(out.image()[i] >= 0.25 - 1e-6, "pixel {} image {}", i, out.image()[i]);
            }
        }
    }
}

#[test]
fn batches_do_not_depend_on_the_thread_count() {
    let samples: Vec<Sample> = (0..6)
        .map(|i| {
            let image = (0..40 * 30)
                .map(|p| ((p * (i + 1)) % 17) as f32 / 17.0)
                .collect();
            let label = (0..40 * 30)
                .map(|p| if p % 7 == 0 { 0 } else { 255 })
                .collect();
            Sample::grey(40, 30, image, label, None).unwrap()
        })
        .collect();
    let pipeline = Preset::Reference.pipeline().unwrap();
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| pipeline.apply_batch(&samples, 99).unwrap())
    };
    let one = run(1);
    assert_eq!(one, run(2));
    for (i, out) in one.iter().enumerate() {
        assert_eq!(
            out,
            &pipeline
                .apply(&samples[i], Pipeline::batch_seed(99, i))
                .unwrap()
        );
    }
    assert_ne!(one[0], one[1]);
}

#[test]
fn presets_build_and_keep_labels_binary() {
    let sample = Sample::grey(
        64,
        64,
        (0..64 * 64).map(|p| (p % 64) as f32 / 64.0).collect(),
        (0..64 * 64)
            .map(|p| if p % 64 < 10 { 0 } else { 255 })
            .collect(),
        Some(vec![1.0; 64 * 64]),
    )
    .unwrap();
    for preset in Preset::ALL {
        let pipeline = preset.pipeline().unwrap();
        for seed in 0..8 {
            let out = pipeline.apply(&sample, seed).unwrap();
            assert_eq!((out.width(), out.height()), (64, 64));
            assert!(out.label().iter().all(|&l| l == 0 || l == 255));
        }
    }
    // The reference preset flips vertically for real (its source flipped horizontally twice).
    let steps = Preset::Reference.pipeline().unwrap();
    assert!(steps
        .steps()
        .iter()
        .any(|s| s.transform == Transform::FlipVertical && s.probability == 0.5));
    // Another noise level is built with the builder, which checks it.
    assert!(matches!(
        reference_with_noise(-1.0).unwrap_err(),
        Error::InvalidParameter { name: "std", .. }
    ));
    // No augmentation: the sample comes back unchanged.
    let none = Preset::None.pipeline().unwrap();
    assert!(none.steps().is_empty());
    assert_eq!(none.apply(&sample, 3).unwrap(), sample);
}

/// The reference recipe built step by step, with noise std `noise_std`.
fn reference_with_noise(noise_std: f32) -> Result<Pipeline, Error> {
    Pipeline::builder()
        .step(Transform::FlipHorizontal, 0.5)
        .step(Transform::FlipVertical, 0.5)
        .step(
            Transform::DenseElastic {
                alpha: Range::new(100.0, 300.0),
                sigma: Range::new(10.0, 15.0),
                smoothing: FieldSmoothing::Recursive,
            },
            0.5,
        )
        .always(Transform::BrightnessFactor {
            factor: Range::new(0.6, 1.4),
        })
        .always(Transform::Clamp { min: 0.0, max: 1.0 })
        .step(
            Transform::GaussianNoise {
                std: Range::fixed(noise_std),
            },
            0.5,
        )
        .build()
}

#[test]
fn reference_preset_is_the_step_by_step_recipe() {
    let preset = Preset::Reference.pipeline().unwrap();
    let by_hand = reference_with_noise(Preset::REFERENCE_NOISE_STD).unwrap();
    assert_eq!(preset, by_hand);
    let mut rng = unet_augment::SplitMix64::new(2015);
    let (w, h) = (48, 40);
    let sample = Sample::grey(
        w,
        h,
        (0..w * h).map(|_| rng.uniform() as f32).collect(),
        (0..w * h)
            .map(|p| if (p % w) / 6 % 2 == 0 { 0 } else { 255 })
            .collect(),
        Some((0..w * h).map(|_| 1.0 + rng.uniform() as f32).collect()),
    )
    .unwrap();
    let mut changed = 0;
    for seed in [0, 1, 7, 42, 1234, u64::MAX] {
        let a = preset.apply(&sample, seed).unwrap();
        let b = by_hand.apply(&sample, seed).unwrap();
        let bits = |s: &Sample| {
            let image: Vec<u32> = s.image().iter().map(|v| v.to_bits()).collect();
            let weight: Vec<u32> = s.weight().unwrap().iter().map(|v| v.to_bits()).collect();
            (image, s.label().to_vec(), weight)
        };
        assert_eq!(bits(&a), bits(&b), "seed {seed}");
        changed += usize::from(a != sample);
    }
    assert!(changed > 0);
}

#[test]
fn presets_by_name() {
    assert_eq!(
        Preset::ALL.map(Preset::name),
        ["none", "reference", "paper", "robust"]
    );
    for preset in Preset::ALL {
        assert_eq!(preset.name().parse::<Preset>().unwrap(), preset);
        assert_eq!(preset.to_string(), preset.name());
    }
    let err = "Reference".parse::<Preset>().unwrap_err();
    assert_eq!(
        err,
        Error::UnknownPreset {
            name: "Reference".into()
        }
    );
    assert_eq!(
        err.to_string(),
        r#"unknown augmentation preset "Reference"; known: none, reference, paper, robust"#
    );
    // The message's list is the real one.
    let known = Preset::ALL.map(Preset::name).join(", ");
    assert!(err.to_string().ends_with(&format!("known: {known}")));
}

#[cfg(feature = "serde")]
#[test]
fn presets_serialise_as_their_names() {
    for preset in Preset::ALL {
        let json = serde_json::to_string(&preset).unwrap();
        assert_eq!(json, format!("\"{}\"", preset.name()));
        assert_eq!(serde_json::from_str::<Preset>(&json).unwrap(), preset);
    }
    assert_eq!(
        serde_json::from_str::<Vec<Preset>>(r#"["none", "reference", "paper", "robust"]"#).unwrap(),
        Preset::ALL
    );
    assert!(serde_json::from_str::<Preset>(r#""Paper""#).is_err());
}

#[test]
fn invalid_parameters_are_typed_errors() {
    let bad = |t: Transform, p: f32| Pipeline::builder().step(t, p).build().unwrap_err();
    assert!(matches!(
        bad(Transform::FlipHorizontal, 1.5),
        Error::InvalidParameter {
            name: "probability",
            ..
        }
    ));
    assert!(matches!(
        bad(Transform::FlipHorizontal, f32::NAN),
        Error::InvalidParameter { .. }
    ));
    assert!(matches!(
        bad(
            Transform::DenseElastic {
                alpha: Range::fixed(100.0),
                sigma: Range::new(-1.0, 2.0),
                smoothing: FieldSmoothing::Exact,
            },
            0.5
        ),
        Error::InvalidParameter { name: "sigma", .. }
    ));
    assert!(matches!(
        bad(
            Transform::Brightness {
                delta: Range::new(1.0, -1.0)
            },
            0.5
        ),
        Error::InvalidRange { name: "delta", .. }
    ));
    assert!(matches!(
        bad(
            Transform::Affine(AffineRanges {
                scale: Range::new(0.0, 1.0),
                ..AffineRanges::default()
            }),
            1.0
        ),
        Error::InvalidParameter { name: "scale", .. }
    ));
    assert!(matches!(
        bad(
            Transform::Affine(AffineRanges {
                shear_deg: Range::fixed(90.0),
                ..AffineRanges::default()
            }),
            1.0
        ),
        Error::InvalidRange {
            name: "shear_deg",
            ..
        }
    ));
    assert!(bad(
        Transform::GridElastic {
            nodes_x: 0,
            nodes_y: 3,
            std: Range::fixed(10.0)
        },
        1.0
    )
    .to_string()
    .contains("nodes_x"));
    assert!(bad(
        Transform::RandomCrop {
            width: 0,
            height: 4
        },
        1.0
    )
    .to_string()
    .contains("empty"));

    // A crop larger than the image is found when the sample's size is known.
    let crop = Pipeline::builder()
        .always(Transform::RandomCrop {
            width: 9,
            height: 4,
        })
        .build()
        .unwrap();
    let sample = Sample::grey(8, 8, vec![0.0; 64], vec![0; 64], None).unwrap();
    assert_eq!(
        crop.apply(&sample, 1).unwrap_err(),
        Error::CropTooLarge {
            crop_width: 9,
            crop_height: 4,
            width: 8,
            height: 8
        }
    );
    assert!(matches!(
        Sample::grey(8, 8, vec![0.0; 64], vec![0; 63], None),
        Err(Error::PlaneSize { plane: "label", .. })
    ));
}

#[test]
fn blur_and_shot_noise_change_the_image_alone_and_are_seeded() {
    let (w, h) = (32, 24);
    let image: Vec<f32> = (0..w * h).map(|p| ((p * 7) % 23) as f32 / 23.0).collect();
    let labels: Vec<u8> = (0..w * h)
        .map(|p| if p % 5 == 0 { 0 } else { 255 })
        .collect();
    let sample = Sample::grey(w, h, image.clone(), labels.clone(), Some(vec![2.0; w * h])).unwrap();
    let blur = Pipeline::builder()
        .always(Transform::GaussianBlur {
            sigma: Range::fixed(1.0),
        })
        .build()
        .unwrap();
    let out = blur.apply(&sample, 3).unwrap();
    assert_eq!(out.label(), &labels[..]);
    let variance = |v: &[f32]| {
        let m = v.iter().sum::<f32>() / v.len() as f32;
        v.iter().map(|x| (x - m).powi(2)).sum::<f32>() / v.len() as f32
    };
    assert!(variance(out.image()) < 0.5 * variance(&image));
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!((mean(out.image()) - mean(&image)).abs() < 0.01);

    let shot = Pipeline::builder()
        .always(Transform::PoissonNoise {
            peak: Range::fixed(50.0),
        })
        .build()
        .unwrap();
    let a = shot.apply(&sample, 9).unwrap();
    assert_eq!(
        a,
        shot.apply(&sample, 9).unwrap(),
        "the same seed, the same noise"
    );
    assert_ne!(a.image(), shot.apply(&sample, 10).unwrap().image());
    for (x, y) in image.iter().zip(a.image()) {
        if *x == 0.0 {
            assert_eq!(*y, 0.0, "no photons, no noise");
        }
    }
    assert!(Pipeline::builder()
        .always(Transform::PoissonNoise {
            peak: Range::fixed(0.0)
        })
        .build()
        .is_err());
}

/// Channels share the geometry and each draws its own intensity moves: channel 0 moves exactly as
/// the same plane alone (a grey sample) does, so grey training is unchanged; a copy of it in
/// channel 1 gets other brightness, contrast and gamma.
#[test]
fn channels_share_the_geometry_and_draw_their_own_intensity() {
    let (w, h) = (20, 16);
    let mut rng = unet_augment::SplitMix64::new(7);
    let plane: Vec<f32> = (0..w * h)
        .map(|_| 0.2 + 0.6 * rng.uniform() as f32)
        .collect();
    let label: Vec<u8> = (0..w * h)
        .map(|i| if i % 7 < 3 { 0 } else { 255 })
        .collect();
    let grey = Sample::grey(w, h, plane.clone(), label.clone(), None).unwrap();
    let two = Sample::new(w, h, 2, [plane.clone(), plane].concat(), label, None).unwrap();
    let mut steps = elastic_and_affine();
    steps.extend([
        Transform::Brightness {
            delta: Range::symmetric(0.1),
        },
        Transform::Contrast {
            factor: Range::new(0.6, 1.4),
        },
        Transform::Gamma {
            gamma: Range::new(0.7, 1.5),
        },
    ]);
    let pipeline = build(&steps);
    for seed in 0..8 {
        let (g, t) = (
            pipeline.apply(&grey, seed).unwrap(),
            pipeline.apply(&two, seed).unwrap(),
        );
        assert_eq!(t.image_plane(0), g.image_plane(0), "seed {seed}");
        assert_eq!(t.label(), g.label());
        assert_ne!(t.image_plane(1), t.image_plane(0), "seed {seed}");
    }
    // Without intensity steps the copy stays a copy: the geometry is shared.
    let geometric = build(&elastic_and_affine());
    let t = geometric.apply(&two, 3).unwrap();
    assert_eq!(t.image_plane(1), t.image_plane(0));
}
