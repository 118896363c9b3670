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
    /// Each convolution product (forward, input gradient, weight gradient) of the `small`
    /// net's levels on every SIMD path this CPU has, each with im2col and with Winograd,
    /// against what the rules pick: how to check them on a new CPU (`UNET_CPU_KERNELS` and
    /// `UNET_CPU_CONV` override them).
    Kernels(KernelOpts),
}

#[derive(Debug, Args)]
struct KernelOpts {
    /// Rounds; each times every path once per product, alternating, and the minimum is kept.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The first level's map size in pixels (halved at each of the 5 levels).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Worker threads [default: RAYON_NUM_THREADS or all cores].
    #[arg(long)]
    threads: Option<usize>,
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

/// Sets the worker threads, where asked.
fn set_threads(threads: Option<usize>) -> Result<()> {
    let Some(threads) = threads else {
        return Ok(());
    };
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    // candle's own ops read RAYON_NUM_THREADS; the kernels use Rayon's global pool.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("setting up the thread pool")
}

/// Run the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    let (opts, train) = match &args.what {
        BenchWhat::TrainStep(o) => (o, true),
        BenchWhat::Forward(o) => (o, false),
        BenchWhat::Kernels(o) => return run_kernels(o),
    };
    set_threads(opts.threads)?;
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
    let mut line = serde_json::json!({
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
    if let Some(fields) = line.as_object_mut() {
        fields.extend(crate::device::kernel_fields(&device));
    }
    println!("{line}");
    Ok(())
}

/// `unet bench kernels`: one JSON line with, per product, each variant's milliseconds over the
/// `small` net's five levels (3x3 same convolutions, 16 to 256 channels, batch 1), the fastest
/// variant, the rule's and the time its choices take together, and the same per level: the
/// narrow and the wide layers can prefer different ones. A variant is a SIMD path with im2col
/// (`avx2`) or with Winograd (`avx2_winograd`).
fn run_kernels(opts: &KernelOpts) -> Result<()> {
    use unet_model::kernels::cpu_path::{
        cpu_info, process_kernel_paths, with_kernel_paths, ConvProduct, GemmPath, KernelPaths,
    };
    use unet_model::kernels::winograd::{conv_algorithm, with_conv_algorithm, ConvAlgorithm};
    use unet_model::kernels::{conv2d, conv2d_input_grad, conv2d_weight_grad};

    set_threads(opts.threads)?;
    if opts.rounds == 0 || opts.size < 16 {
        bail!("--rounds must be at least 1 and --size at least 16");
    }
    let device = candle_core::Device::Cpu;
    let levels = (0..5)
        .map(|l| {
            let (c, side) = (16 << l, opts.size >> l);
            let x = Tensor::randn(0f32, 1.0, (1, c, side, side), &device)?;
            let dy = Tensor::randn(0f32, 1.0, (1, c, side, side), &device)?;
            let w = (Tensor::randn(0f32, 1.0, (c, c, 3, 3), &device)? * (2.0 / (9 * c) as f64))?;
            let b = Tensor::zeros(c, DType::F32, &device)?;
            Ok((c, x, dy, w, b))
        })
        .collect::<Result<Vec<_>>>()?;
    let run_level =
        |product: ConvProduct, (_, x, dy, w, b): &(usize, Tensor, Tensor, Tensor, Tensor)| {
            match product {
                ConvProduct::Forward => conv2d(x, w, b, 1),
                ConvProduct::InputGrad => conv2d_input_grad(dy, w, 1),
                ConvProduct::WeightGrad => conv2d_weight_grad(x, dy, 3, 1),
            }
        };
    // The scalar kernels are far slower and never chosen by the rule where a SIMD path exists;
    // they are timed only where they run (no SIMD, or forced by UNET_CPU_KERNELS).
    let chosen = process_kernel_paths();
    let runs_generic =
        [chosen.forward, chosen.input_grad, chosen.weight_grad].contains(&GemmPath::Generic);
    let paths: Vec<GemmPath> = GemmPath::ALL
        .into_iter()
        .filter(|&p| p.available())
        .filter(|&p| p != GemmPath::Generic || runs_generic)
        .collect();
    let variant_name = |path: GemmPath, algorithm: ConvAlgorithm| match algorithm {
        ConvAlgorithm::Im2col => path.name().to_string(),
        ConvAlgorithm::Winograd => format!("{path}_{algorithm}"),
    };
    let variants: Vec<(GemmPath, ConvAlgorithm)> = paths
        .iter()
        .flat_map(|&p| ConvAlgorithm::ALL.map(|a| (p, a)))
        .collect();
    let names: Vec<String> = variants.iter().map(|&(p, a)| variant_name(p, a)).collect();
    let products = [
        ("forward", ConvProduct::Forward),
        ("input_grad", ConvProduct::InputGrad),
        ("weight_grad", ConvProduct::WeightGrad),
    ];
    // best[product][level][variant]: the fastest of the rounds, in ms.
    let mut best = vec![vec![vec![f64::INFINITY; variants.len()]; levels.len()]; products.len()];
    for round in 0..=opts.rounds {
        for (pi, &(_, product)) in products.iter().enumerate() {
            for (li, level) in levels.iter().enumerate() {
                for (i, &(path, algorithm)) in variants.iter().enumerate() {
                    let start = Instant::now();
                    with_kernel_paths(KernelPaths::all(path), || {
                        with_conv_algorithm(Some(algorithm), || run_level(product, level))
                    })?;
                    // Round 0 warms the caches and scratch buffers up and is not kept.
                    if round > 0 {
                        let ms = start.elapsed().as_secs_f64() * 1e3;
                        best[pi][li][i] = best[pi][li][i].min(ms);
                    }
                }
            }
        }
    }
    let fastest = |times: &[f64]| {
        names
            .iter()
            .zip(times)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(name, _)| name.clone())
    };
    let mut results = serde_json::Map::new();
    for ((name, product), per_level) in products.iter().zip(&best) {
        let path = chosen.of(*product);
        // The variant the rule (or a forced choice) takes at each level.
        let picks: Vec<usize> = levels
            .iter()
            .map(|(c, ..)| {
                let pick = (path, conv_algorithm(*product, *c, *c, 3));
                variants
                    .iter()
                    .position(|&v| v == pick)
                    .expect("every chosen path is timed")
            })
            .collect();
        let totals: Vec<f64> = (0..variants.len())
            .map(|i| per_level.iter().map(|t| t[i]).sum())
            .collect();
        let mut entry = serde_json::Map::new();
        for (variant, ms) in names.iter().zip(&totals) {
            entry.insert(format!("{variant}_ms"), serde_json::json!(ms));
        }
        entry.insert("fastest".into(), serde_json::json!(fastest(&totals)));
        entry.insert("chosen".into(), serde_json::json!(path.name()));
        let chosen_ms: f64 = per_level.iter().zip(&picks).map(|(t, &i)| t[i]).sum();
        entry.insert("chosen_ms".into(), serde_json::json!(chosen_ms));
        let levels: Vec<serde_json::Value> = per_level
            .iter()
            .zip(&levels)
            .zip(&picks)
            .map(|((times, (c, x, ..)), &pick)| {
                let mut level = serde_json::Map::new();
                level.insert("channels".into(), serde_json::json!(c));
                level.insert("side".into(), serde_json::json!(x.dim(2).unwrap_or(0)));
                for (variant, ms) in names.iter().zip(times) {
                    level.insert(format!("{variant}_ms"), serde_json::json!(ms));
                }
                level.insert("fastest".into(), serde_json::json!(fastest(times)));
                level.insert("chosen".into(), serde_json::json!(names[pick]));
                level.into()
            })
            .collect();
        entry.insert("levels".into(), levels.into());
        results.insert((*name).into(), entry.into());
    }
    let line = serde_json::json!({
        "mode": "kernels",
        "size": opts.size,
        "threads": rayon::current_num_threads(),
        "rounds": opts.rounds,
        "products": results,
        "cpu": cpu_info().to_json(),
        "rule": KernelPaths::rule_for(cpu_info()).to_json(),
        "conv": unet_model::kernels::winograd::conv_choice_json(),
    });
    println!("{line}");
    Ok(())
}
