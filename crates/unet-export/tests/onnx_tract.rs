//! The exported ONNX graphs run in tract (a pure-Rust ONNX runtime) and give candle's
//! probabilities within 1e-4: same and valid padding, with and without batch norm (with
//! running statistics far from 0 and 1, so the folding matters), both up-sampling modes and a
//! ResNet encoder, each at two input sizes and a batch of two, from one graph with symbolic
//! sizes.

use candle_core::{Device, Tensor};
use prost::Message;
use tract_onnx::prelude::*;
use unet_export::onnx::proto::ModelProto;
use unet_export::onnx_model;
use unet_model::size::min_input_size;
use unet_model::{Encoder, Padding, UNet, UNetConfig, Upsampling};

/// A net of `cfg` with every tensor random, batch-norm statistics included.
fn random_net(cfg: &UNetConfig, seed: u64) -> UNet {
    let model = UNet::seeded(cfg, seed, &Device::Cpu).unwrap();
    let mut state = model.state();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    for (name, t) in state.iter_mut() {
        let n = t.elem_count();
        let values: Vec<f32> = if name.ends_with("running_var") {
            (0..n).map(|_| 0.5 + next()).collect()
        } else if name.contains(".bn")
            || name.contains("downsample.1")
            || name.ends_with("bn1.weight")
        {
            (0..n).map(|_| next() - 0.3).collect()
        } else if name.ends_with(".bias") {
            (0..n).map(|_| 0.2 * (next() - 0.5)).collect()
        } else {
            // A copy: candle refuses to set a variable from its own storage.
            *t = t.copy().unwrap();
            continue;
        };
        *t = Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap();
    }
    model.load_state(&state).unwrap();
    model
}

fn input(n: usize, c: usize, size: usize, seed: usize) -> Vec<f32> {
    (0..n * c * size * size)
        .map(|i| ((i * 7 + seed) as f32 * 0.013).sin() + 0.3 * ((i / size) as f32 * 0.05).cos())
        .collect()
}

/// The largest difference between tract's run of the model's ONNX graph and candle's
/// softmax of the logits, over the input sizes `sizes` (batch 2).
fn max_difference(model: &UNet, sizes: &[usize]) -> f32 {
    let cfg = model.config();
    let bytes = onnx_model(model).unwrap();
    let proto = ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let dims = &graph.input[0]
        .r#type
        .as_ref()
        .unwrap()
        .tensor_type
        .as_ref()
        .unwrap();
    let names: Vec<Option<&str>> = dims
        .shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| d.dim_param.as_deref())
        .collect();
    assert_eq!(names, [Some("batch"), None, Some("height"), Some("width")]);
    let loaded = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap();
    let mut worst = 0f32;
    for (k, &size) in sizes.iter().enumerate() {
        let n = 2;
        // tract cannot prove `2 * (h / 4) == h / 2` for a symbolic h, so each size is fixed
        // before its analysis; the graph itself stays symbolic (checked above).
        let plan = loaded
            .clone()
            .with_input_fact(0, f32::fact([n, cfg.in_channels, size, size]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = input(n, cfg.in_channels, size, k);
        let xt =
            Tensor::from_vec(x.clone(), (n, cfg.in_channels, size, size), &Device::Cpu).unwrap();
        let logits = model.forward(&xt).unwrap();
        let want = candle_nn::ops::softmax(&logits, 1).unwrap();
        let want_dims = want.dims().to_vec();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let tx = tract_ndarray::Array4::from_shape_vec((n, cfg.in_channels, size, size), x)
            .unwrap()
            .into_tensor();
        let out = plan.run(tvec!(tx.into())).unwrap();
        let got = out[0].to_array_view::<f32>().unwrap();
        assert_eq!(got.shape(), want_dims.as_slice(), "{cfg:?} at {size}");
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(diff);
    }
    worst
}

/// Checks `cfg` at the first two valid input sizes of at least 20 and 36 pixels.
fn check(cfg: UNetConfig) {
    cfg.validate().unwrap();
    let min = min_input_size(&cfg);
    let step = unet_model::size::input_size_step(&cfg);
    let at_least = |s: usize| min + s.saturating_sub(min).div_ceil(step) * step;
    let first = at_least(20);
    let sizes = [first, at_least(first + 16)];
    let model = random_net(&cfg, 7);
    let diff = max_difference(&model, &sizes);
    eprintln!("{cfg:?} at {sizes:?}: max |tract - candle| = {diff:e}");
    assert!(diff <= 1e-4, "{cfg:?}: {diff}");
}

fn tiny(padding: Padding, batch_norm: bool, depth: usize, width: usize) -> UNetConfig {
    UNetConfig {
        depth,
        base_width: width,
        padding,
        batch_norm,
        dropout: 0.0,
        ..UNetConfig::small()
    }
}

#[test]
fn same_padding_with_and_without_batch_norm() {
    check(tiny(Padding::Same, true, 3, 8));
    check(tiny(Padding::Same, false, 2, 4));
}

#[test]
fn valid_padding_with_and_without_batch_norm() {
    check(tiny(Padding::Valid, true, 3, 4));
    check(tiny(Padding::Valid, false, 2, 8));
}

#[test]
fn bilinear_up_sampling_both_corner_modes_and_dropout() {
    for align_corners in [false, true] {
        check(UNetConfig {
            upsampling: Upsampling::Bilinear { align_corners },
            in_channels: 2,
            n_classes: 3,
            dropout: 0.5,
            ..tiny(Padding::Valid, true, 3, 4)
        });
    }
    check(UNetConfig {
        upsampling: Upsampling::Bilinear {
            align_corners: false,
        },
        ..tiny(Padding::Same, true, 2, 4)
    });
}

#[test]
fn resnet18_encoder() {
    check(UNetConfig {
        base_width: 4,
        ..UNetConfig::resnet(Encoder::Resnet18)
    });
}
