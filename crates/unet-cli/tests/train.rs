//! `unet train` and `unet evaluate` end to end on three tiny synthetic sections, with the
//! output going to a pipe (as in a log file), not a terminal; the sections as the ISBI directory
//! and as a user's own pair of stacks.

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

/// Three 64x64 sections of cells between membrane lines, dark membranes on bright cells, written
/// as the stacks `images` and `labels`.
fn write_sections(images: &Path, labels: &Path, pages: usize) {
    let n = 64;
    let (mut img, mut lab) = (Vec::new(), Vec::new());
    for p in 0..pages {
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
    write_stack(images, &Stack::new(pages, n, n, img).unwrap()).unwrap();
    write_stack(labels, &Stack::new(pages, n, n, lab).unwrap()).unwrap();
}

/// The three sections as an ISBI data directory.
fn write_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    write_sections(
        &dir.join("train-volume.tif"),
        &dir.join("train-labels.tif"),
        3,
    );
}

/// The three sections as a user's own pair, `em.tif` and `em-masks.tif` in `dir`.
fn write_own_sections(dir: &Path) {
    write_sections(&dir.join("em.tif"), &dir.join("em-masks.tif"), 3);
}

/// `unet train` for one quick epoch into runs/t, the data named by `data_flags`.
fn train_args<'a>(data_flags: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train"];
    args.extend_from_slice(data_flags);
    args.extend_from_slice(&[
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
    ]);
    args
}

#[test]
fn quiet_training_prints_its_epochs_to_a_pipe_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    write_data(&dir.path().join("data"));
    let text = stdout_of(&unet(&train_args(&["--data", "data"]), dir.path()));
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

#[test]
fn own_stacks_under_any_names_summarise_train_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    write_own_sections(dir.path());
    let own = ["--images", "em.tif", "--labels", "em-masks.tif"];

    let mut info = vec!["info", "--train-fraction", "0.6"];
    info.extend_from_slice(&own);
    let text = stdout_of(&unet(&info, dir.path()));
    assert!(text.contains("3 pages of 64x64"), "{text}");

    let text = stdout_of(&unet(&train_args(&own), dir.path()));
    assert!(
        text.contains("2 training / 1 validation sections"),
        "{text}"
    );
    assert!(text.contains("done: 1 epochs"), "{text}");

    let mut evaluate = vec!["evaluate", "--run", "runs/t"];
    evaluate.extend_from_slice(&own);
    let text = stdout_of(&unet(&evaluate, dir.path()));
    assert!(text.contains("pixel accuracy"), "{text}");
}

#[test]
fn own_stacks_that_do_not_pair_up_are_refused_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    write_own_sections(dir.path());
    write_sections(
        &dir.path().join("two.tif"),
        &dir.path().join("two-masks.tif"),
        2,
    );
    let stderr_of = |args: &[&str]| {
        let out = unet(args, dir.path());
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let err = stderr_of(&train_args(&[
        "--images",
        "em.tif",
        "--labels",
        "two-masks.tif",
    ]));
    assert!(
        err.contains("em.tif") && err.contains("two-masks.tif"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let err = stderr_of(&train_args(&["--images", "em.tif"]));
    assert!(err.contains("--labels"), "{err}");
    let err = stderr_of(&train_args(&[
        "--data",
        ".",
        "--images",
        "em.tif",
        "--labels",
        "em-masks.tif",
    ]));
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!dir.path().join("runs/t").exists());
}
