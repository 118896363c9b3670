//! Forward parity with PyTorch: fixtures written by scripts/make_parity_fixture.py (an
//! independent PyTorch implementation of the same layout, run in float64).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use unet_model::kernels::cpu_path::{with_kernel_paths, GemmPath, KernelPaths};
use unet_model::kernels::winograd::{with_conv_algorithm, ConvAlgorithm};
use unet_model::{parameter_count, UNet, UNetConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn cases() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/parity_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// On every gemm path this CPU has and with each convolution algorithm (each forced once; the
/// paths the CPU lacks say they were skipped).
#[test]
fn forward_matches_pytorch_in_eval_and_train_mode() {
    for path in GemmPath::ALL {
        if !path.available() {
            eprintln!("skipped the {path} path: this CPU lacks it");
            continue;
        }
        for algorithm in ConvAlgorithm::ALL {
            with_kernel_paths(KernelPaths::all(path), || {
                with_conv_algorithm(Some(algorithm), forward_matches_pytorch)
            });
        }
    }
}

fn forward_matches_pytorch() {
    let cases = cases();
    assert_eq!(cases.len(), 4);
    for (name, case) in cases {
        let cfg: UNetConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let tensors = candle_core::safetensors::load(
            format!("{FIXTURES}/parity_{name}.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let (fixture, state): (HashMap<_, _>, HashMap<_, _>) = tensors
            .into_iter()
            .partition(|(k, _)| k.starts_with("fixture.") || k.starts_with("after_train."));

        let varmap = VarMap::new();
        let model = UNet::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        assert_eq!(
            model.parameter_count() as u64,
            case["parameters"].as_u64().unwrap(),
            "{name}: parameter count"
        );
        model.load_state(&state).unwrap();

        let x = &fixture["fixture.input"];
        let eval = model.forward_t(x, false).unwrap();
        let diff = max_abs_diff(&eval, &fixture["fixture.output_eval"]);
        assert!(diff < 1e-4, "{name}: eval max |diff| {diff}");

        if cfg.batch_norm {
            let train = model.forward_t(x, true).unwrap();
            let diff = max_abs_diff(&train, &fixture["fixture.output_train"]);
            assert!(diff < 1e-4, "{name}: train max |diff| {diff}");
            // The running statistics were updated as PyTorch updates them.
            let mut checked = 0;
            for (key, want) in &fixture {
                if let Some(buffer) = key.strip_prefix("after_train.") {
                    let (_, var) = model.buffers().iter().find(|(n, _)| n == buffer).unwrap();
                    let diff = max_abs_diff(var.as_tensor(), want);
                    assert!(diff < 1e-5, "{name}: {buffer} max |diff| {diff}");
                    checked += 1;
                }
            }
            assert_eq!(checked, model.buffers().len());
        } else {
            // Without batch norm or drop-out, training mode changes nothing.
            let train = model.forward_t(x, true).unwrap();
            assert_eq!(max_abs_diff(&train, &eval), 0.0);
        }
    }
}

#[test]
fn parameter_counts_match_pytorch() {
    let text = std::fs::read_to_string(format!("{FIXTURES}/param_counts.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let counts = &json["counts"];
    for (name, cfg) in [
        ("paper", UNetConfig::paper()),
        ("reference", UNetConfig::reference()),
        ("small", UNetConfig::small()),
    ] {
        assert_eq!(
            parameter_count(&cfg) as u64,
            counts[name].as_u64().unwrap(),
            "{name}"
        );
    }
    assert_eq!(counts["paper"], 31_030_658);
    assert_eq!(counts["reference"], 31_042_434);
}

/// The built models hold exactly those trainable parameters; candle's VarMap also holds the
/// batch-norm running statistics, which PyTorch counts as buffers.
#[test]
fn built_models_count_like_pytorch() {
    for (cfg, want) in [
        (UNetConfig::paper(), 31_030_658usize),
        (UNetConfig::reference(), 31_042_434),
    ] {
        let varmap = VarMap::new();
        // Zero-initialised builder: no 31 M random draws needed to count.
        let model = UNet::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        assert_eq!(model.parameter_count(), want);
        let in_varmap: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
        let buffers: usize = model.buffers().iter().map(|(_, v)| v.elem_count()).sum();
        assert_eq!(in_varmap, want + buffers);
        if cfg.batch_norm {
            // Two running statistics per BatchNorm channel, as many as the BN parameters.
            assert_eq!(buffers, 31_042_434 - 31_030_658);
        } else {
            assert_eq!(buffers, 0);
        }
    }
}
