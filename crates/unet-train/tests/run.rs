//! End-to-end training of a tiny net on three synthetic 64x64 sections: the run's files, exact
//! resume after a mid-epoch stop (and its refusal on other sections), refusal of damaged checkpoints, a clear stop on a NaN loss,
//! the decision calibration of `best`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;
use unet_augment::Preset as AugmentPreset;
use unet_data::{ChannelStack, LabelClasses, Stack, IGNORED};
use unet_model::kernels::cpu_path::{cpu_info, with_kernel_paths, GemmPath, KernelPaths};
use unet_model::kernels::winograd::{with_conv_algorithm, ConvAlgorithm};
use unet_model::{load_checkpoint, read_checkpoint_meta, Loss, Precision, UNet, UNetConfig};
use unet_train::calibrate::{apply_calibration, calibrate_checkpoint, logit_margins, Calibration};
use unet_train::tensorboard::read_scalars;
use unet_train::{
    evaluate_checkpoint, evaluate_run, files, train, EpochRecord, Error, LossScaleConfig,
    OptimizerConfig, ScheduleConfig, SplitConfig, TrainConfig, TrainControl, TrainEvent,
    TrainOutcome,
};
use unet_weights::WeightMapParams;

const N: usize = 64;

/// Three sections of cells on a wobbly grid of one- and two-pixel membranes; the image is dark
/// on membranes, bright in cells, with a deterministic texture.
fn sections() -> (ChannelStack, Stack<u8>) {
    let (images, labels) = grey_sections();
    (images.into(), labels)
}

/// [`sections`] as the 8-bit stacks they are made as.
fn grey_sections() -> (Stack<u8>, Stack<u8>) {
    let mut img = Vec::new();
    let mut lab = Vec::new();
    for p in 0..3 {
        for y in 0..N {
            for x in 0..N {
                let wobble = (y / 8 + p) % 3;
                let membrane = (x + wobble + 3 * p) % 13 < 2 || (y + 2 * p) % 11 == 0;
                let texture = ((x * 31 + y * 17 + p * 7) % 23) as u8;
                img.push(if membrane {
                    40 + texture
                } else {
                    170 + texture
                });
                lab.push(if membrane { 0 } else { 255 });
            }
        }
    }
    (
        Stack::new(3, N, N, img).unwrap(),
        Stack::new(3, N, N, lab).unwrap(),
    )
}

fn tiny(run_dir: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        recipe: "test".into(),
        model: UNetConfig {
            depth: 2,
            base_width: 4,
            ..UNetConfig::small()
        },
        epochs,
        batch_size: 2,
        input_tile: 32,
        crops_per_section: 2,
        optimizer: OptimizerConfig::Adam {
            lr: 1e-2,
            weight_decay: 0.0,
        },
        schedule: ScheduleConfig::Cosine { min_lr: 1e-4 },
        grad_clip: Some(5.0),
        loss: Loss::CrossEntropy,
        weights: Some(WeightMapParams::default()),
        augmentation: AugmentPreset::Reference,
        normalisation: None,
        labels: LabelClasses::Binary,
        split: SplitConfig::Sections {
            train: vec![0, 1],
            validation: vec![2],
        },
        seed: 7,
        validate_every: 1,
        prefetch: 2,
        // The calibration has its own test; here `best` stays as trained so the evaluation
        // can be compared with the log.
        calibrate: false,
        init: None,
        encoder_weights: None,
        tensorboard: false,
        validation_batch_size: 1,
        precision: Precision::F32,
        loss_scale: LossScaleConfig::default(),
        run_dir: run_dir.to_path_buf(),
    }
}

/// A fresh run of `cfg` to its end, with no observer.
fn train_quietly(cfg: &TrainConfig, images: &ChannelStack, labels: &Stack<u8>) -> TrainOutcome {
    train(cfg, images, labels, &TrainControl::default(), &mut |_| {}).unwrap()
}

/// `cfg` resumed from its run directory, with no observer.
fn resume_quietly(
    cfg: &TrainConfig,
    images: &ChannelStack,
    labels: &Stack<u8>,
) -> Result<TrainOutcome, Error> {
    let control = TrainControl {
        resume: true,
        ..TrainControl::default()
    };
    train(cfg, images, labels, &control, &mut |_| {})
}

/// The message of a fresh run of `cfg` that must fail.
fn failed_run(cfg: &TrainConfig, images: &ChannelStack, labels: &Stack<u8>) -> String {
    train(cfg, images, labels, &TrainControl::default(), &mut |_| {})
        .unwrap_err()
        .to_string()
}

fn read_log(run_dir: &Path) -> Vec<EpochRecord> {
    std::fs::read_to_string(run_dir.join(files::LOG))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn two_epochs_write_log_checkpoints_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("runs/tiny");
    let (images, labels) = sections();
    let cfg = tiny(&run, 2);
    let mut steps = 0;
    let outcome = train(&cfg, &images, &labels, &TrainControl::default(), &mut |e| {
        if let TrainEvent::Step { loss, .. } = e {
            assert!(loss.is_finite());
            steps += 1;
        }
    })
    .unwrap();
    assert_eq!(steps, 4, "2 epochs of 2 sections x 2 crops in batches of 2");
    assert_eq!(outcome.epochs_done, 2);
    assert!(!outcome.interrupted);
    let log = read_log(&run);
    assert_eq!(log.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(log, outcome.records);
    for record in &log {
        let v = record.validation.as_ref().expect("validated every epoch");
        assert!((0.0..=1.0).contains(&v.pixel_accuracy) && (0.0..=1.0).contains(&v.mean_iou));
        assert!(v.loss.is_finite() && record.train_loss.is_finite());
        assert!(v.calibrated.is_none(), "this run does not calibrate");
    }
    assert!(log[0].best, "the first validation is the best so far");
    for name in [
        "config.json",
        "last.safetensors",
        "last.json",
        "last.optim.safetensors",
        "best.safetensors",
        "best.json",
    ] {
        assert!(run.join(name).is_file(), "{name} written");
    }
    assert_eq!(TrainConfig::load(run.join(files::CONFIG)).unwrap(), cfg);

    // The same directory again without --resume is refused, not overwritten.
    let again = train(
        &cfg,
        &images,
        &labels,
        &TrainControl::default(),
        &mut |_| {},
    );
    assert!(again
        .unwrap_err()
        .to_string()
        .contains("already holds a run"));

    // Evaluation of the run: scores JSON of the best checkpoint on section 2.
    let eval = evaluate_run(&run, &images, &labels, &Device::Cpu).unwrap();
    assert_eq!(eval.sections, vec![2]);
    let best = log
        .iter()
        .find(|r| r.best && r.epoch == eval.epoch)
        .unwrap();
    let v = best.validation.as_ref().unwrap();
    assert!((eval.full.mean_iou - v.mean_iou).abs() < 1e-9);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("scores.json")).unwrap()).unwrap();
    assert!(json["full"]["v_rand"].is_number());
    let centred = evaluate_checkpoint(
        run.join(files::LAST),
        &images,
        &labels,
        &[2],
        &Device::Cpu,
        Some(32),
    )
    .unwrap();
    assert_eq!(centred.centre.as_ref().unwrap().1.height, 32);
}

#[test]
fn resume_after_a_mid_epoch_stop_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let losses = |run: &Path, stop_at: Option<(usize, usize)>, resume: bool| {
        let control = TrainControl {
            resume,
            ..TrainControl::default()
        };
        let stop: Arc<AtomicBool> = control.stop.clone();
        let mut seen = Vec::new();
        let outcome = train(&tiny(run, 3), &images, &labels, &control, &mut |e| {
            if let TrainEvent::Step {
                epoch, step, loss, ..
            } = e
            {
                seen.push(loss);
                if Some((epoch, step)) == stop_at {
                    stop.store(true, Ordering::SeqCst);
                }
            }
        })
        .unwrap();
        (seen, outcome)
    };
    let whole = dir.path().join("whole");
    let (all, outcome) = losses(&whole, None, false);
    assert_eq!((all.len(), outcome.epochs_done), (6, 3));

    let split = dir.path().join("split");
    let (before, stopped) = losses(&split, Some((2, 1)), false);
    assert!(stopped.interrupted);
    assert_eq!((before.len(), stopped.epochs_done), (3, 1));
    assert_eq!(read_log(&split).len(), 1);
    let (after, resumed) = losses(&split, None, true);
    assert_eq!(resumed.epochs_done, 3);
    assert_eq!(
        after.len(),
        3,
        "the resumed run does the remaining steps only"
    );
    let joined: Vec<f64> = before.into_iter().chain(after).collect();
    for (k, (a, b)) in all.iter().zip(&joined).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "step {k}: uninterrupted {a} vs resumed {b}"
        );
    }
    let log = read_log(&split);
    assert_eq!(
        log.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let whole_log = read_log(&whole);
    assert!((log[1].train_loss - whole_log[1].train_loss).abs() < 1e-5);

    // A finished run cannot be resumed without more epochs; another setting is refused.
    let err = resume_quietly(&tiny(&split, 3), &images, &labels).unwrap_err();
    assert!(err.to_string().contains("all 3 epochs are done"), "{err}");
    let other = TrainConfig {
        batch_size: 1,
        ..tiny(&split, 4)
    };
    let err = resume_quietly(&other, &images, &labels).unwrap_err();
    assert!(matches!(err, Error::Resume { .. }), "{err}");

    // So are other sections (one pixel changed), leaving the run as it was.
    let last = std::fs::read(split.join(files::LAST)).unwrap();
    let mut pixels = grey_sections().0.as_slice().to_vec();
    pixels[0] ^= 1;
    let other_images = Stack::new(3, N, N, pixels).unwrap().into();
    let err = resume_quietly(&tiny(&split, 4), &other_images, &labels).unwrap_err();
    assert!(
        err.to_string().contains("not the ones the run trained on"),
        "{err}"
    );
    assert_eq!(std::fs::read(split.join(files::LAST)).unwrap(), last);
}

#[test]
fn damaged_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (images, labels) = sections();
    train_quietly(&tiny(&run, 1), &images, &labels);
    let resume = TrainControl {
        resume: true,
        ..TrainControl::default()
    };
    let weights = run.join(files::LAST);
    let mut bytes = std::fs::read(&weights).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&weights, &bytes).unwrap();
    let err = train(&tiny(&run, 2), &images, &labels, &resume, &mut |_| {}).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("corrupted") && message.contains("last.safetensors"),
        "{message}"
    );
    let err = evaluate_checkpoint(&weights, &images, &labels, &[2], &Device::Cpu, None);
    assert!(err.unwrap_err().to_string().contains("corrupted"));

    std::fs::write(&weights, &bytes[..middle]).unwrap();
    let err = train(&tiny(&run, 2), &images, &labels, &resume, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::remove_file(run.join("last.json")).unwrap();
    let err = train(&tiny(&run, 2), &images, &labels, &resume, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("last.json"), "{err}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("nan");
    let (images, labels) = sections();
    let cfg = TrainConfig {
        optimizer: OptimizerConfig::Sgd {
            lr: 1e30,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        grad_clip: None,
        schedule: ScheduleConfig::Constant,
        ..tiny(&run, 3)
    };
    let err = train(
        &cfg,
        &images,
        &labels,
        &TrainControl::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { .. }), "{err}");
    assert!(err.to_string().contains("checkpoints"), "{err}");
    assert!(run.join(files::CONFIG).is_file());
}

#[test]
fn a_finished_run_calibrates_best_on_its_training_sections() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("runs/calibrated");
    let (images, labels) = sections();
    let cfg = TrainConfig {
        calibrate: true,
        ..tiny(&run, 2)
    };
    let mut calibrating = 0;
    let outcome = train(&cfg, &images, &labels, &TrainControl::default(), &mut |e| {
        if let TrainEvent::Calibrating { sections } = e {
            assert_eq!(sections, 2);
            calibrating += 1;
        }
    })
    .unwrap();
    assert_eq!(calibrating, 1);
    // Each validation also scores at the decision point fitted on the training sections, and
    // `best` is the epoch where that scores best.
    let log = read_log(&run);
    let selection: Vec<f64> = log
        .iter()
        .map(|r| {
            let v = r.validation.as_ref().unwrap();
            let c = v.calibrated.as_ref().expect("calibrated scores");
            assert!(c.threshold > 0.0 && c.threshold < 1.0);
            v.selection_iou()
        })
        .collect();
    let (best_iou, best_epoch) = outcome.best.unwrap();
    assert_eq!(best_iou, selection[best_epoch - 1]);
    assert!(selection.iter().all(|&s| s <= best_iou));
    let c = outcome.calibration.clone().expect("the run calibrates");
    assert_eq!(
        c.sections,
        vec![0, 1],
        "fitted on the training sections only"
    );
    assert!(c.logit_offset.is_finite() && c.logit_offset.abs() <= 6.0);
    assert!((c.equivalent_threshold - 1.0 / (1.0 + c.logit_offset.exp())).abs() < 1e-12);
    assert!(c.after.mean_iou >= c.before.mean_iou);

    // The sidecar records it, evaluation reports it, and the calibrated best scores on its
    // training sections at P = 0.5 what the fit promised.
    let meta = read_checkpoint_meta(run.join(files::BEST)).unwrap();
    assert_eq!(Calibration::of(&meta), Some(c.clone()));
    assert!(Calibration::of(&read_checkpoint_meta(run.join(files::LAST)).unwrap()).is_none());
    let on_train = evaluate_checkpoint(
        run.join(files::BEST),
        &images,
        &labels,
        &[0, 1],
        &Device::Cpu,
        None,
    )
    .unwrap();
    assert_eq!(on_train.calibration, Some(c.clone()));
    assert!((on_train.full.mean_iou - c.after.mean_iou).abs() < 1e-3);
    assert!((on_train.full.pixel_accuracy - c.after.pixel_accuracy).abs() < 1e-3);

    // Calibrating twice, or a resumable `last`, is refused.
    for (path, why) in [
        (files::BEST, "already calibrated"),
        (files::LAST, "optimizer state"),
    ] {
        let err = calibrate_checkpoint(run.join(path), &images, &labels, &[0, 1], &Device::Cpu)
            .unwrap_err();
        assert!(matches!(err, Error::Calibration { .. }), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }

    // Resuming the finished run for one more epoch keeps or re-fits the calibration of `best`.
    let more = TrainConfig { epochs: 3, ..cfg };
    let outcome = resume_quietly(&more, &images, &labels).unwrap();
    let meta = read_checkpoint_meta(run.join(files::BEST)).unwrap();
    assert_eq!(outcome.calibration, Calibration::of(&meta));
    assert!(outcome.calibration.is_some());
}

#[test]
fn the_calibration_offset_moves_every_logit_margin() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("runs/offset");
    let (images, labels) = sections();
    train_quietly(&tiny(&run, 1), &images, &labels);
    let meta = read_checkpoint_meta(run.join(files::BEST)).unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let model = UNet::new(&meta.config, vb).unwrap();
    load_checkpoint(run.join(files::BEST), &model).unwrap();
    let stats = meta
        .normalisation
        .expect("training records the normalisation");
    let before = logit_margins(&model, &images, &[2], &stats, &Device::Cpu).unwrap();
    apply_calibration(&model, 1.25).unwrap();
    let after = logit_margins(&model, &images, &[2], &stats, &Device::Cpu).unwrap();
    for (b, a) in before.iter().zip(&after) {
        assert!((a - b - 1.25).abs() < 1e-4, "{b} -> {a}");
    }

    // Three classes have no single margin to move: the setting is refused up front.
    let three = TrainConfig {
        model: UNetConfig {
            n_classes: 3,
            ..meta.config.clone()
        },
        calibrate: true,
        ..tiny(&run, 1)
    };
    assert!(three
        .validate()
        .unwrap_err()
        .to_string()
        .contains("two-class"));
}

#[test]
fn tensorboard_events_carry_the_epoch_log() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let mut logs = Vec::new();
    for (name, batch) in [("one", 1), ("two", 2)] {
        let run = dir.path().join(name);
        let cfg = TrainConfig {
            tensorboard: true,
            validation_batch_size: batch,
            split: SplitConfig::Sections {
                train: vec![0],
                validation: vec![1, 2],
            },
            ..tiny(&run, 2)
        };
        train(
            &cfg,
            &images,
            &labels,
            &TrainControl::default(),
            &mut |_| {},
        )
        .unwrap();
        let log = read_log(&run);
        let files: Vec<_> = std::fs::read_dir(run.join(files::TENSORBOARD))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let scalars = read_scalars(&files[0]).unwrap();
        for record in &log {
            let v = record.validation.as_ref().unwrap();
            for (tag, value) in [
                ("train/loss", record.train_loss),
                ("train/lr", record.lr),
                ("val/mean_iou", v.mean_iou),
                ("val/pixel_accuracy", v.pixel_accuracy),
                ("val/v_rand", v.v_rand),
                ("val/v_info", v.v_info),
            ] {
                let found = scalars
                    .iter()
                    .find(|s| s.tag == tag && s.step == record.epoch as i64)
                    .unwrap_or_else(|| panic!("{tag} at epoch {}", record.epoch));
                assert_eq!(found.value, value as f32, "{tag}");
            }
        }
        logs.push(log);
    }
    // Two validation sections per forward pass score exactly as one at a time.
    for (a, b) in logs[0].iter().zip(&logs[1]) {
        let (va, vb) = (
            a.validation.as_ref().unwrap(),
            b.validation.as_ref().unwrap(),
        );
        assert_eq!(a.train_loss, b.train_loss);
        assert!((va.loss - vb.loss).abs() < 1e-6);
        assert!((va.mean_iou - vb.mean_iou).abs() < 1e-9);
    }
}

/// A config that fine-tunes the committed default model (`models/default.*`) for one tiny
/// epoch at a learning rate too small to move the weights: to `sections()` for two classes,
/// to `three_class_sections()` for three.
fn fine_tune(run: &Path, n_classes: usize) -> TrainConfig {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/default.safetensors"
    );
    TrainConfig {
        model: UNetConfig {
            n_classes,
            ..UNetConfig::small()
        },
        input_tile: 64,
        crops_per_section: 1,
        optimizer: OptimizerConfig::Adam {
            lr: 1e-12,
            weight_decay: 0.0,
        },
        init: Some(model.into()),
        labels: match n_classes {
            2 => LabelClasses::Binary,
            _ => LabelClasses::Indexed {
                classes: n_classes,
                ignore: true,
            },
        },
        ..tiny(run, 1)
    }
}

fn tensor(path: &Path, name: &str) -> Vec<f32> {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    t[name].flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn init_fine_tunes_the_default_model() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default.safetensors");
    for n_classes in [2, 3] {
        let (images, labels) = match n_classes {
            2 => sections(),
            _ => three_class_sections(),
        };
        let run = dir.path().join(format!("ft{n_classes}"));
        let mut seen = None;
        train(
            &fine_tune(&run, n_classes),
            &images,
            &labels,
            &TrainControl::default(),
            &mut |e| {
                if let TrainEvent::Initialised {
                    epochs,
                    reinitialised,
                    ..
                } = e
                {
                    seen = Some((epochs, reinitialised.to_vec()));
                }
            },
        )
        .unwrap();
        let (epochs, fresh) = seen.expect("the run says where it started");
        assert_eq!(epochs, read_checkpoint_meta(&default).unwrap().epoch);
        let last = run.join(files::LAST);
        let first_conv = "down0.conv1.weight";
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(
            &tensor(&last, first_conv),
            &tensor(&default, first_conv)
        ));
        if n_classes == 2 {
            assert!(fresh.is_empty());
            assert!(close(
                &tensor(&last, "classifier.weight"),
                &tensor(&default, "classifier.weight")
            ));
        } else {
            assert_eq!(fresh, vec!["classifier.weight", "classifier.bias"]);
            assert_eq!(tensor(&last, "classifier.bias").len(), 3);
        }
    }
    // Another body (here: depth) is refused with the differing field named.
    let other = TrainConfig {
        model: UNetConfig {
            depth: 4,
            ..UNetConfig::small()
        },
        ..fine_tune(&dir.path().join("deep"), 2)
    };
    let err = failed_run(&other, &images, &labels);
    assert!(err.contains("depth: 5 vs 4"), "{err}");
}

#[test]
fn encoder_weights_need_a_resnet_and_a_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let file = dir.path().join("resnet18.safetensors");
    std::fs::write(&file, b"not safetensors").unwrap();
    for (model, expected) in [
        (tiny(&dir.path().join("a"), 1).model, "no ResNet encoder"),
        (
            UNetConfig::resnet(unet_model::Encoder::Resnet18),
            "not a readable safetensors file",
        ),
    ] {
        let cfg = TrainConfig {
            model,
            encoder_weights: Some(file.clone()),
            run_dir: dir.path().join(expected.replace(' ', "-")),
            ..tiny(&dir.path().join("unused"), 1)
        };
        let err = failed_run(&cfg, &images, &labels);
        assert!(
            err.contains(expected) && err.contains("resnet18.safetensors"),
            "{err}"
        );
    }
}

#[test]
fn f16_training_follows_f32_and_logs_its_loss_scale() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let f32_run = dir.path().join("f32");
    train_quietly(&tiny(&f32_run, 2), &images, &labels);
    let f16_run = dir.path().join("f16");
    let cfg = TrainConfig {
        precision: Precision::F16,
        ..tiny(&f16_run, 2)
    };
    train_quietly(&cfg, &images, &labels);
    let (a, b) = (read_log(&f32_run), read_log(&f16_run));
    for (ra, rb) in a.iter().zip(&b) {
        // Same data, same initialisation: half-precision arithmetic moves the loss a little.
        let rel = (ra.train_loss - rb.train_loss).abs() / ra.train_loss;
        assert!(
            rel < 0.05,
            "epoch {}: f32 {} vs f16 {}",
            ra.epoch,
            ra.train_loss,
            rb.train_loss
        );
        assert_eq!(rb.skipped_steps, 0);
        assert_eq!(
            rb.loss_scale,
            Some(65536.0),
            "no overflow, no growth before 2000 steps"
        );
        assert_eq!(
            (ra.loss_scale, ra.skipped_steps),
            (None, 0),
            "f32 has no scaler"
        );
    }
    // The checkpoints hold f32 master weights.
    let saved = candle_core::safetensors::load(f16_run.join(files::LAST), &Device::Cpu).unwrap();
    assert!(saved.values().all(|t| t.dtype() == candle_core::DType::F32));
}

#[test]
fn overflowing_gradients_skip_the_step_and_back_off_across_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let run = dir.path().join("overflow");
    // A scale so large that every f16 gradient overflows for the first ~80 halvings.
    let initial = 1e30;
    let cfg = |epochs| TrainConfig {
        precision: Precision::F16,
        loss_scale: LossScaleConfig {
            initial,
            growth_interval: 1,
        },
        tensorboard: true,
        ..tiny(&run, epochs)
    };
    train_quietly(&cfg(1), &images, &labels);
    resume_quietly(&cfg(2), &images, &labels).unwrap();
    let log = read_log(&run);
    // Two steps an epoch, each skipped and halving the scale; the resumed epoch goes on from
    // the saved scale.
    assert_eq!(
        log.iter()
            .map(|r| (r.skipped_steps, r.loss_scale))
            .collect::<Vec<_>>(),
        vec![(2, Some(initial / 4.0)), (2, Some(initial / 16.0))]
    );
    // TensorBoard gets the same numbers (the resumed run appends a second event file).
    let mut scalars = Vec::new();
    for file in std::fs::read_dir(run.join(files::TENSORBOARD)).unwrap() {
        scalars.extend(read_scalars(file.unwrap().path()).unwrap());
    }
    for record in &log {
        for (tag, value) in [
            ("train/loss_scale", record.loss_scale.unwrap()),
            ("train/skipped_steps", 2.0),
        ] {
            let found = scalars
                .iter()
                .find(|s| s.tag == tag && s.step == record.epoch as i64)
                .unwrap_or_else(|| panic!("{tag} at epoch {}", record.epoch));
            assert_eq!(found.value, value as f32, "{tag}");
        }
    }
    // No step was applied: every parameter is still its seeded initial value.
    let fresh = UNet::seeded(&cfg(2).model, cfg(2).seed, &Device::Cpu).unwrap();
    for (name, var) in fresh.parameters() {
        let want = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(tensor(&run.join(files::LAST), name), want, "{name}");
    }
}

#[test]
fn bf16_on_the_cpu_is_refused_before_the_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let run = dir.path().join("bf16");
    let cfg = TrainConfig {
        precision: Precision::Bf16,
        ..tiny(&run, 1)
    };
    let err = failed_run(&cfg, &images, &labels);
    assert!(err.contains("bf16 is not supported on the CPU"), "{err}");
    assert!(!run.exists(), "nothing written");
}

/// `sections()` in three classes: membrane 0, cell 1, and dark blobs inside cells 2 (also
/// darker in the image); a band of each section's first rows is ignored ([`IGNORED`]).
fn three_class_sections() -> (ChannelStack, Stack<u8>) {
    let (mut images, labels) = grey_sections();
    let mut classes = labels.map(|v| u8::from(v > 0));
    for p in 0..3 {
        let (img, lab) = (images.page_mut(p), classes.page_mut(p));
        for y in 0..N {
            for x in 0..N {
                let i = y * N + x;
                let blob = (x + 5 * p) % 13 >= 5
                    && (x + 5 * p) % 13 <= 8
                    && (y + p) % 11 >= 4
                    && (y + p) % 11 <= 7;
                if lab[i] == 1 && blob {
                    lab[i] = 2;
                    img[i] = 110 + (img[i] % 23);
                }
                if y < 3 {
                    lab[i] = IGNORED;
                }
            }
        }
    }
    (images.into(), classes)
}

#[test]
fn three_classes_train_with_an_ignored_band_and_per_class_scores() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("runs/k3");
    let (images, labels) = three_class_sections();
    let mut cfg = tiny(&run, 2);
    cfg.labels = LabelClasses::Indexed {
        classes: 3,
        ignore: true,
    };
    cfg.model.n_classes = 3;
    let outcome = train_quietly(&cfg, &images, &labels);
    assert_eq!(outcome.epochs_done, 2);
    let log = read_log(&run);
    let mut best = (f64::NEG_INFINITY, 0);
    for r in &log {
        let v = r.validation.as_ref().unwrap();
        let c = v.classes.as_ref().expect("per-class scores");
        assert_eq!(c.iou_per_class.len(), 3);
        assert_eq!(c.dice_per_class.len(), 3);
        assert!(v.loss.is_finite() && r.train_loss.is_finite());
        // `mean_iou` is the mean over the foreground classes, and `best` follows it.
        assert_eq!(v.mean_iou, (c.iou_per_class[1] + c.iou_per_class[2]) / 2.0);
        if v.mean_iou > best.0 {
            best = (v.mean_iou, r.epoch);
        }
    }
    assert_eq!(outcome.best.map(|b| b.1), Some(best.1));
    let meta = read_checkpoint_meta(run.join(files::BEST)).unwrap();
    assert_eq!(meta.config.n_classes, 3);

    // A label that is no class, and a model of another class count, are refused.
    let mut bad = labels.clone();
    bad.page_mut(1)[N * 10 + 4] = 7;
    let mut cfg2 = cfg.clone();
    cfg2.run_dir = dir.path().join("runs/bad");
    let err = failed_run(&cfg2, &images, &bad);
    assert!(err.contains("label page 1 holds 7"), "{err}");
    cfg2.model.n_classes = 2;
    let err = failed_run(&cfg2, &images, &labels);
    assert!(err.contains("3 classes but the model has 2"), "{err}");
    cfg2.model.n_classes = 3;
    cfg2.loss = Loss::CrossEntropyDice;
    let err = failed_run(&cfg2, &images, &labels);
    assert!(err.contains("ignored pixels"), "{err}");
}

/// The losses of `tiny` on `sections()` as bits: train loss, validation loss, validation mean
/// IoU of each epoch.
fn loss_bits(run: &Path) -> Vec<(u64, u64, u64)> {
    read_log(run)
        .iter()
        .map(|r| {
            let v = r.validation.as_ref().unwrap();
            (
                r.train_loss.to_bits(),
                v.loss.to_bits(),
                v.mean_iou.to_bits(),
            )
        })
        .collect()
}

/// The binary recipe through the class-label code: the losses of `tiny` on `sections()`, to the
/// last bit, as the code before class labels gave them (recorded with it at 42b4217's
/// successor 8fd76b2: train loss, validation loss, validation mean IoU of 2 epochs), on the
/// AVX2 gemm kernels and the im2col convolutions they were recorded with.
#[test]
fn binary_labels_train_to_the_same_losses_as_before_class_labels() {
    if !GemmPath::Avx2.available() {
        eprintln!("skipped: the golden losses were recorded on AVX2 kernels, which this CPU lacks");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("runs/golden");
    let (images, labels) = sections();
    with_kernel_paths(KernelPaths::all(GemmPath::Avx2), || {
        with_conv_algorithm(Some(ConvAlgorithm::Im2col), || {
            train_quietly(&tiny(&run, 2), &images, &labels)
        })
    });
    assert_eq!(loss_bits(&run), GOLDEN_BITS);
}

/// Every gemm path this CPU has (each forced once), the rule's choice where it mixes paths, and
/// Winograd convolutions (forced on the rule's paths: `tiny` is below Winograd's channel rule)
/// train `tiny` to the golden losses within float tolerance: each sums in its own order, so
/// only the bits differ.
#[test]
fn every_cpu_kernel_path_trains_to_the_golden_losses() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = sections();
    let rule = KernelPaths::rule_for(cpu_info());
    let mut runs: Vec<(String, KernelPaths, Option<ConvAlgorithm>)> = GemmPath::ALL
        .into_iter()
        .filter(|path| path.available())
        .map(|path| (path.to_string(), KernelPaths::all(path), None))
        .collect();
    if !runs.iter().any(|(_, paths, _)| *paths == rule) {
        runs.push((format!("rule ({rule})"), rule, None));
    }
    runs.push((
        format!("rule ({rule}), winograd"),
        rule,
        Some(ConvAlgorithm::Winograd),
    ));
    for (name, paths, algorithm) in runs {
        let run = dir.path().join("runs").join(name.replace([' ', ','], "_"));
        with_kernel_paths(paths, || {
            with_conv_algorithm(algorithm, || {
                train_quietly(&tiny(&run, 2), &images, &labels)
            })
        });
        if algorithm == Some(ConvAlgorithm::Winograd) {
            // The forced algorithm reached the kernels: its rounding is not im2col's.
            assert_ne!(loss_bits(&run), GOLDEN_BITS, "{name}");
        }
        for (epoch, (got, want)) in loss_bits(&run).iter().zip(&GOLDEN_BITS).enumerate() {
            // Losses within 0.1%; the IoU of thresholded maps moves more (a few pixels flip).
            let checks = [
                ("train loss", got.0, want.0, 1e-3),
                ("validation loss", got.1, want.1, 1e-3),
                ("mean IoU", got.2, want.2, 1e-2),
            ];
            for (what, g, w, tolerance) in checks {
                let (g, w) = (f64::from_bits(g), f64::from_bits(w));
                assert!(
                    (g - w).abs() <= tolerance * w.abs(),
                    "{name}, epoch {epoch}: {what} {g} against the golden {w}"
                );
            }
        }
    }
}
const GOLDEN_BITS: [(u64, u64, u64); 2] = [
    (
        4605060163253043200,
        4604197554505121792,
        4603696091939746540,
    ),
    (
        4604185256671576064,
        4603751291833810944,
        4604396026432607738,
    ),
];
