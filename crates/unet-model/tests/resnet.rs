//! ResNet U-Nets against PyTorch (`scripts/make_resnet_fixture.py`): parameter counts, and the
//! torchvision-name mapping of `load_torchvision_encoder` on a deterministically filled
//! torchvision resnet18 (the same fill is computed here, so no 45 MB of weights is committed).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use unet_model::resnet::load_torchvision_encoder;
use unet_model::{parameter_count, Adam, AdamParams, Encoder, Loss, Optimizer, UNet, UNetConfig};

fn fixture() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resnet.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn net(encoder: Encoder, in_channels: usize) -> UNet {
    let cfg = UNetConfig {
        in_channels,
        ..UNetConfig::resnet(encoder)
    };
    UNet::seeded(&cfg, 3, &Device::Cpu).unwrap()
}

#[test]
fn parameter_counts_equal_pytorch() {
    let f = fixture();
    for (name, encoder) in [
        ("resnet18", Encoder::Resnet18),
        ("resnet34", Encoder::Resnet34),
    ] {
        let cfg = UNetConfig::resnet(encoder);
        assert_eq!(
            parameter_count(&cfg) as u64,
            f["parameter_counts"][name].as_u64().unwrap(),
            "{name}"
        );
    }
}

/// The script's fill of tensor `k` (`value` and `kind_of` in make_resnet_fixture.py).
fn filled(k: usize, name: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let scale = name.starts_with("bn") || name.contains(".bn") || name.contains("downsample.1");
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let s = (0.37 * i as f64 + 1.3 * k as f64).sin();
            let v = if name.ends_with("running_var") {
                1.0 + 0.5 * s.abs()
            } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                0.1 * s
            } else if scale {
                1.0 + 0.1 * s
            } else {
                0.08 * s
            };
            v as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A torchvision-layout resnet18 state dict, as `save_file(model.state_dict())` writes it.
fn torchvision_file(dir: &std::path::Path, drop: Option<&str>) -> std::path::PathBuf {
    let f = fixture();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, entry) in f["resnet18_tensors"].as_array().unwrap().iter().enumerate() {
        let name = entry[0].as_str().unwrap();
        let shape: Vec<usize> = entry[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        if Some(name) != drop {
            tensors.insert(name.to_string(), filled(k, name, &shape));
        }
    }
    // What a real file also holds, and the loader ignores.
    tensors.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 512), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::zeros((), DType::I64, &Device::Cpu).unwrap(),
    );
    let path = dir.join("resnet18.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

fn image(c: usize) -> Tensor {
    let v: Vec<f32> = (0..c * 64 * 64)
        .map(|i| ((0.11 * i as f64).cos() * 0.5) as f32)
        .collect();
    Tensor::from_vec(v, (1, c, 64, 64), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn torchvision_weights_map_onto_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let file = torchvision_file(dir.path(), None);
    let f = fixture();
    let model = net(Encoder::Resnet18, 3);
    let tensors = f["resnet18_tensors"].as_array().unwrap().len();
    assert_eq!(load_torchvision_encoder(&file, &model).unwrap(), tensors);
    let maps = model.encoder_maps(&image(3), false).unwrap();
    assert_eq!(maps.len(), 5);
    let stem = flat(&maps[0]);
    let sum: f64 = stem.iter().map(|&v| f64::from(v)).sum();
    let expected = f["stem_sum"].as_f64().unwrap();
    assert!(
        (sum - expected).abs() < 1e-4 * expected.abs().max(1.0),
        "{sum} vs {expected}"
    );
    let layer4 = flat(&maps[4]);
    let want: Vec<f64> = f["layer4"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(maps[4].dims(), &[1, 512, 2, 2]);
    assert_eq!(layer4.len(), want.len());
    let worst = layer4
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (f64::from(a) - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "worst relative difference {worst}");

    // A grey net takes the RGB stem summed over colours: a grey image gives what the RGB net
    // gives for that grey in all three channels.
    let grey = net(Encoder::Resnet18, 1);
    load_torchvision_encoder(&file, &grey).unwrap();
    let x1 = image(1);
    let x3 = Tensor::cat(&[&x1, &x1, &x1], 1).unwrap();
    let a = flat(&grey.encoder_maps(&x1, false).unwrap()[4]);
    let b = flat(&model.encoder_maps(&x3, false).unwrap()[4]);
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| (x - y).abs() <= 1e-4 * y.abs().max(1.0)));
}

#[test]
fn wrong_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = torchvision_file(dir.path(), Some("layer3.1.bn2.running_var"));
    let err = load_torchvision_encoder(&missing, &net(Encoder::Resnet18, 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing tensor layer3.1.bn2.running_var"),
        "{err}"
    );
    let file = torchvision_file(dir.path(), None);
    let err = load_torchvision_encoder(&file, &net(Encoder::Resnet34, 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing tensor layer1.2.conv1.weight"),
        "{err}"
    );
    let plain = {
        let varmap = VarMap::new();
        UNet::new(
            &UNetConfig::small(),
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap()
    };
    let err = load_torchvision_encoder(&file, &plain).unwrap_err();
    assert!(err.to_string().contains("no ResNet encoder"), "{err}");
    std::fs::write(&file, b"not safetensors").unwrap();
    let err = load_torchvision_encoder(&file, &net(Encoder::Resnet18, 1)).unwrap_err();
    assert!(err.to_string().contains("resnet18.safetensors"), "{err}");
}

#[test]
fn a_resnet18_unet_learns_one_image() {
    let model = net(Encoder::Resnet18, 1);
    let x = image(1).narrow(2, 0, 32).unwrap().narrow(3, 0, 32).unwrap();
    assert_eq!(model.forward_t(&x, true).unwrap().dims(), &[1, 2, 32, 32]);
    let ids: Vec<u32> = (0..32 * 32)
        .map(|i| u32::from((i % 32) / 4 % 2 == 0))
        .collect();
    let y = Tensor::from_vec(ids, (1, 32, 32), &Device::Cpu).unwrap();
    let params = AdamParams {
        lr: 3e-3,
        ..AdamParams::default()
    };
    let mut opt = Adam::new(model.parameters(), params).unwrap();
    let mut losses = Vec::new();
    for _ in 0..15 {
        let logits = model.forward_t(&x, true).unwrap();
        let loss = Loss::CrossEntropy.compute(&logits, &y, None).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    assert!(losses[14] < losses[0] / 3.0, "{losses:?}");
    // A size that does not divide by 32 names the nearest valid sizes.
    let bad = Tensor::zeros((1, 1, 48, 64), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward_t(&bad, false).unwrap_err().to_string();
    assert!(err.contains("32") && err.contains("64"), "{err}");
}
