//! Forward, train step and up-convolution timings on the CPU.

use candle_core::{DType, Device, Module, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use unet_model::kernels::with_fast_ops;
use unet_model::layers::UpConv2x2;
use unet_model::{Adam, AdamParams, Loss, Optimizer, UNet, UNetConfig};

fn small_net() -> UNet {
    UNet::seeded(&UNetConfig::small(), 0, &Device::Cpu).unwrap()
}

fn forward_and_train(c: &mut Criterion) {
    let model = small_net();
    let mut group = c.benchmark_group("small");
    group.sample_size(10);
    let x = Tensor::randn(0f32, 1.0, (1, 1, 256, 256), &Device::Cpu).unwrap();
    group.bench_function("forward eval 1x256x256", |b| {
        b.iter(|| model.forward_t(&x, false).unwrap())
    });
    let x = Tensor::randn(0f32, 1.0, (1, 1, 128, 128), &Device::Cpu).unwrap();
    let y = x
        .ge(0.0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let mut opt = Adam::new(model.parameters(), AdamParams::default()).unwrap();
    group.bench_function("train step (CE, Adam) 1x128x128", |b| {
        b.iter(|| {
            let logits = model.forward_t(&x, true).unwrap();
            let loss = Loss::CrossEntropy.compute(&logits, &y, None).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        })
    });
    group.finish();
}

/// The 2x2 stride-2 up-convolution at the `small` net's top level (32 -> 16 channels, 256^2 ->
/// 512^2): the fast op against the candle formulation it replaces (matmul form) and candle's
/// `conv_transpose2d`; forward alone, and forward + backward.
fn upconv(c: &mut Criterion) {
    let dev = Device::Cpu;
    let weight =
        Var::from_tensor(&Tensor::randn(0f32, 0.1, (32, 16, 2, 2), &dev).unwrap()).unwrap();
    let bias = Var::from_tensor(&Tensor::zeros(16, DType::F32, &dev).unwrap()).unwrap();
    let up = UpConv2x2 {
        weight: weight.clone(),
        bias,
    };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 32, 256, 256), &dev).unwrap()).unwrap();
    let probe = Tensor::randn(0f32, 1.0, (1, 16, 512, 512), &dev).unwrap();
    let mut group = c.benchmark_group("upconv 32->16 at 256x256");
    group.sample_size(10);
    for (name, fast) in [("fast op", true), ("matmul form", false)] {
        group.bench_function(format!("forward/{name}"), |b| {
            b.iter(|| with_fast_ops(fast, || up.forward(x.as_tensor()).unwrap()))
        });
        group.bench_function(format!("forward+backward/{name}"), |b| {
            b.iter(|| {
                with_fast_ops(fast, || {
                    let y = up.forward(x.as_tensor()).unwrap();
                    (y * &probe).unwrap().sum_all().unwrap().backward().unwrap()
                })
            })
        });
    }
    group.bench_function("forward/candle conv_transpose2d", |b| {
        b.iter(|| x.conv_transpose2d(weight.as_tensor(), 0, 0, 2, 1).unwrap())
    });
    group.finish();
}

criterion_group!(benches, forward_and_train, upconv);
criterion_main!(benches);
