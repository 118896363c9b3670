//! Project automation for unet-rs, in the style of rust-analyzer's xtask: plain Rust instead of
//! shell scripts, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask fetch-data`: download the ISBI 2012 stacks into `data/isbi2012/`, verified.
//! - `cargo xtask test`: what CI runs: format check, clippy with `-D warnings`, the test suite
//!   (fetches the data first when it is missing), then the Python checks against real clients in
//!   a virtual environment under `target/ci-venv/` (`python` module).
//! - `cargo xtask train`: the main job (fetches the data first when it is missing), then
//!   `cargo xtask evaluate`.
//! - `cargo xtask figures`: the weight-map and augmentation pictures under `docs/figures/`.
//! - `cargo xtask bench`: `unet bench` against PyTorch's CPU reference, with the ratios.
//! - `cargo xtask fuzz`: every reader fed many mutated inputs (the test suite runs few).
//! - `cargo xtask robustness`: `unet robustness` for one or more models and their figure.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod fetch;
mod figures;
mod python;
mod three_class;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "unet-rs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Download the ISBI 2012 stacks from the public mirror and verify their pixel checksums.
    FetchData(fetch::FetchArgs),
    /// Draw the project's figures (PNG) into docs/figures/.
    Figures(figures::FiguresArgs),
    /// Run what CI runs: cargo fmt --check, cargo clippy -D warnings, cargo test (fetching the
    /// ISBI data first when none is found), then the Python checks in target/ci-venv/.
    Test(TestArgs),
    /// Train U-Net on the ISBI 2012 data (default recipe), then evaluate the best checkpoint.
    Train(TrainArgs),
    /// Score a run's best checkpoint on the validation sections; writes <run>/scores.json.
    Evaluate(EvaluateArgs),
    /// Time train steps and forward passes against PyTorch's CPU reference; print the ratios.
    Bench(bench::BenchArgs),
    /// Fuzz every reader (TIFF, labels, PNG, checkpoints, run files) with mutated inputs.
    Fuzz(FuzzArgs),
    /// `unet robustness` for one or more models, then their scores against shift as a PNG.
    Robustness(RobustnessArgs),
    /// Write a three-class set made from the ISBI sections (membrane, cell, dark blobs inside
    /// cells) into data/three-class/, for training and scoring K classes.
    ThreeClass(three_class::ThreeClassArgs),
}

/// Flags of `cargo xtask robustness`.
#[derive(Debug, clap::Args)]
struct RobustnessArgs {
    /// A checkpoint to score; repeat it to compare (at most three) [default: the built-in model].
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Data directory [default: $UNET_DATA, else data/isbi2012, fetched when missing].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The figure [default: docs/figures/robustness.png in the checkout].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Flags of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
struct FuzzArgs {
    /// Mutated inputs per reader (eight readers).
    #[arg(long, default_value_t = 20_000)]
    cases: usize,
}

/// Flags of `cargo xtask test`.
#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Base URL of the mirror the data is fetched from when none is found (serving <dir>/<i>.png).
    #[arg(long, default_value = unet_data::download::DEFAULT_MIRROR)]
    mirror: String,
}

/// Flags of `cargo xtask train`.
#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// The recipe: default (CPU, about an hour on 2 cores), reference, paper.
    #[arg(long, default_value = "default")]
    recipe: String,
    /// Data directory [default: $UNET_DATA, else data/isbi2012, fetched when missing].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory [default: runs/<recipe>].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in the run directory from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Further flags passed to `unet train` (after `--`), e.g. `-- --epochs 2`.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Flags of `cargo xtask evaluate`.
#[derive(Debug, clap::Args)]
struct EvaluateArgs {
    /// The run directory.
    #[arg(long, default_value = "runs/default")]
    run: PathBuf,
    /// Data directory [default: $UNET_DATA, else data/isbi2012, fetched when missing].
    #[arg(long)]
    data: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Task::FetchData(args) => fetch::run(&root, &args),
        Task::Test(args) => test(&root, &args),
        Task::Figures(args) => figures::run(&root, &args),
        Task::Train(args) => train(&root, &args),
        Task::Evaluate(args) => evaluate(&root, &args),
        Task::Bench(args) => bench::run(&root, &args),
        Task::Fuzz(args) => fuzz(&root, &args),
        Task::Robustness(args) => robustness(&root, &args),
        Task::ThreeClass(args) => {
            let dir = data_dir_or_fetch(&root, args.data.as_deref())?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| root.join("data").join("three-class"));
            three_class::run(&dir, &out)
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run_step(root: &Path, what: &str, args: &[&str]) -> Result<()> {
    run_step_with(root, what, args, &[])
}

/// [`run_step`] with extra environment variables for cargo and what it runs.
fn run_step_with(root: &Path, what: &str, args: &[&str], envs: &[(&str, &Path)]) -> Result<()> {
    eprintln!("==> {what}: cargo {}", args.join(" "));
    let status = cargo()
        .current_dir(root)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .with_context(|| format!("starting cargo for {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn test(root: &Path, args: &TestArgs) -> Result<()> {
    // The data first, so that a missing data set fails here in one line, not in the tests.
    let dir = match data_dir_or_fetch_from(root, None, &args.mirror) {
        Ok(dir) => dir,
        Err(Fetch::Failed(e)) => bail!(
            "no ISBI 2012 data found and fetching it failed ({}): run `cargo xtask fetch-data` \
             when online, or set {} to a directory holding {} and {}",
            fetch_cause(&e),
            unet_data::DATA_ENV,
            unet_data::TRAIN_VOLUME,
            unet_data::TRAIN_LABELS
        ),
        Err(Fetch::NotFound(e)) => return Err(e.into()),
    };
    // Absolute, so that tests find it from any working directory.
    let dir = dir.canonicalize().unwrap_or(dir);
    eprintln!("ISBI 2012 data: {}", dir.display());
    run_step(root, "format check", &["fmt", "--all", "--check"])?;
    run_step(
        root,
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run_step_with(
        root,
        "tests",
        &["test", "--workspace"],
        &[(unet_data::DATA_ENV, &dir)],
    )?;
    match python::ensure_venv(root)? {
        Some(venv) => python::run_checks(root, &venv, &dir),
        None => Ok(()),
    }
}

/// `cargo run --release -p unet-cli -- <args>`: training and evaluation run in the optimised
/// binary (the dev profile would train several times slower), with CUDA when xtask has it.
fn run_unet(root: &Path, what: &str, args: &[String]) -> Result<()> {
    let mut cargo_args: Vec<String> = ["run", "--release", "--quiet", "-p", "unet-cli"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if cfg!(feature = "cuda") {
        cargo_args.extend(["--features".to_string(), "cuda".to_string()]);
    }
    cargo_args.push("--".into());
    cargo_args.extend(args.iter().cloned());
    let refs: Vec<&str> = cargo_args.iter().map(String::as_str).collect();
    run_step(root, what, &refs)
}

/// Why no data directory came back from [`data_dir_or_fetch_from`].
enum Fetch {
    /// The flag or `UNET_DATA` named a directory without the data (nothing is fetched then).
    NotFound(unet_data::Error),
    /// Nothing was found and fetching it failed.
    Failed(anyhow::Error),
}

/// Why a fetch failed, without the "fetching ... into" context the message around it repeats.
fn fetch_cause(e: &anyhow::Error) -> String {
    let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

/// The data directory, fetched into `data/isbi2012/` when nothing was named and nothing is there.
fn data_dir_or_fetch(root: &Path, data: Option<&Path>) -> Result<PathBuf> {
    data_dir_or_fetch_from(root, data, unet_data::download::DEFAULT_MIRROR).map_err(|e| match e {
        Fetch::NotFound(e) => e.into(),
        Fetch::Failed(e) => e,
    })
}

/// [`data_dir_or_fetch`] from the given mirror.
fn data_dir_or_fetch_from(
    root: &Path,
    data: Option<&Path>,
    mirror: &str,
) -> std::result::Result<PathBuf, Fetch> {
    let named =
        data.is_some() || std::env::var_os(unet_data::DATA_ENV).is_some_and(|v| !v.is_empty());
    match unet_data::locate_data_dir(data) {
        Ok(dir) => Ok(dir),
        Err(_) if !named => {
            let dest = root.join(unet_data::DEFAULT_DATA_DIR);
            eprintln!("no ISBI data found: fetching it into {}", dest.display());
            fetch::fetch_into(&dest, mirror).map_err(Fetch::Failed)?;
            Ok(dest)
        }
        Err(e) => Err(Fetch::NotFound(e)),
    }
}

fn train(root: &Path, args: &TrainArgs) -> Result<()> {
    let dir = data_dir_or_fetch(root, args.data.as_deref())?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| root.join("runs").join(&args.recipe));
    let mut train_args: Vec<String> = vec!["train".into(), "--data".into(), path_arg(&dir)];
    if args.resume {
        train_args.extend(["--resume".into(), path_arg(&run_dir)]);
    } else {
        train_args.extend([
            "--recipe".into(),
            args.recipe.clone(),
            "--run-dir".into(),
            path_arg(&run_dir),
        ]);
    }
    train_args.extend(args.extra.iter().cloned());
    run_unet(root, "training", &train_args)?;
    evaluate(
        root,
        &EvaluateArgs {
            run: run_dir,
            data: Some(dir),
        },
    )
}

fn evaluate(root: &Path, args: &EvaluateArgs) -> Result<()> {
    let dir = data_dir_or_fetch(root, args.data.as_deref())?;
    run_unet(
        root,
        "evaluation",
        &[
            "evaluate".into(),
            "--run".into(),
            path_arg(&args.run),
            "--data".into(),
            path_arg(&dir),
        ],
    )
}

/// `unet robustness --json` per model into `target/robustness/`, then the figure of them all.
fn robustness(root: &Path, args: &RobustnessArgs) -> Result<()> {
    let dir = data_dir_or_fetch(root, args.data.as_deref())?;
    let tables_dir = root.join("target").join("robustness");
    std::fs::create_dir_all(&tables_dir)
        .with_context(|| format!("creating {}", tables_dir.display()))?;
    let models: Vec<Option<&PathBuf>> = match args.model.is_empty() {
        true => vec![None],
        false => args.model.iter().map(Some).collect(),
    };
    let mut tables = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let json = tables_dir.join(format!("model-{i}.json"));
        let mut unet_args = vec![
            "robustness".to_string(),
            "--data".into(),
            path_arg(&dir),
            "--json".into(),
            path_arg(&json),
        ];
        if let Some(model) = model {
            unet_args.extend(["--model".into(), path_arg(model)]);
        }
        run_unet(root, "robustness", &unet_args)?;
        tables.push(figures::plots::read_robustness(&json)?);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("docs/figures/robustness.png"));
    figures::plots::robustness_figure(&tables, &out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// The fuzzing tests of the readers' crates, optimised and one at a time, with many inputs;
/// failing inputs are saved under `target/fuzz-failures/`.
fn fuzz(root: &Path, args: &FuzzArgs) -> Result<()> {
    let out = root.join("target").join("fuzz-failures");
    eprintln!(
        "==> fuzzing: {} inputs per reader (failures go to {})",
        args.cases,
        out.display()
    );
    let status = cargo()
        .current_dir(root)
        .env("UNET_FUZZ_CASES", args.cases.to_string())
        .env("UNET_FUZZ_OUT", &out)
        .args([
            "test",
            "--release",
            "-p",
            "unet-data",
            "-p",
            "unet-model",
            "-p",
            "unet-train",
            "--test",
            "fuzz",
            "--",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .status()
        .context("starting cargo for the fuzzing tests")?;
    if !status.success() {
        bail!(
            "fuzzing found failures ({status}); the inputs are in {}",
            out.display()
        );
    }
    Ok(())
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
