//! A full training step of small U-Nets gives the same loss, gradients and running statistics
//! with the fast CPU kernels as with candle's stock ops.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use unet_model::kernels::cpu_path::{with_kernel_paths, GemmPath, KernelPaths};
use unet_model::kernels::winograd::{with_conv_algorithm, ConvAlgorithm};
use unet_model::kernels::with_fast_ops;
use unet_model::{Loss, Padding, UNet, UNetConfig, Upsampling};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = unet_model::layers::InitRng::new(seed);
    let len: usize = shape.iter().product();
    let v: Vec<f32> = (0..len).map(|_| rng.next_normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Loss, then every parameter gradient and every buffer of `model` after a step.
fn outcome(model: &UNet, loss: Tensor, grads: &GradStore) -> Vec<Tensor> {
    let mut out = vec![loss];
    for (name, var) in model.parameters() {
        let g = grads.get(var.as_tensor());
        out.push(
            g.unwrap_or_else(|| panic!("no gradient for {name}"))
                .clone(),
        );
    }
    out.extend(model.buffers().iter().map(|(_, v)| v.as_tensor().clone()));
    out
}

/// A random batch for a net of `cfg`: images, class ids and pixel weights.
fn inputs(cfg: &UNetConfig, batch: usize, size: usize, seed: u64) -> (Tensor, Tensor, Tensor) {
    let out = unet_model::output_size(cfg, size).unwrap();
    let x = random(&[batch, 1, size, size], seed);
    let targets = random(&[batch, out, out], seed + 1)
        .ge(0.0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap();
    let w = (random(&[batch, out, out], seed + 2).abs().unwrap() + 0.5).unwrap();
    (x, targets, w)
}

/// Loss, then every parameter gradient and every buffer after one train-mode step.
fn step(cfg: &UNetConfig, fast: bool, x: &Tensor, targets: &Tensor, w: &Tensor) -> Vec<Tensor> {
    with_fast_ops(fast, || {
        let model = UNet::seeded(cfg, 7, &Device::Cpu).unwrap();
        let logits = model.forward_t(x, true).unwrap();
        let loss = Loss::CrossEntropy
            .compute(&logits, targets, Some(w))
            .unwrap();
        let grads = loss.backward().unwrap();
        outcome(&model, loss, &grads)
    })
}

/// The fast kernels' train step against the stock ops', on every gemm path this CPU has, with
/// each convolution algorithm forced (the tiny nets are below Winograd's channel rule).
fn check(cfg: UNetConfig, batch: usize, size: usize) {
    for path in GemmPath::ALL {
        if !path.available() {
            eprintln!("skipped the {path} path: this CPU lacks it");
            continue;
        }
        for algorithm in ConvAlgorithm::ALL {
            with_kernel_paths(KernelPaths::all(path), || {
                with_conv_algorithm(Some(algorithm), || {
                    check_on_path(&cfg, batch, size, &format!("{path}, {algorithm}"))
                })
            })
        }
    }
}

fn check_on_path(cfg: &UNetConfig, batch: usize, size: usize, path: &str) {
    let (x, targets, w) = inputs(cfg, batch, size, 1);
    let fast = step(cfg, true, &x, &targets, &w);
    let stock = step(cfg, false, &x, &targets, &w);
    assert_eq!(fast.len(), stock.len());
    for (i, (f, s)) in fast.iter().zip(&stock).enumerate() {
        assert_eq!(f.dims(), s.dims(), "tensor {i}");
        let diff = max_abs(&(f - s).unwrap());
        // Conv biases before a batch norm have gradients that are zero up to rounding: compare
        // those on an absolute scale of 1e-6.
        let scale = max_abs(s).max(1e-2);
        assert!(
            diff <= 1e-4 * scale,
            "{path}: tensor {i} ({:?}): max difference {diff}, scale {scale}",
            s.dims()
        );
    }
}

#[test]
fn same_padding_train_step_matches_stock_ops() {
    let cfg = UNetConfig {
        depth: 3,
        base_width: 4,
        ..UNetConfig::small()
    };
    check(cfg, 2, 20);
}

/// The paper's net (valid padding), shrunk: 3 levels, widths 3-12, batch norm.
fn tiny_valid() -> UNetConfig {
    UNetConfig {
        depth: 3,
        base_width: 3,
        padding: Padding::Valid,
        batch_norm: true,
        dropout: 0.0,
        upsampling: Upsampling::Transposed,
        ..UNetConfig::reference()
    }
}

#[test]
fn valid_padding_train_step_matches_stock_ops() {
    check(tiny_valid(), 2, 44);
}

#[test]
fn bilinear_net_without_batch_norm_matches_stock_ops() {
    let cfg = UNetConfig {
        depth: 2,
        base_width: 5,
        batch_norm: false,
        dropout: 0.0,
        upsampling: Upsampling::Bilinear {
            align_corners: false,
        },
        ..UNetConfig::small()
    };
    check(cfg, 1, 18);
}

/// Loss, every parameter gradient and every buffer after one step through
/// [`UNet::direct_train_step`].
fn direct_step(cfg: &UNetConfig, x: &Tensor, targets: &Tensor, w: &Tensor) -> Vec<Tensor> {
    with_fast_ops(true, || {
        let model = UNet::seeded(cfg, 7, &Device::Cpu).unwrap();
        assert!(model.direct_step_applies(x));
        let (loss, grads) = model
            .direct_train_step(x, |logits| {
                Loss::CrossEntropy.compute(logits, targets, Some(w))
            })
            .unwrap()
            .expect("applies");
        outcome(&model, loss, &grads)
    })
}

/// The direct step against autograd over the same fast kernels: the same loss, gradients and
/// running statistics, to the last bit.
fn check_direct(cfg: UNetConfig, batch: usize, size: usize) {
    let (x, targets, w) = inputs(&cfg, batch, size, 11);
    let direct = direct_step(&cfg, &x, &targets, &w);
    let autograd = step(&cfg, true, &x, &targets, &w);
    assert_eq!(direct.len(), autograd.len());
    for (i, (d, a)) in direct.iter().zip(&autograd).enumerate() {
        assert_eq!(d.dims(), a.dims(), "tensor {i}");
        let diff = max_abs(&(d - a).unwrap());
        assert_eq!(diff, 0.0, "tensor {i} ({:?})", a.dims());
    }
}

#[test]
fn direct_step_matches_autograd() {
    let small = UNetConfig {
        depth: 3,
        base_width: 4,
        ..UNetConfig::small()
    };
    check_direct(small.clone(), 2, 20);
    check_direct(tiny_valid(), 2, 44);
    check_direct(
        UNetConfig {
            batch_norm: false,
            ..small
        },
        1,
        16,
    );
}

#[test]
fn direct_step_with_dropout_and_where_it_does_not_apply() {
    // Drop-out draws from candle's (unseedable) generator, so only the shapes and finiteness
    // can be checked against autograd here.
    let cfg = UNetConfig {
        depth: 2,
        base_width: 4,
        dropout: 0.5,
        ..UNetConfig::small()
    };
    let x = random(&[1, 1, 12, 12], 21);
    let targets = random(&[1, 12, 12], 22)
        .ge(0.0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap();
    with_fast_ops(true, || {
        let model = UNet::seeded(&cfg, 7, &Device::Cpu).unwrap();
        let (loss, grads) = model
            .direct_train_step(&x, |l| Loss::CrossEntropy.compute(l, &targets, None))
            .unwrap()
            .expect("applies");
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        for (name, var) in model.parameters() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}"));
            assert_eq!(g.dims(), var.dims(), "{name}");
            assert!(max_abs(g).is_finite(), "{name}");
        }
    });
    // Not for bilinear up-sampling, nor with the stock ops: nothing runs, the closure is unused.
    let bilinear = UNetConfig {
        upsampling: Upsampling::Bilinear {
            align_corners: false,
        },
        ..cfg.clone()
    };
    for (cfg, fast) in [(bilinear, true), (cfg, false)] {
        with_fast_ops(fast, || {
            let model = UNet::seeded(&cfg, 7, &Device::Cpu).unwrap();
            assert!(!model.direct_step_applies(&x));
            let out = model
                .direct_train_step(&x, |_| panic!("the loss must not run"))
                .unwrap();
            assert!(out.is_none());
        });
    }
}
