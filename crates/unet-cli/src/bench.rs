//! `unet bench`: times a training step or a forward pass of a preset U-Net on random data and
//! prints one JSON line (median / min / max milliseconds and the convolutions' GFLOP/s), the
//! counterpart of `xtask/scripts/torch_unet.py train|fwd big|small` (`cargo xtask bench` runs
//! both). A training step is [`UNet::train_step`], the one the trainer takes.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use clap::{Args, Subcommand};
use unet_model::{
    Adam, AdamParams, Loss, LossScaler, Padding, Precision, Preset, StepKind, StepOptions, UNet,
};

use crate::device::DeviceArg;

/// Flags of `unet bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Forward, weighted cross-entropy, backward and an Adam update (train mode, batch norm).
    TrainStep(BenchOpts),
    /// A forward pass in eval mode.
    Forward(BenchOpts),
}

#[derive(Debug, Args)]
struct BenchOpts {
    /// The preset: paper, reference (PyTorch's `big`) or small.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Timed repetitions (after one untimed warm-up).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed warm-up repetitions.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Worker threads [default: RAYON_NUM_THREADS or all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input size in pixels [default: 572 for valid padding, 512 for same].
    #[arg(long)]
    size: Option<usize>,
    /// Use candle's stock ops instead of the fast kernels (the tiled CPU ops; on CUDA, the
    /// GEMM-form convolution).
    #[arg(long)]
    stock: bool,
    /// The compute format: f32, or f16 (with loss scaling; GEMM-form convolutions and candle's
    /// stock ops, as the fast kernels are f32), or bf16 where candle has it (not on the CPU).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// The compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Train through candle's autograd even where the direct step applies (the plain U-Net in
    /// f32 on the CPU with the fast kernels; see `UNet::direct_train_step`).
    #[arg(long)]
    autograd: bool,
}

/// Run the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    let (opts, train) = match &args.what {
        BenchWhat::TrainStep(o) => (o, true),
        BenchWhat::Forward(o) => (o, false),
    };
    if let Some(threads) = opts.threads {
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        // candle's own ops read RAYON_NUM_THREADS; the kernels use Rayon's global pool.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting up the thread pool")?;
    }
    if opts.steps == 0 || opts.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    unet_model::kernels::set_fast_ops(!opts.stock);
    let preset: Preset = opts.preset.parse().with_context(|| {
        format!(
            "--preset {} (one of {})",
            opts.preset,
            Preset::NAMES.join(", ")
        )
    })?;
    let cfg = preset.config();
    let size = opts.size.unwrap_or(match cfg.padding {
        Padding::Valid => 572,
        Padding::Same => 512,
    });
    let out = unet_model::output_size(&cfg, size).context("--size")?;

    let precision: Precision = opts.precision.parse()?;
    let device = opts.device.open()?;
    precision.check_device(&device)?;
    let model = UNet::seeded(&cfg, 0, &device)?;
    let model = model.with_precision(precision);
    let mut scaler = precision.needs_loss_scaling().then(LossScaler::default);
    let x = Tensor::randn(
        0f32,
        1.0,
        (opts.batch, cfg.in_channels, size, size),
        &device,
    )?;
    let targets = Tensor::rand(0f32, 2.0, (opts.batch, out, out), &device)?
        .floor()?
        .to_dtype(DType::U32)?;
    let weights = (Tensor::rand(0f32, 1.0, (opts.batch, out, out), &device)? + 0.5)?;
    let mut optimizer = Adam::new(
        model.parameters(),
        AdamParams {
            lr: 5e-4,
            ..AdamParams::default()
        },
    )?;

    let options = StepOptions {
        grad_clip: None,
        autograd: opts.autograd,
    };
    let mut step_kind = None;
    let mut once = || -> Result<()> {
        if train {
            // The step reads the loss value back, as PyTorch's `loss.item()` does.
            let report = model.train_step(
                &x,
                |logits: &Tensor| Loss::CrossEntropy.compute(logits, &targets, Some(&weights)),
                &mut optimizer,
                scaler.as_mut(),
                options,
            )?;
            step_kind = Some(report.kind);
        } else {
            model.forward_t(&x, false)?;
        }
        // A GPU runs its kernels asynchronously: time them, not their launch.
        device.synchronize()?;
        Ok(())
    };
    for _ in 0..opts.warmup {
        once()?;
    }
    let mut times = Vec::with_capacity(opts.steps);
    for _ in 0..opts.steps {
        let start = Instant::now();
        once()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    // Forward, input-gradient and weight-gradient products of every conv in a train step.
    let flops =
        unet_model::conv_flops(&cfg, size) * opts.batch as f64 * if train { 3.0 } else { 1.0 };
    let load = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    });
    let line = serde_json::json!({
        "fw": "candle",
        "mode": if train { "train-step" } else { "forward" },
        "preset": preset.name(),
        "ops": if opts.stock { "stock" } else { "fast" },
        "step": step_kind.map_or("-", StepKind::name),
        "precision": precision.name(),
        "device": format!("{:?}", opts.device).to_lowercase(),
        "threads": rayon::current_num_threads(),
        "batch": opts.batch,
        "size": size,
        "out": out,
        "median_ms": median,
        "min_ms": sorted[0],
        "max_ms": sorted[sorted.len() - 1],
        "gflops": flops / (median * 1e-3) / 1e9,
        "all_ms": times,
        "load_avg_1m": load,
    });
    println!("{line}");
    Ok(())
}
