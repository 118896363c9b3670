//! `unet predict`: P(cell) for every pixel of a TIFF stack, a PNG or a directory of them, by
//! overlap-tile prediction with a trained checkpoint (every class's probability, or the most
//! probable class, for a model of more than two classes); OME-Zarr volumes go block by block
//! through [`crate::volume`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use unet_data::{
    read_channels, read_png_grey, write_channels, write_png_grey, write_stack, AnyStack,
    ChannelStack, Stack,
};
use unet_metrics::argmax_classes;
use unet_model::tiling::TileOptions;
use unet_model::{overlap_tile_predict, overlap_tile_predict_probs, Blend, Normalisation};

use crate::builtin::open_model;
use crate::device::DeviceArg;

/// Blending of overlapping tiles (same-padding models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BlendArg {
    /// A hard cut in the middle of each overlap.
    None,
    /// A linear cross-fade over the overlap.
    Linear,
    /// Gaussian weights (sigma = tile / 8).
    Gaussian,
}

/// The file format of `--input` and `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// TIFF stacks (PNG and directories of them in).
    Tiff,
    /// OME-Zarr volumes, predicted block by block.
    Zarr,
}

/// Flags of `unet predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The checkpoint: `*.safetensors` with its `*.json` sidecar [default: the built-in default
    /// model, models/default; `unet model --default` describes it].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The image: a TIFF stack (8-bit, 16-bit or 32-bit float grey), a PNG, or a directory of
    /// those (sorted by name; all pages must have the same size); or an OME-Zarr volume,
    /// `VOL.zarr` or `VOL.zarr/ARRAY` (uint8, uint16, float16/32/64; axes (c,) z, y, x).
    #[arg(long, required_unless_present = "status")]
    pub input: Option<PathBuf>,
    /// Where to write P(cell): a 32-bit float TIFF stack, one page per input page (the ISBI 2012
    /// submission format); or, for a volume, an OME-Zarr store `OUT.zarr`, written block by
    /// block, resumable and shared by the workers of a job array (README, "Volumes"). For a
    /// model of K > 2 classes: every class's probability, an ImageJ hyperstack of K channels
    /// (one page per class per input page).
    #[arg(long)]
    pub out: PathBuf,
    /// Write the most probable class of every pixel instead of probabilities: an 8-bit
    /// class-index TIFF (16-bit above 256 classes), one page per input page; for an OME-Zarr
    /// volume, a uint8 class volume.
    #[arg(long)]
    pub argmax: bool,
    /// The format of `--input` and `--out` [default: zarr when a path has a `.zarr` component,
    /// else tiff].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Replace `--out` (and `--binary`) when they exist [default: an existing output is
    /// refused]. Not for OME-Zarr stores, which reruns resume.
    #[arg(long)]
    pub overwrite: bool,
    /// Test-time augmentation: average over the 8 flips and 90-degree rotations (8x slower).
    #[arg(long)]
    pub tta: bool,
    /// Also write the thresholded map, 8-bit, 255 = cell: `.tif` for a stack; `.png` for one page
    /// (several pages give `NAME-000.png`, `NAME-001.png`, ...).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Threshold of the binary map: cell where P(cell) > t.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub threshold: f32,
    /// The compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Output tile size in pixels (rounded down to a size the model takes). 512 covers an ISBI
    /// section in one tile: for same-padding nets, fewer tile edges score better
    /// (docs/RESULTS.md).
    #[arg(long, default_value_t = 512)]
    pub tile: usize,
    /// Tiles per forward pass: bounds memory.
    #[arg(long, default_value_t = TileOptions::default().batch_size)]
    pub batch: usize,
    /// Overlap of neighbouring tiles in pixels (same-padding models only).
    #[arg(long, default_value_t = TileOptions::default().overlap)]
    pub overlap: usize,
    /// Blending of overlapping tiles (same-padding models only).
    #[arg(long, value_enum, default_value_t = BlendArg::Gaussian)]
    pub blend: BlendArg,
    /// The volume options (OME-Zarr only).
    #[command(flatten)]
    pub volume: crate::volume::VolumeArgs,
}

impl PredictArgs {
    /// The tiling the flags ask for.
    pub fn tile_options(&self) -> TileOptions {
        TileOptions {
            output_tile: self.tile,
            overlap: self.overlap,
            batch_size: self.batch,
            blend: match self.blend {
                BlendArg::None => Blend::None,
                BlendArg::Linear => Blend::Linear,
                BlendArg::Gaussian => Blend::Gaussian,
            },
            tta: self.tta,
        }
    }
}

/// Grey sections scaled to [0, 1] (8-bit / 255, 16-bit / 65535, float as stored), one plane
/// per channel ([`read_channels`]: samples per pixel, ImageJ or OME-TIFF channels).
struct Pages {
    height: usize,
    width: usize,
    channels: usize,
    /// Per page: `channels` planes of `height * width`.
    pages: Vec<Vec<f32>>,
    /// Whether float pages hold values outside [0, 1].
    float_out_of_range: bool,
}

impl Pages {
    fn push(&mut self, source: &Path, stack: &ChannelStack) -> Result<()> {
        let (pages, height, width, samples) = (
            stack.sections(),
            stack.height(),
            stack.width(),
            stack.channels(),
        );
        if self.pages.is_empty() {
            (self.height, self.width, self.channels) = (height, width, samples);
        } else if (height, width, samples) != (self.height, self.width, self.channels) {
            bail!(
                "{}: {height}x{width} pixels with {samples} channel(s), the first input has \
                 {}x{} with {}; all pages must have the same size",
                source.display(),
                self.height,
                self.width,
                self.channels
            );
        }
        if let AnyStack::F32(s) = stack.planes() {
            self.float_out_of_range |= s.as_slice().iter().any(|v| !(0.0..=1.0).contains(v));
        }
        self.pages.extend((0..pages).map(|p| stack.unit_section(p)));
        Ok(())
    }
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "tif" | "tiff" | "png"))
}

/// Reads one file, TIFF or PNG by its first bytes.
fn read_image_file(path: &Path, pages: &mut Pages) -> Result<()> {
    let mut magic = [0u8; 8];
    let head = {
        use std::io::Read;
        let mut f =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let n = f
            .read(&mut magic)
            .with_context(|| format!("reading {}", path.display()))?;
        &magic[..n]
    };
    let stack = if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        let (h, w, pixels) = read_png_grey(path)?;
        ChannelStack::from(Stack::new(1, h, w, pixels)?)
    } else if matches!(
        head.get(..4),
        Some(b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+")
    ) {
        read_channels(path)?
    } else {
        bail!(
            "{}: not an image (neither a TIFF nor a PNG file; it starts with {head:02x?})",
            path.display()
        );
    };
    pages.push(path, &stack)
}

fn read_input(input: &Path) -> Result<Pages> {
    let mut pages = Pages {
        height: 0,
        width: 0,
        channels: 0,
        pages: Vec::new(),
        float_out_of_range: false,
    };
    if input.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("listing {}", input.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", input.display()))?;
        files.retain(|p| p.is_file() && is_image_name(p));
        files.sort();
        if files.is_empty() {
            bail!(
                "{}: no .tif, .tiff or .png image in this directory",
                input.display()
            );
        }
        for file in &files {
            read_image_file(file, &mut pages)?;
        }
    } else {
        read_image_file(input, &mut pages)?;
    }
    Ok(pages)
}

/// One warning line per channel whose grey statistics lie far from the training sections' (a
/// standard deviation under half or over twice theirs, or a mean more than one of their
/// standard deviations away): the most common cause of a prediction that segments nothing.
fn warn_if_far_from_training(
    input: &Path,
    pages: &[Vec<f32>],
    channels: usize,
    normalisation: &Normalisation,
) {
    let fitted: Vec<(f64, f64)> = match normalisation {
        &Normalisation::Dataset { mean, std } => vec![(mean, std); channels],
        Normalisation::DatasetPerChannel { mean, std } => {
            mean.iter().copied().zip(std.iter().copied()).collect()
        }
        _ => return,
    };
    for (c, &(mean, std)) in fitted.iter().enumerate() {
        let plane = |page: &Vec<f32>| {
            let n = page.len() / channels;
            page[c * n..(c + 1) * n].to_vec()
        };
        let values: Vec<f32> = pages.iter().flat_map(plane).collect();
        let n = values.len().max(1) as f64;
        let m = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - m).powi(2))
            .sum::<f64>()
            / n;
        let s = var.sqrt();
        if s < 0.5 * std || s > 2.0 * std || (m - mean).abs() > std {
            let which = match channels {
                1 => String::new(),
                _ => format!(" channel {c}"),
            };
            eprintln!(
                "warning: {}{which}: grey mean {m:.3}, std {s:.3} (in [0, 1] units), far from \
                 the training sections' mean {mean:.3}, std {std:.3}; the prediction may fail \
                 (`unet robustness` shows how the model copes with such shifts)",
                input.display()
            );
        }
    }
}

fn write_binary(path: &Path, prob: &Stack<f32>, threshold: f32) -> Result<()> {
    let binary = prob.map(|p| if p > threshold { 255u8 } else { 0 });
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Ok(write_stack(path, &binary)?);
    }
    let (h, w) = (binary.height(), binary.width());
    if binary.pages() == 1 {
        return Ok(write_png_grey(path, h, w, binary.page(0))?);
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("binary");
    for p in 0..binary.pages() {
        let file = path.with_file_name(format!("{stem}-{p:03}.png"));
        write_png_grey(&file, h, w, binary.page(p))?;
    }
    Ok(())
}

/// Refuses an output that exists (unless `overwrite`), and one that cannot be written, before
/// any work is done: its directory is created if missing and a probe file written there.
pub fn check_output(path: &Path, overwrite: bool) -> Result<()> {
    if path.exists() && !overwrite {
        bail!(
            "{} exists; pass --overwrite to replace it, or choose another --out",
            path.display()
        );
    }
    if path.is_dir() {
        bail!("{} is a directory; --out names a file", path.display());
    }
    let probe = unet_data::temp_path_for(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot write {}: creating its directory", path.display()))?;
    }
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "cannot write {} (its directory is not writable)",
            path.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Whether a path names a Zarr store: a component ends in `.zarr`.
fn is_zarr_path(path: &Path) -> bool {
    path.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|s| s.to_ascii_lowercase().ends_with(".zarr"))
    })
}

/// Predict and write.
pub fn run(args: &PredictArgs) -> Result<()> {
    let format = args.format.unwrap_or(
        if is_zarr_path(&args.out) || args.input.as_deref().is_some_and(is_zarr_path) {
            FormatArg::Zarr
        } else {
            FormatArg::Tiff
        },
    );
    if format == FormatArg::Zarr {
        return crate::volume::run(args);
    }
    if args.volume.status || args.volume.is_set() {
        bail!(
            "--status, --zarr-version, --dtype, --chunks, --block, --blocks and --workers are for \
             OME-Zarr volumes (an --out ending in .zarr, or --format zarr)"
        );
    }
    let input_path = args.input.as_deref().context("--input is needed")?;
    check_output(&args.out, args.overwrite)?;
    if let Some(binary) = &args.binary {
        check_output(binary, args.overwrite)?;
        if args.argmax {
            bail!("--binary and --argmax: --argmax already writes the class of every pixel");
        }
    }
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!("--threshold {} is not in [0, 1]", args.threshold);
    }
    let device = args.device.open()?;
    let (model, meta, model_name) = open_model(args.model.as_deref(), &device)?;
    let cfg = model.config().clone();
    let k = cfg.n_classes;
    if k > 2 && args.binary.is_some() {
        bail!(
            "--binary thresholds P(cell) of a two-class model; {model_name} has {k} classes: \
             --argmax writes the most probable class of every pixel"
        );
    }
    let mut input = read_input(input_path)?;
    if input.channels != cfg.in_channels {
        bail!(
            "{}: {} channel(s) a section, but the model {} takes {} input channel(s)",
            input_path.display(),
            input.channels,
            model_name,
            cfg.in_channels
        );
    }
    if input.float_out_of_range {
        eprintln!(
            "warning: {} holds float values outside [0, 1]; they are used as grey values in \
             [0, 1] units",
            input_path.display()
        );
    }
    let normalisation = match meta.normalisation {
        Some(n) => n,
        None => {
            eprintln!(
                "warning: {model_name} records no input normalisation; standardising each page \
                 by its own mean and std"
            );
            Normalisation::PerImage
        }
    };
    warn_if_far_from_training(input_path, &input.pages, input.channels, &normalisation);
    let opts = args.tile_options();
    let (h, w, n) = (input.height, input.width, input.pages.len());
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} pages, {elapsed} (eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("predicting");
    let started = Instant::now();
    let mut prob = Vec::new();
    let mut classes = Vec::new();
    for (p, page) in input.pages.iter_mut().enumerate() {
        normalisation.apply(page, input.channels);
        let context = || format!("{} page {p}", input_path.display());
        if k > 2 || args.argmax {
            let probs =
                overlap_tile_predict_probs(&model, page, h, w, &opts).with_context(context)?;
            if args.argmax {
                classes.extend(argmax_classes(&probs, k).with_context(context)?);
            } else {
                prob.extend(probs);
            }
        } else {
            let cell = overlap_tile_predict(&model, page, h, w, &opts).with_context(context)?;
            prob.extend(cell);
        }
        *page = Vec::new();
        bar.inc(1);
    }
    bar.finish_and_clear();
    let writing = || format!("writing {}", args.out.display());
    let (what, tta) = (
        if args.argmax {
            format!("the most probable of {k} classes")
        } else if k > 2 {
            format!("the probabilities of {k} classes")
        } else {
            "P(cell)".to_string()
        },
        if args.tta { " (8-fold TTA)" } else { "" },
    );
    let done = || {
        println!(
            "wrote {what} of {n} page(s) of {h}x{w} to {} in {:.1} s{tta}",
            args.out.display(),
            started.elapsed().as_secs_f64(),
        )
    };
    if args.argmax {
        if k <= 256 {
            let bytes = classes.iter().map(|&c| c as u8).collect();
            write_stack(&args.out, &Stack::new(n, h, w, bytes)?).with_context(writing)?;
        } else {
            write_stack(&args.out, &Stack::new(n, h, w, classes)?).with_context(writing)?;
        }
        done();
        return Ok(());
    }
    if k > 2 {
        let stack = ChannelStack::new(k, Stack::new(n * k, h, w, prob)?)?;
        write_channels(&args.out, &stack).with_context(writing)?;
        done();
        return Ok(());
    }
    let prob = Stack::new(n, h, w, prob)?;
    write_stack(&args.out, &prob).with_context(writing)?;
    if let Some(path) = &args.binary {
        write_binary(path, &prob, args.threshold)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    done();
    Ok(())
}
