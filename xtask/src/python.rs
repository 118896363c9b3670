//! The Python side of `cargo xtask test`: a virtual environment with the real clients some
//! features are checked against (the requirement files under `xtask/python/requirements/`), and
//! the checks that run in it.
//!
//! The environment lives in `target/ci-venv/` and is rebuilt only when the requirement files
//! change (their SHA-256 is kept in a marker written after `pip install` succeeded, so an
//! interrupted install is redone). Without a `python3` the checks are skipped with a warning,
//! except under CI (`CI` set), where that is an error: CI must run the real clients.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Where the requirement files live, relative to the workspace root.
const REQUIREMENTS_DIR: &str = "xtask/python/requirements";
/// The environment's directory, relative to the workspace root.
const VENV_DIR: &str = "target/ci-venv";
/// The marker holding the requirement files' digest, inside the environment.
const MARKER: &str = "unet-requirements.sha256";

/// A virtual environment made for the checks.
pub struct Venv {
    /// Its directory.
    pub dir: PathBuf,
}

impl Venv {
    /// The path of one of its executables (`python`, `pip`, `pytest`, `bioimageio`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// A command running one of its executables, with the environment's `bin` first on `PATH`
    /// and `VIRTUAL_ENV` set (as `activate` would), from the workspace root.
    pub fn command(&self, root: &Path, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.dir.join("bin")];
        paths.extend(std::env::split_paths(&path));
        cmd.current_dir(root).env("VIRTUAL_ENV", &self.dir).env(
            "PATH",
            std::env::join_paths(paths).expect("PATH entries join"),
        );
        cmd
    }
}

/// The requirement files, sorted by name.
fn requirement_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join(REQUIREMENTS_DIR);
    let mut files = Vec::new();
    if dir.is_dir() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "txt") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The digest of the requirement files' names and contents.
fn requirements_digest(files: &[PathBuf]) -> Result<String> {
    let mut hasher = Sha256::new();
    for file in files {
        let bytes = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update(file.file_name().unwrap().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(&bytes);
        hasher.update([0]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {what}");
    let status = cmd
        .status()
        .with_context(|| format!("starting {what} ({cmd:?})"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The environment with every requirement installed, made or brought up to date; `None` (with a
/// warning) when there is no `python3` and this is not CI.
pub fn ensure_venv(root: &Path) -> Result<Option<Venv>> {
    let files = requirement_files(root)?;
    let python = std::env::var_os("UNET_PYTHON").unwrap_or_else(|| "python3".into());
    let found = Command::new(&python)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            bail!(
                "no Python found ({}): CI runs the Python checks, so it needs python3 >= 3.11 \
                 with venv and pip",
                python.to_string_lossy()
            );
        }
        eprintln!(
            "warning: no python3 found: the Python checks (the unet_rs package, the exported \
             model's validation) are SKIPPED; install python3 with venv and pip to run them"
        );
        return Ok(None);
    }
    let venv = Venv {
        dir: root.join(VENV_DIR),
    };
    let digest = requirements_digest(&files)?;
    let marker = venv.dir.join(MARKER);
    if fs::read_to_string(&marker).is_ok_and(|m| m.trim() == digest) && venv.bin("python").exists()
    {
        return Ok(Some(venv));
    }
    // A stale or half-made environment is made again from nothing: pip cannot be trusted to
    // remove what a changed requirement file no longer names.
    if venv.dir.exists() {
        fs::remove_dir_all(&venv.dir)
            .with_context(|| format!("removing the stale {}", venv.dir.display()))?;
    }
    run(
        "python virtual environment",
        Command::new(&python).args(["-m", "venv"]).arg(&venv.dir),
    )?;
    run(
        "pip upgrade",
        venv.command(root, "python")
            .args(["-m", "pip", "install", "--quiet", "--upgrade", "pip"]),
    )?;
    if !files.is_empty() {
        let mut pip = venv.command(root, "python");
        pip.args(["-m", "pip", "install", "--quiet"]);
        for file in &files {
            pip.arg("-r").arg(file);
        }
        run("pip install of the Python checks' requirements", &mut pip)?;
    }
    fs::write(&marker, format!("{digest}\n"))
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(Some(venv))
}

/// One Python check: given the workspace root, the environment and the ISBI data directory.
type Check = fn(&Path, &Venv, &Path) -> Result<()>;

/// Every Python check, in order.
pub fn run_checks(root: &Path, venv: &Venv, data: &Path) -> Result<()> {
    let checks: &[(&str, Check)] = &[
        ("bioimageio test of unet export", bioimageio_test),
        (
            "zarr-python, ome-zarr-py and ome-zarr-models read unet predict's OME-Zarr, \
             tensorstore its N5",
            zarr_check,
        ),
        (
            "a daisy 2.0 scheduler drives two unet predict --daisy-worker processes",
            daisy_check,
        ),
        ("the unet_rs package's tests", unet_py_tests),
    ];
    for (name, check) in checks {
        eprintln!("==> python check: {name}");
        check(root, venv, data).with_context(|| format!("python check {name}"))?;
    }
    Ok(())
}

/// `xtask/python/zarr_check.py`: volumes zarr-python writes go through blockwise `unet
/// predict` (the dev binary; the built-in model, and [`small_model`] for channels in and class
/// probabilities out), and zarr-python, ome-zarr-py and ome-zarr-models read and validate the
/// OME-Zarr 0.4 and 0.5 outputs; tensorstore writes an N5 input and reads the N5 output.
fn zarr_check(root: &Path, venv: &Venv, data: &Path) -> Result<()> {
    let unet = build_unet(root)?;
    let model = small_model(root, &unet, data)?;
    run_script(root, venv, "zarr_check.py", &unet, "ci-zarr", &[&model])
}

/// `python xtask/python/SCRIPT UNET WORK [MORE...]` in the environment, its work directory
/// `target/WORK` emptied first: how the volume checks run their scripts.
fn run_script(
    root: &Path,
    venv: &Venv,
    script: &str,
    unet: &Path,
    work: &str,
    more: &[&Path],
) -> Result<()> {
    let work = root.join("target").join(work);
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let mut check = venv.command(root, "python");
    check
        .arg(root.join("xtask/python").join(script))
        .arg(unet)
        .arg(&work)
        .args(more);
    run(script, &mut check)
}

/// `xtask/python/daisy_check.py`: `docs/volumes/predict_with_daisy.py` has a real daisy 2.0
/// scheduler hand the blocks of a small volume to two `unet predict --daisy-worker` processes
/// (the dev binary, the built-in model); their store must equal one job-array worker's, a rerun
/// must skip every block, and a block that is not one of the store's must come back failed with
/// unet's reason.
fn daisy_check(root: &Path, venv: &Venv, _data: &Path) -> Result<()> {
    let unet = build_unet(root)?;
    run_script(root, venv, "daisy_check.py", &unet, "ci-daisy", &[])
}

/// `unet export` of the built-in default model (the dev binary the tests built) and of the
/// small three-channel, three-class model ([`small_model`]), then the BioImage Model Zoo's own
/// validator on each package, with the network cut off (a dead proxy): a package must validate
/// and reproduce its test outputs offline.
fn bioimageio_test(root: &Path, venv: &Venv, data: &Path) -> Result<()> {
    let unet = build_unet(root)?;
    let out_dir = root.join("target").join("ci-export");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let export = |what: &str, model: Option<&Path>, package: &Path| {
        let mut cmd = Command::new(&unet);
        cmd.current_dir(root)
            .env("UNET_DATA", data)
            .args(["export", "--overwrite", "--out"])
            .arg(package);
        if let Some(model) = model {
            cmd.arg("--model").arg(model);
        }
        run(what, &mut cmd)
    };
    let default = out_dir.join("default.bioimageio.zip");
    export("unet export of the built-in default model", None, &default)?;
    let small = out_dir.join("small.bioimageio.zip");
    let model = small_model(root, &unet, data)?;
    export(
        "unet export of a three-channel, three-class model",
        Some(&model),
        &small,
    )?;
    for package in [&default, &small] {
        let mut test = venv.command(root, "bioimageio");
        test.arg("test").arg(package).current_dir(&out_dir);
        for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            test.env(key, "http://127.0.0.1:9");
        }
        run(
            &format!("bioimageio test (offline) of {}", package.display()),
            &mut test,
        )?;
    }
    Ok(())
}

/// A model of three input channels and three classes, trained for one epoch (about a second)
/// into `target/ci-models/` unless it is there: on three 96 x 96 crops of the ISBI sections
/// made 16-bit and three-channel (each channel the section under another gain, the third
/// inverted), labelled membrane 0, cell 1, and dark cell pixels 2; fixed per-channel
/// statistics. Returns its `best` checkpoint. Its scores mean nothing; its shapes and its
/// normalisation are what the clients check.
fn small_model(root: &Path, unet: &Path, data: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("ci-models");
    let best = dir.join("small/best.safetensors");
    if best.is_file() {
        return Ok(best);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sections = unet_data::LabelledSections::load(data)
        .with_context(|| format!("loading the ISBI data in {}", data.display()))?;
    let (images, labels) = (sections.grey_u8()?, &sections.train_labels);
    let (n, top, left) = (96usize, 200usize, 200usize);
    let crop = |stack: &unet_data::Stack<u8>, s: usize| -> Vec<u8> {
        (top..top + n)
            .flat_map(|y| {
                stack.page(s)[y * stack.width() + left..][..n]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let (mut planes, mut classes) = (Vec::new(), Vec::new());
    for s in 0..3 {
        let grey = crop(images, s);
        planes.extend(grey.iter().map(|&v| u16::from(v) * 257));
        planes.extend(grey.iter().map(|&v| 5000 + u16::from(v) * 100));
        planes.extend(grey.iter().map(|&v| 65535 - u16::from(v) * 200));
        classes.extend(crop(labels, s).iter().zip(&grey).map(|(&l, &v)| match l {
            0 => 0u8,
            _ if v < 110 => 2,
            _ => 1,
        }));
    }
    let stack = unet_data::ChannelStack::new(3, unet_data::Stack::new(9, n, n, planes)?)?;
    unet_data::write_channels(dir.join("images.tif"), &stack)?;
    unet_data::write_stack(
        dir.join("classes.tif"),
        &unet_data::Stack::new(3, n, n, classes)?,
    )?;
    run(
        "unet train of a three-channel, three-class model",
        Command::new(unet).current_dir(&dir).args([
            "train",
            "--images",
            "images.tif",
            "--labels",
            "classes.tif",
            "--classes",
            "3",
            "--normalisation",
            "dataset",
            "--epochs",
            "1",
            "--input-tile",
            "64",
            "--batch-size",
            "3",
            "--train-fraction",
            "0.6",
            "--run-dir",
            "small",
            "--quiet",
        ]),
    )?;
    Ok(best)
}

/// The dev `unet` binary (`target/debug/unet`), built if needed: what the tests built is reused.
fn build_unet(root: &Path) -> Result<PathBuf> {
    let status = crate::cargo()
        .current_dir(root)
        .args(["build", "--quiet", "-p", "unet-cli"])
        .status()
        .context("starting cargo build -p unet-cli")?;
    if !status.success() {
        bail!("cargo build -p unet-cli failed ({status})");
    }
    Ok(root.join("target/debug/unet"))
}

/// `pip install ./crates/unet-py` (maturin, as a user installs it) into the environment, then
/// its pytest suite with the ISBI data and the `unet` binary the results are compared with.
///
/// The wheel is built in the dev profile (`MATURIN_PEP517_ARGS`): its dependencies are then the
/// ones `cargo test` just built, so the install compiles little more than the package itself.
/// pytest fails on any failed test and on finding none (exit 5).
fn unet_py_tests(root: &Path, venv: &Venv, data: &Path) -> Result<()> {
    let unet = build_unet(root)?;
    run(
        "pip install ./crates/unet-py",
        venv.command(root, "python")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-build-isolation",
                "--no-deps",
                "--force-reinstall",
                "./crates/unet-py",
            ])
            .env("MATURIN_PEP517_ARGS", "--profile dev"),
    )?;
    run(
        "pytest crates/unet-py/tests",
        venv.command(root, "python")
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "crates/unet-py/tests",
            ])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env(unet_data::DATA_ENV, data)
            .env("UNET_BIN", &unet),
    )
}
