//! The fast CPU kernels against candle's stock ops: the 64 -> 64 3x3 convolution at 570x570
//! (the paper net's first level) forward, input gradient and weight gradient.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use unet_model::kernels::{conv2d, conv2d_input_grad, conv2d_weight_grad, with_fast_ops};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = unet_model::layers::InitRng::new(seed);
    let len: usize = shape.iter().product();
    let v: Vec<f32> = (0..len).map(|_| rng.next_normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn conv_64_570(c: &mut Criterion) {
    let x = random(&[1, 64, 570, 570], 1);
    let w = random(&[64, 64, 3, 3], 2);
    let b = random(&[64], 3);
    let dy = random(&[1, 64, 568, 568], 4);
    let mut group = c.benchmark_group("conv3x3_64to64_570");
    group.sample_size(10);
    for (name, fast) in [("fast", true), ("stock", false)] {
        group.bench_function(format!("forward/{name}"), |bench| {
            bench.iter(|| with_fast_ops(fast, || conv2d(&x, &w, &b, 0).expect("conv")))
        });
        group.bench_function(format!("input_grad/{name}"), |bench| {
            bench.iter(|| with_fast_ops(fast, || conv2d_input_grad(&dy, &w, 0).expect("dx")))
        });
        group.bench_function(format!("weight_grad/{name}"), |bench| {
            bench.iter(|| with_fast_ops(fast, || conv2d_weight_grad(&x, &dy, 3, 0).expect("dw")))
        });
    }
    group.finish();
}

criterion_group!(benches, conv_64_570);
criterion_main!(benches);
