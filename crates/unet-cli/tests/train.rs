//! `unet train` and `unet evaluate` end to end on three tiny synthetic sections, with the
//! output going to a pipe (as in a log file), not a terminal; the sections as the ISBI directory
//! and as a user's own pair of stacks.

mod common;

use common::{ok_stdout, unet};

use std::path::Path;
use std::process::Command;

use unet_data::{write_stack, Stack};

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
    let text = ok_stdout(&unet(&train_args(&["--data", "data"]), dir.path()));
    assert!(
        text.contains("2 training / 1 validation sections"),
        "{text}"
    );
    // The start line names what the run computes on: the CPU, its kernels and convolutions.
    assert!(
        text.contains(", on the CPU (") && text.contains(" kernels, Winograd from 32 channels"),
        "{text}"
    );
    assert!(text.contains("epoch   1  train loss"), "{text}");
    assert!(text.contains("done: 1 epochs"), "{text}");
    assert!(text.contains("calibrated on 2 training sections"), "{text}");
    let text = ok_stdout(&unet(
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
    let text = ok_stdout(&unet(&info, dir.path()));
    assert!(text.contains("3 sections of 64x64"), "{text}");

    let text = ok_stdout(&unet(&train_args(&own), dir.path()));
    assert!(
        text.contains("2 training / 1 validation sections"),
        "{text}"
    );
    assert!(text.contains("done: 1 epochs"), "{text}");

    let mut evaluate = vec!["evaluate", "--run", "runs/t"];
    evaluate.extend_from_slice(&own);
    let text = ok_stdout(&unet(&evaluate, dir.path()));
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

/// A directory with the own pair and a run of `epochs` epochs in runs/r killed (SIGKILL) once
/// it has logged its first epoch.
fn own_run_killed_after_one_epoch(epochs: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_own_sections(dir.path());
    let mut child = spawn_until_logged(&own_run_args(epochs), dir.path(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    dir
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
    ok_stdout(&unet(&own_run_args("10"), whole.path()));
    let text = ok_stdout(&unet(&["info", "--run", "runs/r"], whole.path()));
    assert!(text.contains("state: finished, 10 of 10 epochs"), "{text}");
    assert!(
        text.contains("em.tif") && text.contains("SHA-256"),
        "{text}"
    );

    let killed = own_run_killed_after_one_epoch("10");
    let d = killed.path();
    let logged = epochs_logged(d);
    assert!((1..10).contains(&logged), "killed after {logged} epochs");
    // The lock of the killed process is left behind, and seen to be stale.
    assert!(d.join("runs/r/train.lock").exists());
    let text = ok_stdout(&unet(&["info", "--run", "runs"], d));
    assert!(text.contains("state: interrupted after"), "{text}");
    assert!(text.contains("unet train --resume runs/r"), "{text}");

    // No data flag: the run's own record finds the stacks.
    let text = ok_stdout(&unet(&["train", "--resume", "runs/r", "--quiet"], d));
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
    let text = ok_stdout(&unet(&["evaluate", "--run", "runs/r"], d));
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
    let text = ok_stdout(&unet(
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
    let text = ok_stdout(&unet(&["info", "--run", "runs/r"], d));
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

/// The records of `runs/r/log.jsonl` without their timings (which differ between runs).
fn log_without_timings(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("runs/r/log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let map = v.as_object_mut().unwrap();
            for timing in ["train_seconds", "validation_seconds", "samples_per_second"] {
                map.remove(timing);
            }
            v
        })
        .collect()
}

/// A checkpoint sidecar without the wall times its metrics record.
fn sidecar_without_timings(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let metrics = v["metrics"].as_object_mut().unwrap();
    if let Some(record) = metrics.get_mut("record").and_then(|r| r.as_object_mut()) {
        for timing in ["train_seconds", "validation_seconds", "samples_per_second"] {
            record.remove(timing);
        }
    }
    if let Some(state) = metrics.get_mut("state").and_then(|s| s.as_object_mut()) {
        state.remove("partial_seconds");
    }
    v
}

/// Every checkpoint in `runs/r` loads (`unet model --checkpoint`).
fn every_checkpoint_loads(dir: &Path) {
    for name in ["last", "best"] {
        let weights = dir.join(format!("runs/r/{name}.safetensors"));
        if weights.exists() {
            let path = weights.display().to_string();
            ok_stdout(&unet(&["model", "--checkpoint", &path], dir));
        }
    }
}

#[test]
fn twenty_kills_at_random_moments_lose_nothing() {
    let epochs = "30";
    let whole = tempfile::tempdir().unwrap();
    write_own_sections(whole.path());
    ok_stdout(&unet(&own_run_args(epochs), whole.path()));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_own_sections(d);
    // A seeded linear congruential stream of kill delays, 20 to 400 ms after each start.
    let mut state = 2015u64;
    let mut kills = 0;
    for round in 0..20 {
        let args: Vec<&str> = match round {
            0 => own_run_args(epochs),
            _ => vec!["train", "--resume", "runs/r", "--quiet"],
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_unet"))
            .current_dir(d)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 20 + (state >> 33) % 380;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            break; // finished before this kill
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        every_checkpoint_loads(d);
        // A kill before the first checkpoint leaves no `last` to resume: start again.
        if !d.join("runs/r/last.safetensors").exists() {
            std::fs::remove_dir_all(d.join("runs")).unwrap();
            let mut child = spawn_until_logged(&own_run_args(epochs), d, 1);
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    assert!(
        kills >= 10,
        "only {kills} kills landed before the run ended"
    );
    println!("{kills} kills landed; every checkpoint loaded after each");
    let out = unet(&["train", "--resume", "runs/r", "--quiet"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    // The last kill may have come after the last epoch was saved.
    assert!(
        out.status.success() || err.contains("all 30 epochs are done"),
        "{text}{err}"
    );
    every_checkpoint_loads(d);
    for file in [
        "last.safetensors",
        "last.optim.safetensors",
        "best.safetensors",
    ] {
        assert!(
            std::fs::read(d.join("runs/r").join(file)).unwrap()
                == std::fs::read(whole.path().join("runs/r").join(file)).unwrap(),
            "{file} differs from the uninterrupted run's after {kills} kills"
        );
    }
    // The sidecars too, but for the wall times they record.
    for file in ["last.json", "best.json"] {
        assert_eq!(
            sidecar_without_timings(&d.join("runs/r").join(file)),
            sidecar_without_timings(&whole.path().join("runs/r").join(file)),
            "{file} after {kills} kills"
        );
    }
    assert_eq!(log_without_timings(d), log_without_timings(whole.path()));
}

#[test]
fn ctrl_c_mid_epoch_saves_last_and_the_run_resumes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_own_sections(d);
    let mut args = own_run_args("3");
    args.extend_from_slice(&["--log-interval", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_unet"))
        .current_dir(d)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first_step = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("step    1"));
    assert!(first_step.is_some(), "no step line");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let text = rest.join("\n");
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("`last` saved"), "{text}");
    assert!(
        text.contains("continue with: unet train --resume runs/r"),
        "{text}"
    );
    let text = ok_stdout(&unet(&["train", "--resume", "runs/r", "--quiet"], d));
    assert!(text.contains("done: 3 epochs"), "{text}");
}

#[test]
fn a_full_disk_while_saving_keeps_the_previous_checkpoints() {
    let dir = own_run_killed_after_one_epoch("4");
    let d = dir.path();
    let before = std::fs::read(d.join("runs/r/last.safetensors")).unwrap();
    // Files of at most 64 blocks (32-64 KB): the run's small files fit, a checkpoint does not.
    let out = Command::new("sh")
        .current_dir(d)
        .args(["-c", "ulimit -f 64 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_unet"))
        .args(["train", "--resume", "runs/r", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the previous checkpoint is kept") && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.join("runs/r/last.safetensors")).unwrap(),
        before
    );
    every_checkpoint_loads(d);
    let text = ok_stdout(&unet(&["train", "--resume", "runs/r", "--quiet"], d));
    assert!(text.contains("done: 4 epochs"), "{text}");
}

#[test]
fn nonsense_settings_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_own_sections(d);
    let cases: [(&[&str], &str); 6] = [
        (&["--epochs", "0"], "must be positive"),
        (&["--batch-size", "0"], "must be positive"),
        (&["--lr", "nan"], "learning rate NaN must be"),
        (&["--input-tile", "8"], "input tile 8"),
        (
            &["--input-tile", "256"],
            "does not fit in the 64x64 sections",
        ),
        (&["--crops-per-section", "0"], "must be positive"),
    ];
    for (flags, message) in cases {
        // The flag's value in place of the helper's.
        let mut args = own_run_args("2");
        match args.iter().position(|a| *a == flags[0]) {
            Some(i) => args[i + 1] = flags[1],
            None => args.extend_from_slice(flags),
        }
        let out = unet(&args, d);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(err.contains(message), "{flags:?}: {err}");
        assert!(!d.join("runs/r").exists(), "{flags:?} left a run directory");
    }
    // A misspelt key in a configuration file (a run's own config.json, one key changed).
    ok_stdout(&unet(&own_run_args("1"), d));
    let saved = std::fs::read_to_string(d.join("runs/r/config.json")).unwrap();
    std::fs::write(d.join("bad.json"), saved.replace("\"epochs\"", "\"epoch\"")).unwrap();
    let own = ["--images", "em.tif", "--labels", "em-masks.tif"];
    let args = [
        &["train", "--config", "bad.json", "--run-dir", "runs/y"][..],
        &own,
    ]
    .concat();
    let out = unet(&args, d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.json") && err.contains("unknown field `epoch`"),
        "{err}"
    );
    assert!(!d.join("runs/y").exists());
}

#[test]
fn a_read_only_run_directory_is_a_clear_error_and_loses_nothing() {
    let dir = own_run_killed_after_one_epoch("4");
    let d = dir.path();
    let before = std::fs::read(d.join("runs/r/last.safetensors")).unwrap();
    // The run directory mounted read-only in a mount namespace of this command alone (root is
    // not stopped by file permissions).
    let script = "mount --bind -o ro runs/r runs/r && exec \"$0\" \"$@\"";
    let out = Command::new("unshare")
        .current_dir(d)
        .args(["-rm", "sh", "-c", script])
        .arg(env!("CARGO_BIN_EXE_unet"))
        .args(["train", "--resume", "runs/r", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("unshare:") || err.contains("mount:") {
        // No mount namespaces here (a container without the capability): nothing to test.
        eprintln!("skipped: {err}");
        return;
    }
    assert!(!out.status.success());
    assert!(
        err.contains("runs/r") && err.contains("Read-only file system"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.join("runs/r/last.safetensors")).unwrap(),
        before
    );
    let text = ok_stdout(&unet(&["train", "--resume", "runs/r", "--quiet"], d));
    assert!(text.contains("done: 4 epochs"), "{text}");
}

#[test]
fn robustness_scores_every_shift_of_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    write_data(&dir.path().join("data"));
    let args = [
        "robustness",
        "--data",
        "data",
        "--sections",
        "2",
        "--json",
        "r.json",
    ];
    let text = ok_stdout(&unet(&args, dir.path()));
    assert!(text.contains("contrast x0.3 around mid-grey"), "{text}");
    assert!(text.contains("rescaled x1.25"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 26);
    assert_eq!(rows[0]["shift"], "none");
    for row in rows {
        let iou = row["mean_iou"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&iou), "{row}");
    }
}

/// The own sections in three classes (membrane 0, cell 1, cell pixels right of a diagonal 2),
/// with the label value 9 on each section's first two rows (ignored below).
fn write_three_class_sections(dir: &Path) {
    write_own_sections(dir);
    let labels = unet_data::read_u8_stack(dir.join("em-masks.tif")).unwrap();
    let mut classes = labels.map(|v| u8::from(v > 0));
    for p in 0..3 {
        let page = classes.page_mut(p);
        for (i, v) in page.iter_mut().enumerate() {
            let (y, x) = (i / 64, i % 64);
            if *v == 1 && x > y + 10 {
                *v = 2;
            }
            if y < 2 {
                *v = 9;
            }
        }
    }
    write_stack(dir.join("em-classes.tif"), &classes).unwrap();
}

#[test]
fn own_three_class_stacks_summarise_train_predict_and_score() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_three_class_sections(d);
    let own = [
        "--images",
        "em.tif",
        "--labels",
        "em-classes.tif",
        "--classes",
        "3",
        "--ignore-label",
        "9",
    ];
    let mut info = vec!["info", "--train-fraction", "0.6"];
    info.extend_from_slice(&own);
    let text = ok_stdout(&unet(&info, d));
    assert!(
        text.contains("labels: 3 classes, some pixels ignored"),
        "{text}"
    );
    assert!(text.contains("label 9 ignored"), "{text}");

    let out = unet(&train_args(&own), d);
    let text = ok_stdout(&out);
    assert!(text.contains("done: 1 epochs"), "{text}");
    assert!(text.contains("IoU per class"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("trains without it"));
    let log = std::fs::read_to_string(d.join("runs/t/log.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        record["validation"]["classes"]["iou_per_class"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("runs/t/config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["n_classes"], 3);
    assert_eq!(
        config["labels"],
        serde_json::json!({"indexed": {"classes": 3, "ignore": true}})
    );

    ok_stdout(&unet(
        &[
            "predict",
            "--model",
            "runs/t/best.safetensors",
            "--input",
            "em.tif",
            "--out",
            "c.tif",
            "--argmax",
        ],
        d,
    ));
    let text = ok_stdout(&unet(
        &[
            "score",
            "--pred",
            "c.tif",
            "--labels",
            "em-classes.tif",
            "--classes",
            "3",
            "--ignore-label",
            "9",
        ],
        d,
    ));
    assert!(
        text.contains("3 classes, 3 sections, label 9 ignored"),
        "{text}"
    );

    // The ISBI evaluation is for binary labels: the run's recorded 3-class data is refused.
    let out = unet(&["evaluate", "--run", "runs/t"], d);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 classes") && err.contains("--classes"),
        "{err}"
    );

    // Labels with a value that is no class of K.
    let mut bad = own.to_vec();
    bad[5] = "2";
    let out = unet(&train_args(&bad), d);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("em-classes.tif") && err.contains("value 2"),
        "{err}"
    );
}

/// The own sections as a 16-bit ImageJ hyperstack of three channels, each the grey section
/// under another gain and offset (the third inverted), beside the binary labels.
fn write_three_channel_sections(dir: &Path) {
    write_own_sections(dir);
    let grey = unet_data::read_u8_stack(dir.join("em.tif")).unwrap();
    let plane = 64 * 64;
    let mut planes = Vec::with_capacity(3 * 3 * plane);
    for s in 0..3 {
        let page = grey.page(s);
        planes.extend(page.iter().map(|&v| u16::from(v) * 257));
        planes.extend(page.iter().map(|&v| 5000 + u16::from(v) * 100));
        planes.extend(page.iter().map(|&v| 65535 - u16::from(v) * 200));
    }
    let stack = Stack::new(9, 64, 64, planes).unwrap();
    let channels = unet_data::ChannelStack::new(3, stack).unwrap();
    unet_data::write_channels(dir.join("em3.tif"), &channels).unwrap();
}

#[test]
fn own_three_channel_stacks_train_predict_and_refuse_other_channel_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_three_channel_sections(d);
    let own = ["--images", "em3.tif", "--labels", "em-masks.tif"];
    let mut info = vec!["info", "--train-fraction", "0.6"];
    info.extend_from_slice(&own);
    let text = ok_stdout(&unet(&info, d));
    assert!(
        text.contains("3 sections of 64x64, 16-bit, 3 channels"),
        "{text}"
    );
    assert!(text.contains("grey mean / std of each channel"), "{text}");

    let mut train = train_args(&own);
    let epochs = train.iter().position(|a| *a == "--epochs").unwrap();
    train[epochs + 1] = "2";
    // Fixed statistics, fitted per channel (the default recipe standardises each image).
    train.extend_from_slice(&["--normalisation", "dataset"]);
    let text = ok_stdout(&unet(&train, d));
    assert!(text.contains("done: 2 epochs"), "{text}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("runs/t/config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["in_channels"], 3);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("runs/t/best.json")).unwrap()).unwrap();
    let normalisation = &sidecar["normalisation"];
    assert_eq!(normalisation["mode"], "dataset_per_channel", "{sidecar}");
    assert_eq!(normalisation["mean"].as_array().unwrap().len(), 3);
    // Each channel's statistics are the grey ones under its gain and offset.
    let stat = |key: &str, c: usize| normalisation[key][c].as_f64().unwrap();
    let grey_mean = stat("mean", 0) * 65535.0 / 257.0;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(close(
        stat("mean", 1),
        (5000.0 + 100.0 * grey_mean) / 65535.0
    ));
    assert!(close(stat("mean", 2), 1.0 - 200.0 * grey_mean / 65535.0));
    assert!(close(stat("std", 1), stat("std", 0) * 100.0 / 257.0));
    assert!(close(stat("std", 2), stat("std", 0) * 200.0 / 257.0));

    let model = ["--model", "runs/t/best.safetensors"];
    let predict = |input: &str| {
        let mut args = vec!["predict", "--input", input, "--out", "p.tif"];
        args.extend_from_slice(&model);
        unet(&args, d)
    };
    ok_stdout(&predict("em3.tif"));
    let p = unet_data::read_stack(d.join("p.tif")).unwrap();
    assert_eq!(p.dims(), (3, 64, 64, 1));
    let unet_data::AnyStack::F32(p) = p else {
        panic!("P(cell) is float")
    };
    assert!(p.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
    ok_stdout(&unet(&["evaluate", "--run", "runs/t"], d));

    // A grey stack does not fit a model of three channels.
    std::fs::remove_file(d.join("p.tif")).unwrap();
    let out = predict("em.tif");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("em.tif") && err.contains("1 channel(s)") && err.contains("takes 3"),
        "{err}"
    );
}
