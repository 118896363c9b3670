//! `cargo xtask bench`: the release `unet bench` next to PyTorch's CPU reference
//! (`xtask/scripts/torch_unet.py`), case by case and back to back so both see the same
//! machine load, then a table of the ratios (ours / PyTorch; below 1 is faster).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{path_arg, run_step};

/// Flags of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Timed repetitions per case on each side.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Threads on our side (the PyTorch script always uses 2, the project machine's cores).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Presets to time: small, reference (PyTorch's `small` and `big`).
    #[arg(long, value_delimiter = ',', default_value = "small,reference")]
    presets: Vec<String>,
    /// What to time: train-step, forward.
    #[arg(long, value_delimiter = ',', default_value = "train-step,forward")]
    modes: Vec<String>,
    /// The PyTorch reference script [default: $UNET_TORCH_BENCH, else
    /// xtask/scripts/torch_unet.py in the checkout].
    #[arg(long)]
    torch_script: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One case timed on both sides.
#[derive(Debug, Clone, PartialEq)]
struct CaseResult {
    preset: String,
    mode: String,
    ours_ms: f64,
    gflops: f64,
    torch_ms: Option<f64>,
    load: Option<f64>,
    /// Where our side ran: `unet bench`'s `cpu`, `cpu_kernels` and `cpu_conv` fields.
    cpu: serde_json::Value,
    kernels: serde_json::Value,
    conv: serde_json::Value,
}

/// PyTorch's name of a preset and of a mode in `torch_unet.py`.
fn torch_names(preset: &str, mode: &str) -> Result<(&'static str, &'static str)> {
    let model = match preset {
        "small" => "small",
        "reference" => "big",
        other => bail!("--presets: {other:?} has no PyTorch counterpart (small, reference)"),
    };
    let mode = match mode {
        "train-step" => "train",
        "forward" => "fwd",
        other => bail!("--modes: unknown {other:?} (train-step, forward)"),
    };
    Ok((model, mode))
}

/// The last line of `stdout` that parses as a JSON object with a numeric `median_ms`.
fn json_line(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .find(|v| v["median_ms"].is_number())
}

fn run_json(mut cmd: Command, what: &str) -> Result<serde_json::Value> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    json_line(&stdout).with_context(|| format!("{what} printed no result line: {stdout}"))
}

fn torch_script(args: &BenchArgs, root: &Path) -> PathBuf {
    args.torch_script
        .clone()
        .or_else(|| std::env::var_os("UNET_TORCH_BENCH").map(PathBuf::from))
        .unwrap_or_else(|| root.join("xtask/scripts/torch_unet.py"))
}

/// Why PyTorch cannot be run, if it cannot.
fn torch_unavailable(script: &Path) -> Option<String> {
    if !script.is_file() {
        return Some(format!("{} not found", script.display()));
    }
    match Command::new("python3")
        .args(["-c", "import torch"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(_) => Some("python3 cannot import torch (pip install torch)".into()),
        Err(e) => Some(format!("no python3: {e}")),
    }
}

/// The table the command prints.
fn table(results: &[CaseResult]) -> String {
    let mut s = String::from(
        "| work | PyTorch ms | unet-rs ms | unet-rs / PyTorch | unet-rs GFLOP/s | load |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in results {
        let (torch, ratio) = match r.torch_ms {
            Some(t) => (format!("{t:.0}"), format!("{:.2}", r.ours_ms / t)),
            None => ("-".into(), "-".into()),
        };
        let load = r.load.map_or("-".into(), |l| format!("{l:.1}"));
        s.push_str(&format!(
            "| {} `{}` | {torch} | {:.0} | {ratio} | {:.1} | {load} |\n",
            r.mode, r.preset, r.ours_ms, r.gflops
        ));
    }
    s
}

/// Runs `cargo xtask bench`.
pub fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    if args.steps == 0 || args.threads == 0 {
        bail!("--steps and --threads must be at least 1");
    }
    let cases: Vec<(String, String)> = args
        .presets
        .iter()
        .flat_map(|p| args.modes.iter().map(move |m| (p.clone(), m.clone())))
        .collect();
    for (p, m) in &cases {
        torch_names(p, m)?;
    }
    run_step(
        root,
        "release build",
        &["build", "--release", "--quiet", "-p", "unet-cli"],
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let unet = target.join("release/unet");
    let script = torch_script(args, root);
    let why_not = torch_unavailable(&script);
    if let Some(why) = &why_not {
        eprintln!("PyTorch side skipped: {why}");
    }
    let mut results = Vec::new();
    for (preset, mode) in cases {
        let (torch_model, torch_mode) = torch_names(&preset, &mode)?;
        eprintln!("==> {mode} {preset}");
        let mut ours = Command::new(&unet);
        ours.args(["bench", &mode, "--preset", &preset])
            .args(["--steps", &args.steps.to_string()])
            .args(["--threads", &args.threads.to_string()]);
        let ours = run_json(ours, &format!("unet bench {mode} --preset {preset}"))?;
        let torch_ms = match why_not {
            Some(_) => None,
            None => {
                let mut cmd = Command::new("python3");
                cmd.arg(path_arg(&script))
                    .args([torch_mode, torch_model, &args.steps.to_string()]);
                let torch = run_json(cmd, &format!("torch_unet.py {torch_mode} {torch_model}"))?;
                torch["median_ms"].as_f64()
            }
        };
        results.push(CaseResult {
            preset,
            mode,
            ours_ms: ours["median_ms"].as_f64().unwrap_or(f64::NAN),
            gflops: ours["gflops"].as_f64().unwrap_or(f64::NAN),
            torch_ms,
            load: ours["load_avg_1m"].as_f64(),
            cpu: ours["cpu"].clone(),
            kernels: ours["cpu_kernels"].clone(),
            conv: ours["cpu_conv"].clone(),
        });
    }
    if let Some(first) = results.first() {
        println!(
            "CPU: {} ({}, family {} model {}); kernel paths: {}; convolutions: {}\n",
            first.cpu["model"].as_str().unwrap_or("?"),
            first.cpu["vendor"].as_str().unwrap_or("?"),
            first.cpu["family"],
            first.cpu["model_number"],
            first.kernels,
            first.conv
        );
    }
    let text = table(&results);
    println!("{text}");
    if let Some(path) = &args.json {
        let json = serde_json::Value::Array(
            results
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "preset": r.preset, "mode": r.mode, "unet_rs_ms": r.ours_ms,
                        "gflops": r.gflops, "pytorch_ms": r.torch_ms,
                        "ratio": r.torch_ms.map(|t| r.ours_ms / t), "load_avg_1m": r.load,
                        "cpu": r.cpu, "cpu_kernels": r.kernels, "cpu_conv": r.conv,
                    })
                })
                .collect(),
        );
        let text = serde_json::to_string_pretty(&json).expect("a value serialises");
        unet_data::write_atomically(path, text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_result_line_among_other_output() {
        let out = "warming up\n{\"fw\": \"torch\", \"median_ms\": 601.5}\nsplits ...\n";
        assert_eq!(json_line(out).unwrap()["median_ms"], 601.5);
        assert!(json_line("{\"no\": 1}\nplain text").is_none());
    }

    #[test]
    fn presets_and_modes_map_to_the_pytorch_script() {
        assert_eq!(
            torch_names("reference", "train-step").unwrap(),
            ("big", "train")
        );
        assert_eq!(torch_names("small", "forward").unwrap(), ("small", "fwd"));
        assert!(torch_names("paper", "forward").is_err());
        assert!(torch_names("small", "backward").is_err());
    }

    #[test]
    fn the_table_gives_ratios_and_marks_missing_pytorch() {
        let r = |torch_ms| CaseResult {
            preset: "small".into(),
            mode: "train-step".into(),
            ours_ms: 1200.0,
            gflops: 40.0,
            torch_ms,
            load: Some(1.5),
            cpu: serde_json::Value::Null,
            kernels: serde_json::Value::Null,
            conv: serde_json::Value::Null,
        };
        let t = table(&[r(Some(600.0)), r(None)]);
        assert!(
            t.contains("| train-step `small` | 600 | 1200 | 2.00 | 40.0 | 1.5 |"),
            "{t}"
        );
        assert!(
            t.contains("| train-step `small` | - | 1200 | - | 40.0 | 1.5 |"),
            "{t}"
        );
    }
}
