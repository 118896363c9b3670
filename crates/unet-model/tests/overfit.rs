//! A tiny net overfits one small image: the losses, gradients and optimizers work together.

use candle_core::{DType, Device, Tensor};
use unet_model::{
    clip_grad_norm, Adam, AdamParams, Loss, LrSchedule, Optimizer, Padding, Sgd, SgdParams, UNet,
    UNetConfig,
};

/// A 16x16 image of two blobs on a ramp, its class map (3 classes) and border-like weights.
fn sample(dev: &Device) -> (Tensor, Tensor, Tensor) {
    let n = 16usize;
    let mut image = Vec::with_capacity(n * n);
    let mut labels = Vec::with_capacity(n * n);
    let mut weights = Vec::with_capacity(n * n);
    for y in 0..n {
        for x in 0..n {
            let d1 = ((y as f32 - 5.0).powi(2) + (x as f32 - 5.0).powi(2)).sqrt();
            let d2 = ((y as f32 - 11.0).powi(2) + (x as f32 - 10.0).powi(2)).sqrt();
            let class = if d1 < 3.5 {
                1
            } else if d2 < 3.0 {
                2
            } else {
                0
            };
            labels.push(class as u32);
            image.push(class as f32 * 0.6 + x as f32 * 0.02);
            weights.push(1.0 + 2.0 * ((d1 - 3.5).abs() < 1.0) as u8 as f32);
        }
    }
    (
        Tensor::from_vec(image, (1, 1, n, n), dev).unwrap(),
        Tensor::from_vec(labels, (1, n, n), dev).unwrap(),
        Tensor::from_vec(weights, (1, n, n), dev).unwrap(),
    )
}

fn tiny_net(seed: u64) -> UNet {
    let cfg = UNetConfig {
        in_channels: 1,
        n_classes: 3,
        depth: 2,
        base_width: 4,
        padding: Padding::Same,
        batch_norm: true,
        dropout: 0.0,
        ..UNetConfig::small()
    };
    UNet::seeded(&cfg, seed, &Device::Cpu).unwrap()
}

fn train(
    model: &UNet,
    opt: &mut dyn Optimizer,
    loss: Loss,
    steps: usize,
    schedule: LrSchedule,
) -> (f32, f32) {
    let (x, y, w) = sample(&Device::Cpu);
    let base_lr = opt.learning_rate();
    let mut first = None;
    let mut last = f32::NAN;
    for step in 0..steps {
        opt.set_learning_rate(schedule.lr(base_lr, step));
        let logits = model.forward_t(&x, true).unwrap();
        let value = loss.compute(&logits, &y, Some(&w)).unwrap();
        let mut grads = value.backward().unwrap();
        clip_grad_norm(&mut grads, model.parameters(), 5.0).unwrap();
        opt.step(&grads).unwrap();
        last = value.to_scalar::<f32>().unwrap();
        first.get_or_insert(last);
    }
    eprintln!("{} loss {:?} -> {last}", opt.kind(), first);
    (first.unwrap(), last)
}

#[test]
fn adam_overfits_one_image_with_weighted_cross_entropy() {
    let model = tiny_net(1);
    let mut opt = Adam::new(
        model.parameters(),
        AdamParams {
            lr: 0.02,
            ..Default::default()
        },
    )
    .unwrap();
    let schedule = LrSchedule::Cosine {
        total_steps: 300,
        min_lr: 0.002,
    };
    let (first, last) = train(&model, &mut opt, Loss::CrossEntropy, 300, schedule);
    assert!(last < first / 10.0, "loss {first} -> {last}");
    // The eval-mode prediction reproduces the label map.
    let (x, y, _) = sample(&Device::Cpu);
    let pred = model.forward_t(&x, false).unwrap().argmax(1).unwrap();
    let wrong = pred
        .ne(&y)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap();
    assert!(wrong.to_scalar::<f32>().unwrap() <= 8.0, "{wrong}");
}

#[test]
fn nesterov_sgd_overfits_one_image_with_ce_dice() {
    let model = tiny_net(2);
    let settings = SgdParams {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.0,
    };
    let mut opt = Sgd::new(model.parameters(), settings).unwrap();
    let schedule = LrSchedule::Poly {
        total_steps: 300,
        power: 0.9,
    };
    let (first, last) = train(&model, &mut opt, Loss::CrossEntropyDice, 300, schedule);
    assert!(last < first / 10.0, "loss {first} -> {last}");
}
