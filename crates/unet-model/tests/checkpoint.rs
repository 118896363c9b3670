//! Checkpoints: save -> load -> identical outputs, optimizer resume, and clear refusals.

use candle_core::{DType, Device, Tensor};
use unet_model::{
    load_checkpoint, load_model, load_model_from_bytes, load_optimizer_state, read_checkpoint_meta,
    save_checkpoint, Adam, AdamParams, Error, Loss, Normalisation, Optimizer, Sgd, SgdParams, UNet,
    UNetConfig,
};

fn config() -> UNetConfig {
    UNetConfig {
        depth: 3,
        base_width: 4,
        ..UNetConfig::small()
    }
}

fn build(cfg: &UNetConfig, seed: u64) -> UNet {
    UNet::seeded(cfg, seed, &Device::Cpu).unwrap()
}

fn input() -> Tensor {
    let values: Vec<f32> = (0..2 * 16 * 16)
        .map(|i| ((i as f32) * 0.21).sin())
        .collect();
    Tensor::from_vec(values, (2, 1, 16, 16), &Device::Cpu).unwrap()
}

fn one_step(model: &UNet, opt: &mut dyn Optimizer) {
    let x = input();
    let y = x
        .ge(0.0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let logits = model.forward_t(&x, true).unwrap();
    let grads = Loss::CrossEntropy
        .compute(&logits, &y, None)
        .unwrap()
        .backward()
        .unwrap();
    opt.step(&grads).unwrap();
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn save_load_forward_is_identical_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch-001.safetensors");
    let cfg = config();
    let model = build(&cfg, 3);
    let mut opt = Adam::new(model.parameters(), AdamParams::default()).unwrap();
    one_step(&model, &mut opt); // moves weights and running statistics
    let metrics = serde_json::json!({ "loss": 0.5, "iou": [0.7, 0.8] });
    let normalisation = Normalisation::dataset(0.49, 0.17).unwrap();
    save_checkpoint(
        &path,
        &model,
        1,
        Some(normalisation.clone()),
        metrics.clone(),
        Some(&opt),
    )
    .unwrap();
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    let meta = read_checkpoint_meta(&path).unwrap();
    assert_eq!(meta.config, cfg);
    let restored = build(&meta.config, 99);
    let loaded = load_checkpoint(&path, &restored).unwrap();
    assert_eq!(loaded.epoch, 1);
    assert_eq!(loaded.metrics, metrics);
    assert_eq!(loaded.normalisation, Some(normalisation));
    let x = input();
    assert_eq!(
        flat(&model.forward_t(&x, false).unwrap()),
        flat(&restored.forward_t(&x, false).unwrap())
    );
    // The same checkpoint from memory (as the built-in model loads) and by path alone.
    let sidecar = std::fs::read(path.with_extension("json")).unwrap();
    let weights = std::fs::read(&path).unwrap();
    let (in_memory, meta) =
        load_model_from_bytes("in-memory", &sidecar, &weights, &Device::Cpu).unwrap();
    assert_eq!(meta, loaded);
    let (by_path, _) = load_model(&path, &Device::Cpu).unwrap();
    for net in [&in_memory, &by_path] {
        assert_eq!(
            flat(&model.forward_t(&x, false).unwrap()),
            flat(&net.forward_t(&x, false).unwrap())
        );
    }
    let err = load_model_from_bytes("in-memory", &sidecar, &weights[1..], &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in-memory") && err.contains("truncated"),
        "{err}"
    );

    // Resuming the optimizer gives the same next step as continuing.
    let mut resumed = Adam::new(restored.parameters(), AdamParams::default()).unwrap();
    assert!(load_optimizer_state(&path, &mut resumed).unwrap());
    assert_eq!(resumed.steps(), 1);
    one_step(&model, &mut opt);
    one_step(&restored, &mut resumed);
    assert_eq!(
        flat(&model.forward_t(&x, false).unwrap()),
        flat(&restored.forward_t(&x, false).unwrap())
    );
    // An SGD cannot take Adam's state.
    let mut sgd = Sgd::new(restored.parameters(), SgdParams::default()).unwrap();
    let err = load_optimizer_state(&path, &mut sgd).unwrap_err();
    assert!(err.to_string().contains("adam"), "{err}");
}

#[test]
fn a_checkpoint_whose_optimizer_state_cannot_be_written_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    let model = build(&config(), 2);
    let mut opt = Adam::new(model.parameters(), AdamParams::default()).unwrap();
    save_checkpoint(&path, &model, 1, None, serde_json::json!({}), Some(&opt)).unwrap();
    let before = std::fs::read(&path).unwrap();
    one_step(&model, &mut opt);
    // The optimizer file's temporary cannot be created, as when the disk fills up or a
    // file-size limit is reached while writing it.
    let optim = dir.path().join("last.optim.safetensors");
    std::fs::create_dir(unet_data::temp_path_for(&optim)).unwrap();
    let err = save_checkpoint(&path, &model, 2, None, serde_json::json!({}), Some(&opt))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the previous checkpoint is kept"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the weights were not replaced"
    );
    let restored = build(&config(), 9);
    assert_eq!(load_checkpoint(&path, &restored).unwrap().epoch, 1);
    let mut resumed = Adam::new(restored.parameters(), AdamParams::default()).unwrap();
    assert!(load_optimizer_state(&path, &mut resumed).unwrap());
}

#[test]
fn the_weights_file_is_what_candle_itself_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let model = build(&config(), 4);
    let path = dir.path().join("m.safetensors");
    save_checkpoint(&path, &model, 1, None, serde_json::json!({}), None).unwrap();
    let by_candle = dir.path().join("candle.safetensors");
    candle_core::safetensors::save(&model.state(), &by_candle).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&by_candle).unwrap()
    );
}

#[test]
fn a_save_killed_between_its_renames_is_completed_on_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let model = build(&config(), 2);
    let mut opt = Adam::new(model.parameters(), AdamParams::default()).unwrap();
    let last = dir.path().join("last.safetensors");
    save_checkpoint(&last, &model, 1, None, serde_json::json!({}), Some(&opt)).unwrap();
    one_step(&model, &mut opt);
    let newer = other.path().join("last.safetensors");
    save_checkpoint(&newer, &model, 2, None, serde_json::json!({}), Some(&opt)).unwrap();
    // The newer save, killed after renaming its weights: the optimizer state and the sidecar
    // still wait as temporaries of a process (an id above Linux's largest) that is gone.
    let dead = 4_194_305;
    let copy = |name: &str, to: &str| {
        std::fs::copy(other.path().join(name), dir.path().join(to)).unwrap();
    };
    copy("last.safetensors", "last.safetensors");
    copy(
        "last.optim.safetensors",
        &format!(".last.optim.safetensors.{dead}.tmp"),
    );
    copy("last.json", &format!(".last.json.{dead}.tmp"));
    let restored = build(&config(), 9);
    let meta = load_checkpoint(&last, &restored).unwrap();
    assert_eq!(meta.epoch, 2, "the newer save is completed");
    let mut resumed = Adam::new(restored.parameters(), AdamParams::default()).unwrap();
    assert!(load_optimizer_state(&last, &mut resumed).unwrap());
    for name in ["last.safetensors", "last.optim.safetensors", "last.json"] {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            std::fs::read(other.path().join(name)).unwrap(),
            "{name}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 3, "no temporary is left");
}

#[test]
fn a_sidecar_of_before_the_typed_normalisation_still_gives_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    let legacy = serde_json::json!({ "normalisation": { "mean": 0.5, "std": 0.2 } });
    save_checkpoint(&path, &build(&config(), 1), 3, None, legacy, None).unwrap();
    let meta = read_checkpoint_meta(&path).unwrap();
    assert_eq!(
        meta.normalisation,
        Some(Normalisation::Dataset {
            mean: 0.5,
            std: 0.2
        })
    );
    // Statistics that cannot normalise are named as the sidecar's fault.
    let broken = serde_json::json!({ "normalisation": { "mean": 0.5, "std": 0.0 } });
    save_checkpoint(&path, &build(&config(), 1), 3, None, broken, None).unwrap();
    let err = read_checkpoint_meta(&path).unwrap_err().to_string();
    assert!(
        err.contains("old.json") && err.contains("normalisation"),
        "{err}"
    );
}

#[test]
fn another_config_is_refused_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save_checkpoint(
        &path,
        &build(&config(), 1),
        0,
        None,
        serde_json::Value::Null,
        None,
    )
    .unwrap();
    let other = UNetConfig {
        base_width: 8,
        n_classes: 3,
        ..config()
    };
    let err = load_checkpoint(&path, &build(&other, 1)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::ConfigMismatch { ref differences, .. } if differences.len() == 2),
        "{msg}"
    );
    assert!(msg.contains("base_width: 4 vs 8"), "{msg}");
    assert!(msg.contains("n_classes: 2 vs 3"), "{msg}");
}

#[test]
fn damaged_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let model = build(&config(), 1);
    save_checkpoint(&path, &model, 0, None, serde_json::Value::Null, None).unwrap();
    let good = std::fs::read(&path).unwrap();

    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let err = load_checkpoint(&path, &model).unwrap_err().to_string();
    assert!(
        err.contains("truncated") && err.contains("model.safetensors"),
        "{err}"
    );

    let mut flipped = good.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let err = load_checkpoint(&path, &model).unwrap_err().to_string();
    assert!(err.contains("corrupted"), "{err}");

    std::fs::write(&path, &good).unwrap();
    load_checkpoint(&path, &model).unwrap();

    let sidecar = dir.path().join("model.json");
    let text = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(&sidecar, &text[..text.len() / 2]).unwrap();
    let err = load_checkpoint(&path, &model).unwrap_err().to_string();
    assert!(
        err.contains("model.json") && err.contains("not a valid checkpoint"),
        "{err}"
    );

    let err = load_checkpoint(dir.path().join("missing.safetensors"), &model).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.json"), "{err}");
}

#[test]
fn bad_input_sizes_and_shapes_are_clear_errors() {
    let cfg = UNetConfig {
        padding: unet_model::Padding::Valid,
        ..config()
    };
    let model = build(&cfg, 1);
    let x = Tensor::zeros((1, 1, 48, 50), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward_t(&x, false).unwrap_err();
    assert!(matches!(err, Error::InputSize(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("input width 50"), "{msg}");
    assert!(msg.contains("48 (output 8) and 52 (output 12)"), "{msg}");
    let x = Tensor::zeros((1, 2, 48, 48), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.forward_t(&x, false),
        Err(Error::InputShape { .. })
    ));
    let x = Tensor::zeros((1, 1, 48, 48), DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(
        model.forward_t(&x, false),
        Err(Error::InputShape { .. })
    ));
    assert_eq!(
        model
            .forward_t(
                &Tensor::zeros((1, 1, 48, 52), DType::F32, &Device::Cpu).unwrap(),
                false
            )
            .unwrap()
            .dims(),
        &[1, 2, 8, 12]
    );
}

#[test]
fn a_pair_copied_under_another_name_loads() {
    let dir = tempfile::tempdir().unwrap();
    let model = build(&config(), 5);
    let mut opt = Adam::new(model.parameters(), AdamParams::default()).unwrap();
    one_step(&model, &mut opt);
    save_checkpoint(
        dir.path().join("best.safetensors"),
        &model,
        1,
        None,
        serde_json::json!({}),
        Some(&opt),
    )
    .unwrap();
    for (from, to) in [
        ("best.safetensors", "default.safetensors"),
        ("best.json", "default.json"),
        ("best.optim.safetensors", "default.optim.safetensors"),
    ] {
        std::fs::copy(dir.path().join(from), dir.path().join(to)).unwrap();
    }
    std::fs::remove_file(dir.path().join("best.safetensors")).unwrap();
    let copy = build(&config(), 9);
    load_checkpoint(dir.path().join("default.safetensors"), &copy).unwrap();
    assert_eq!(
        flat(&copy.forward(&input()).unwrap()),
        flat(&model.forward(&input()).unwrap())
    );
    let mut fresh = Adam::new(copy.parameters(), AdamParams::default()).unwrap();
    assert!(load_optimizer_state(dir.path().join("default.safetensors"), &mut fresh).unwrap());
}
