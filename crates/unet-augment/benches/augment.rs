//! Augmentation of one 512x512 sample (image + label + weight) on one core.
//!
//! `cargo bench -p unet-augment --bench augment -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use unet_augment::{
    remap, BorderMode, DenseElastic, FieldSmoothing, Interpolation, Pipeline, Preset, Range,
    Sample, Transform,
};

const SIZE: usize = 512;

/// A synthetic EM-like section: the content does not change the work done.
fn sample() -> Sample {
    let n = SIZE * SIZE;
    let image: Vec<f32> = (0..n)
        .map(|i| ((i % SIZE) as f32 * 0.05).sin() * 0.3 + 0.5)
        .collect();
    let label: Vec<u8> = (0..n)
        .map(|i| if (i / SIZE) % 40 < 3 { 0 } else { 255 })
        .collect();
    let weight: Vec<f32> = label
        .iter()
        .map(|&l| if l == 0 { 3.0 } else { 1.0 })
        .collect();
    Sample::grey(SIZE, SIZE, image, label, Some(weight)).unwrap()
}

/// The reference preset's steps with the exact (scipy FIR) field smoothing.
fn reference_exact() -> Pipeline {
    Pipeline::builder()
        .step(Transform::FlipHorizontal, 0.5)
        .step(Transform::FlipVertical, 0.5)
        .step(
            Transform::DenseElastic {
                alpha: Range::new(100.0, 300.0),
                sigma: Range::new(10.0, 15.0),
                smoothing: FieldSmoothing::Exact,
            },
            0.5,
        )
        .always(Transform::BrightnessFactor {
            factor: Range::new(0.6, 1.4),
        })
        .always(Transform::Clamp { min: 0.0, max: 1.0 })
        .step(
            Transform::GaussianNoise {
                std: Range::fixed(Preset::REFERENCE_NOISE_STD),
            },
            0.5,
        )
        .build()
        .unwrap()
}

/// The reference recipe with every step always on: the worst case of the preset.
fn reference_all_on() -> Pipeline {
    Pipeline::builder()
        .always(Transform::FlipHorizontal)
        .always(Transform::FlipVertical)
        .always(Transform::DenseElastic {
            alpha: Range::new(100.0, 300.0),
            sigma: Range::new(10.0, 15.0),
            smoothing: FieldSmoothing::Recursive,
        })
        .always(Transform::BrightnessFactor {
            factor: Range::new(0.6, 1.4),
        })
        .always(Transform::Clamp { min: 0.0, max: 1.0 })
        .always(Transform::GaussianNoise {
            std: Range::fixed(Preset::REFERENCE_NOISE_STD),
        })
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let sample = sample();
    let reference = Preset::Reference.pipeline().unwrap();
    let exact = reference_exact();
    let all_on = reference_all_on();
    let paper = Preset::Paper.pipeline().unwrap();
    let mut group = c.benchmark_group("augment_512");
    group.sample_size(20);
    for (name, pipeline) in [
        ("reference_preset", &reference),
        ("reference_exact_smoothing", &exact),
        ("reference_all_steps_on", &all_on),
        ("paper_preset", &paper),
    ] {
        let mut seed = 0u64;
        group.bench_function(name, |b| {
            pool.install(|| {
                b.iter(|| {
                    seed += 1;
                    black_box(pipeline.apply(&sample, seed).unwrap())
                })
            })
        });
    }
    for sigma in [10.0f32, 15.0] {
        let dense = DenseElastic::new(250.0, sigma).unwrap();
        group.bench_function(format!("dense_field_sigma_{sigma}"), |b| {
            b.iter(|| black_box(dense.field(SIZE, SIZE, 3).unwrap()))
        });
        let recursive = dense.with_smoothing(FieldSmoothing::Recursive);
        group.bench_function(format!("dense_field_recursive_sigma_{sigma}"), |b| {
            b.iter(|| black_box(recursive.field(SIZE, SIZE, 3).unwrap()))
        });
    }
    let map = DenseElastic::new(250.0, 10.0)
        .unwrap()
        .field(SIZE, SIZE, 3)
        .unwrap()
        .to_coord_map();
    group.bench_function("remap_bilinear_one_plane", |b| {
        b.iter(|| {
            black_box(
                remap(
                    sample.image(),
                    SIZE,
                    SIZE,
                    &map,
                    Interpolation::Bilinear,
                    BorderMode::Mirror,
                    0.0,
                )
                .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
