//! `unet bench`: times a training step or a forward pass of a preset U-Net on random data and
//! prints one JSON line (median / min / max milliseconds and the convolutions' GFLOP/s), the
//! counterpart of `../shared/bench/torch_unet.py train|fwd big|small`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::{Args, Subcommand};
use unet_model::{Adam, AdamParams, Loss, Optimizer, Padding, Preset, UNet, UNetConfig};

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
    /// Use candle's stock ops instead of the fast CPU kernels.
    #[arg(long)]
    stock: bool,
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

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = UNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    model.init_seeded(0)?;
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

    let mut once = || -> Result<()> {
        if train {
            let logits = model.forward_t(&x, true)?;
            let loss = Loss::CrossEntropy.compute(&logits, &targets, Some(&weights))?;
            let grads = loss.backward()?;
            optimizer.step(&grads)?;
            // Wait for the value, as PyTorch's `loss.item()` does.
            loss.to_scalar::<f32>()?;
        } else {
            model.forward_t(&x, false)?;
        }
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
    let flops = conv_flops(&cfg, size) * opts.batch as f64 * if train { 3.0 } else { 1.0 };
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

/// Floating-point operations of the forward convolutions (3x3, up-convolutions, classifier) of
/// one image of `size` pixels: 2 per multiply-add.
fn conv_flops(cfg: &UNetConfig, size: usize) -> f64 {
    let shrink = match cfg.padding {
        Padding::Valid => 2,
        Padding::Same => 0,
    };
    let conv = |c_in: usize, c_out: usize, out: usize, k: usize| {
        2.0 * (out * out) as f64 * (c_in * c_out * k * k) as f64
    };
    let mut s = size;
    let mut c = cfg.in_channels;
    let mut flops = 0.0;
    for level in 0..cfg.depth {
        let w = cfg.width(level);
        s -= shrink;
        flops += conv(c, w, s, 3);
        s -= shrink;
        flops += conv(w, w, s, 3);
        c = w;
        if level + 1 < cfg.depth {
            s /= 2;
        }
    }
    for level in (0..cfg.depth - 1).rev() {
        let w = cfg.width(level);
        s *= 2;
        // Each output pixel of the 2x2 stride-2 up-conv sees one input pixel: the cost of a
        // 1x1 conv at the output size, as is the bilinear variant's 1x1 conv.
        flops += conv(c, w, s, 1);
        s -= shrink;
        flops += conv(2 * w, w, s, 3);
        s -= shrink;
        flops += conv(w, w, s, 3);
        c = w;
    }
    flops + conv(c, cfg.n_classes, s, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_flops_of_the_small_preset_at_one_pixel_per_level() {
        // A depth-2 same-padding net with widths 1 and 2 at 2x2 input, by hand:
        // down0: 1->1 and 1->1 at 2x2 (2 * 4 * 9 each); down1: 1->2, 2->2 at 1x1;
        // up-conv 2->1 at 2x2 (2 * 4 * 2); up0: 2->1, 1->1 at 2x2; classifier 1->2 at 2x2.
        let cfg = UNetConfig {
            in_channels: 1,
            n_classes: 2,
            depth: 2,
            base_width: 1,
            padding: Padding::Same,
            batch_norm: true,
            dropout: 0.0,
            upsampling: unet_model::Upsampling::Transposed,
        };
        let want = 2.0 * 4.0 * 9.0 * 2.0
            + 2.0 * 9.0 * (2.0 + 4.0)
            + 2.0 * 4.0 * 2.0
            + 2.0 * 4.0 * 9.0 * (2.0 + 1.0)
            + 2.0 * 4.0 * 2.0;
        assert_eq!(conv_flops(&cfg, 2), want);
    }
}
