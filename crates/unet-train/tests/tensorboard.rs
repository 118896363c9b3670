//! Event files written by PyTorch's `SummaryWriter` (fixture from
//! `scripts/make_tensorboard_fixture.py`) read back with `read_scalars`.

use unet_train::tensorboard::read_scalars;

#[test]
fn reads_the_scalars_pytorch_wrote() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tensorboard");
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let scalars = read_scalars(&files[0]).unwrap();
    let got: Vec<(&str, i64, f32)> = scalars
        .iter()
        .map(|s| (s.tag.as_str(), s.step, s.value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("train/loss", 1, 0.5797),
            ("train/loss", 2, 0.3885),
            ("val/mean_iou", 1, 0.5056),
            ("val/mean_iou", 2, 0.7627),
            ("lr", 2, 0.0009766),
        ]
    );
    assert!(scalars.iter().all(|s| s.wall_time > 1.7e9));
}
