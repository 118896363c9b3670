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
        "--input-tile",
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

/// `unet train` on the own pair (`em.tif`, `em-masks.tif`) for `epochs` epochs into runs/r.
fn own_run_args(epochs: &str) -> Vec<&str> {
    let mut args = vec!["train", "--images", "em.tif", "--labels", "em-masks.tif"];
    args.extend_from_slice(&[
        "--epochs",
        epochs,
        "--input-tile",
        "32",
        "--crops-per-section",
        "2",
        "--batch-size",
        "1",
        "--train-fraction",
        "0.6",
        "--run-dir",
        "runs/r",
        "--quiet",
    ]);
    args
}

/// Lines in `runs/r/log.jsonl` (epochs logged) in `dir`.
fn epochs_logged(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs/r/log.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Starts `unet args` in `dir` and waits until it has logged `epochs` epochs.
fn spawn_until_logged(args: &[&str], dir: &Path, epochs: usize) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_unet"))
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while epochs_logged(dir) < epochs {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the training ended ({status}) before logging {epochs} epochs");
        }
        assert!(
            start.elapsed().as_secs() < 300,
            "no epoch logged in 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child
}

/// The train losses of `runs/r/log.jsonl` (the timings differ from run to run).
fn train_losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runs/r/log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["train_loss"].to_string()
        })
        .collect()
}

#[test]
fn a_killed_own_stacks_run_resumes_by_its_path_alone_and_ends_as_an_uninterrupted_one() {
    let whole = tempfile::tempdir().unwrap();
    write_own_sections(whole.path());
    // Ten epochs: time enough to kill the second run after its first.
    stdout_of(&unet(&own_run_args("10"), whole.path()));
    let text = stdout_of(&unet(&["info", "--run", "runs/r"], whole.path()));
    assert!(text.contains("state: finished, 10 of 10 epochs"), "{text}");
    assert!(
        text.contains("em.tif") && text.contains("SHA-256"),
        "{text}"
    );

    let killed = tempfile::tempdir().unwrap();
    let d = killed.path();
    write_own_sections(d);
    let mut child = spawn_until_logged(&own_run_args("10"), d, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = epochs_logged(d);
    assert!((1..10).contains(&logged), "killed after {logged} epochs");
    // The lock of the killed process is left behind, and seen to be stale.
    assert!(d.join("runs/r/train.lock").exists());
    let text = stdout_of(&unet(&["info", "--run", "runs"], d));
    assert!(text.contains("state: interrupted after"), "{text}");
    assert!(text.contains("unet train --resume runs/r"), "{text}");

    // No data flag: the run's own record finds the stacks.
    let text = stdout_of(&unet(&["train", "--resume", "runs/r", "--quiet"], d));
    assert!(text.contains("done: 10 epochs"), "{text}");
    for file in ["last.safetensors", "best.safetensors"] {
        assert_eq!(
            std::fs::read(d.join("runs/r").join(file)).unwrap(),
            std::fs::read(whole.path().join("runs/r").join(file)).unwrap(),
            "{file} differs from the uninterrupted run's"
        );
    }
    assert_eq!(train_losses(d), train_losses(whole.path()));
    assert!(
        !d.join("runs/r/train.lock").exists(),
        "the lock is released"
    );

    // Evaluation by the run's path alone, too; then the stacks move away.
    let text = stdout_of(&unet(&["evaluate", "--run", "runs/r"], d));
    assert!(text.contains("pixel accuracy"), "{text}");
    std::fs::rename(d.join("em.tif"), d.join("moved.tif")).unwrap();
    let out = unet(&["evaluate", "--run", "runs/r"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let recorded = std::path::absolute(d.join("em.tif")).unwrap();
    assert!(
        err.contains(&recorded.display().to_string())
            && err.contains("SHA-256")
            && err.contains("--images STACK --labels STACK"),
        "{err}"
    );
    let moved = ["--images", "moved.tif", "--labels", "em-masks.tif"];
    let text = stdout_of(&unet(
        &[&["evaluate", "--run", "runs/r"][..], &moved].concat(),
        d,
    ));
    assert!(text.contains("pixel accuracy"), "{text}");
    // Other pixels under the recorded name are refused too: one pixel changed.
    let mut pixels = unet_data::read_u8_stack(d.join("moved.tif"))
        .unwrap()
        .into_vec();
    pixels[0] ^= 1;
    write_stack(d.join("em.tif"), &Stack::new(3, 64, 64, pixels).unwrap()).unwrap();
    let out = unet(&["evaluate", "--run", "runs/r"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has changed"), "{err}");
}

#[test]
fn a_run_in_progress_is_shown_and_a_second_training_there_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_own_sections(d);
    let mut child = spawn_until_logged(&own_run_args("500"), d, 1);
    let pid = child.id();
    let text = stdout_of(&unet(&["info", "--run", "runs/r"], d));
    let second = unet(&["train", "--resume", "runs/r", "--quiet"], d);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        text.contains(&format!("state: training now (process {pid})")),
        "{text}"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        err.contains(&format!("process {pid} trains there")),
        "{err}"
    );
}

#[test]
fn negative_numbers_reach_the_settings_own_checks() {
    let dir = tempfile::tempdir().unwrap();
    write_own_sections(dir.path());
    let mut args = own_run_args("1");
    args.extend_from_slice(&["--lr", "-1"]);
    let out = unet(&args, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("learning rate -1 must be"), "{err}");
    assert!(!dir.path().join("runs/r").exists(), "nothing is written");
}
