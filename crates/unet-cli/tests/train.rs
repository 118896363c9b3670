//! `unet train` and `unet evaluate` end to end on three tiny synthetic sections, with the
//! output going to a pipe (as in a log file), not a terminal.

use std::path::Path;
use std::process::{Command, Output};

use unet_data::{write_stack, Stack};

fn unet(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unet"))
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .args(args)
        .output()
        .unwrap()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three 64x64 sections of cells between membrane lines, dark membranes on bright cells.
fn write_data(dir: &Path) {
    let n = 64;
    let (mut img, mut lab) = (Vec::new(), Vec::new());
    for p in 0..3 {
        for y in 0..n {
            for x in 0..n {
                let membrane = (x + 3 * p) % 13 < 2 || (y + 2 * p) % 11 == 0;
                let texture = ((x * 31 + y * 17 + p * 7) % 23) as u8;
                img.push(if membrane {
                    40 + texture
                } else {
                    170 + texture
                });
                lab.push(if membrane { 0u8 } else { 255 });
            }
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    write_stack(
        dir.join("train-volume.tif"),
        &Stack::new(3, n, n, img).unwrap(),
    )
    .unwrap();
    write_stack(
        dir.join("train-labels.tif"),
        &Stack::new(3, n, n, lab).unwrap(),
    )
    .unwrap();
}

#[test]
fn quiet_training_prints_its_epochs_to_a_pipe_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    write_data(&dir.path().join("data"));
    let args = [
        "train",
        "--data",
        "data",
        "--epochs",
        "1",
        "--tile-size",
        "32",
        "--crops-per-section",
        "1",
        "--batch-size",
        "2",
        "--train-fraction",
        "0.6",
        "--run-dir",
        "runs/t",
        "--quiet",
    ];
    let text = stdout_of(&unet(&args, dir.path()));
    assert!(
        text.contains("2 training / 1 validation sections"),
        "{text}"
    );
    assert!(text.contains("epoch   1  train loss"), "{text}");
    assert!(text.contains("done: 1 epochs"), "{text}");
    assert!(text.contains("calibrated on 2 training sections"), "{text}");
    let text = stdout_of(&unet(
        &["evaluate", "--run", "runs/t", "--data", "data"],
        dir.path(),
    ));
    assert!(
        text.contains("pixel accuracy") && text.contains("logit offset"),
        "{text}"
    );
    assert!(dir.path().join("runs/t/scores.json").is_file());
}
