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
    read_channels, read_png_grey, write_png_grey, AnyStack, ChannelStack, Stack, TiffSectionWriter,
    TiffSections,
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
    /// N5 volumes, predicted block by block (as Zarr; an N5 output for an --out without a
    /// `.zarr` or `.n5` component).
    N5,
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
    /// `VOL.zarr` or `VOL.zarr/ARRAY` (uint8, uint16, float16/32/64; axes (c,) z, y, x); or an
    /// N5 volume, `VOL.n5/DATASET` or a multiscale `VOL.n5` (its s0; uint8, uint16, float32/64;
    /// N5 axes x, y, z (, c)).
    #[arg(long, required_unless_present = "status")]
    pub input: Option<PathBuf>,
    /// Where to write P(cell): a 32-bit float TIFF stack, one page per input page (the ISBI 2012
    /// submission format); or, for a volume, an OME-Zarr store `OUT.zarr` or an N5 container
    /// `OUT.n5` (for Fiji's N5 plugins, BigDataViewer, n5-viewer), written block by block,
    /// resumable and shared by the workers of a job array (README, "Volumes"). For a
    /// model of K > 2 classes: every class's probability, an ImageJ hyperstack of K channels
    /// (one page per class per input page).
    #[arg(long)]
    pub out: PathBuf,
    /// Write the most probable class of every pixel instead of probabilities: an 8-bit
    /// class-index TIFF (16-bit above 256 classes), one page per input page; for an OME-Zarr
    /// volume, a uint8 class volume.
    #[arg(long)]
    pub argmax: bool,
    /// The format of `--input` and `--out` [default: zarr or n5 when a path has a `.zarr` or
    /// `.n5` component (a volume's output format is its --out's, else this flag's, else its
    /// input's), else tiff].
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
    /// Tiles per forward pass (default 1 on the CPU, 4 on a GPU): memory grows with it, and on
    /// the CPU one tile at a time is also the fastest (docs/RESULTS.md, Volumes).
    #[arg(long)]
    pub batch: Option<usize>,
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
    /// The tiling the flags ask for, on `device`.
    pub fn tile_options(&self, device: &candle_core::Device) -> TileOptions {
        TileOptions {
            output_tile: self.tile,
            overlap: self.overlap,
            batch_size: self
                .batch
                .unwrap_or_else(|| TileOptions::batch_size_for(device)),
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
    /// Whether any page is stored as floats (which may lie outside [0, 1]).
    float: bool,
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
        self.float |= matches!(stack.planes(), AnyStack::F32(_));
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
        float: false,
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

/// One warning line per channel of `section` (the input's first, `channels` planes in [0, 1]
/// units) whose grey statistics lie far from the training sections' (a standard deviation
/// under half or over twice theirs, or a mean more than one of their standard deviations away):
/// the most common cause of a prediction that segments nothing. One section tells, and the
/// warning comes before a long stack is predicted.
fn warn_if_far_from_training(
    input: &Path,
    section: &[f32],
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
    let planes = section.chunks_exact((section.len() / channels).max(1));
    for (c, (&(mean, std), values)) in fitted.iter().zip(planes).enumerate() {
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

/// The volume format a path names: Zarr when a component ends in `.zarr`, N5 when one ends in
/// `.n5` (the first such component decides: `VOL.zarr/raw.n5` is Zarr).
fn volume_format_of(path: &Path) -> Option<FormatArg> {
    path.components().find_map(|c| {
        let name = c.as_os_str().to_str()?.to_ascii_lowercase();
        if name.ends_with(".zarr") {
            Some(FormatArg::Zarr)
        } else if name.ends_with(".n5") {
            Some(FormatArg::N5)
        } else {
            None
        }
    })
}

/// The format a volume job writes: `--out`'s `.zarr` or `.n5` component, else `--format`,
/// else the input's format, else Zarr.
pub fn volume_output_format(args: &PredictArgs) -> FormatArg {
    volume_format_of(&args.out)
        .or(args.format.filter(|f| *f != FormatArg::Tiff))
        .or_else(|| args.input.as_deref().and_then(volume_format_of))
        .unwrap_or(FormatArg::Zarr)
}

/// Predict and write.
pub fn run(args: &PredictArgs) -> Result<()> {
    let format = args.format.unwrap_or_else(|| {
        volume_format_of(&args.out)
            .or_else(|| args.input.as_deref().and_then(volume_format_of))
            .unwrap_or(FormatArg::Tiff)
    });
    if format != FormatArg::Tiff {
        return crate::volume::run(args);
    }
    if args.volume.status || args.volume.is_set() {
        bail!(
            "--status, --zarr-version, --dtype, --chunks, --block, --blocks, --workers, \
             --pyramid and --daisy-worker are for volumes (an --out ending in .zarr or .n5, or \
             --format zarr or n5)"
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
    let mut input = Input::open(input_path)?;
    if input.channels() != cfg.in_channels {
        bail!(
            "{}: {} channel(s) a section, but the model {} takes {} input channel(s)",
            input_path.display(),
            input.channels(),
            model_name,
            cfg.in_channels
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
    let opts = args.tile_options(&device);
    let (h, w, n, channels) = (
        input.height(),
        input.width(),
        input.sections(),
        input.channels(),
    );
    // Section by section: read, predict, write, so memory holds one section whatever the
    // stack's size.
    let mut out = Output::create(&args.out, n, h, w, k, args.argmax)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let mut binary = match &args.binary {
        Some(path) => Some(
            BinaryOutput::create(path, n, h, w)
                .with_context(|| format!("writing {}", path.display()))?,
        ),
        None => None,
    };
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} pages, {elapsed} (eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("predicting");
    let started = Instant::now();
    let mut warned_out_of_range = false;
    for p in 0..n {
        let context = || format!("{} page {p}", input_path.display());
        let mut section = input.section(p).with_context(context)?;
        if input.is_float()
            && !warned_out_of_range
            && section.iter().any(|v| !(0.0..=1.0).contains(v))
        {
            bar.suspend(|| {
                eprintln!(
                    "warning: {} holds float values outside [0, 1]; they are used as grey \
                     values in [0, 1] units",
                    input_path.display()
                )
            });
            warned_out_of_range = true;
        }
        if p == 0 {
            bar.suspend(|| {
                warn_if_far_from_training(input_path, &section, channels, &normalisation)
            });
        }
        normalisation.apply(&mut section, channels);
        if k > 2 || args.argmax {
            let probs =
                overlap_tile_predict_probs(&model, &section, h, w, &opts).with_context(context)?;
            if args.argmax {
                out.write_classes(&argmax_classes(&probs, k).with_context(context)?)
            } else {
                out.write_probabilities(&probs)
            }
        } else {
            let cell = overlap_tile_predict(&model, &section, h, w, &opts).with_context(context)?;
            if let (Some(binary), Some(path)) = (binary.as_mut(), &args.binary) {
                binary
                    .write(&cell, args.threshold)
                    .with_context(|| format!("writing {} page {p}", path.display()))?;
            }
            out.write_probabilities(&cell)
        }
        .with_context(|| format!("writing {} page {p}", args.out.display()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.finish()
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let (Some(binary), Some(path)) = (binary, &args.binary) {
        binary
            .finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let what = if args.argmax {
        format!("the most probable of {k} classes")
    } else if k > 2 {
        format!("the probabilities of {k} classes")
    } else {
        "P(cell)".to_string()
    };
    println!(
        "wrote {what} of {n} page(s) of {h}x{w} to {} in {:.1} s{} on {}",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        if args.tta { " (8-fold TTA)" } else { "" },
        crate::device::describe(&device),
    );
    Ok(())
}

/// The sections to predict: a TIFF file read section by section ([`TiffSections`]: memory
/// holds one section, whatever the file's size, BigTIFF included), or images held in memory
/// (PNG files, a directory of images).
enum Input {
    Streamed(Box<TiffSections>),
    Held(Pages),
}

impl Input {
    fn open(path: &Path) -> Result<Self> {
        if path.is_file() && is_tiff(path)? {
            return Ok(Input::Streamed(Box::new(TiffSections::open(path)?)));
        }
        Ok(Input::Held(read_input(path)?))
    }

    fn sections(&self) -> usize {
        match self {
            Input::Streamed(t) => t.sections(),
            Input::Held(p) => p.pages.len(),
        }
    }

    fn height(&self) -> usize {
        match self {
            Input::Streamed(t) => t.height(),
            Input::Held(p) => p.height,
        }
    }

    fn width(&self) -> usize {
        match self {
            Input::Streamed(t) => t.width(),
            Input::Held(p) => p.width,
        }
    }

    fn channels(&self) -> usize {
        match self {
            Input::Streamed(t) => t.channels(),
            Input::Held(p) => p.channels,
        }
    }

    /// Whether the values are stored as floats (which may lie outside [0, 1]).
    fn is_float(&self) -> bool {
        match self {
            Input::Streamed(t) => t.pixel_type() == "32-bit float",
            Input::Held(p) => p.float,
        }
    }

    /// Section `s` in [0, 1] units, channel plane after channel plane; a held section is
    /// handed over (each is read once).
    fn section(&mut self, s: usize) -> Result<Vec<f32>> {
        Ok(match self {
            Input::Streamed(t) => t.read_unit_section(s)?,
            Input::Held(p) => std::mem::take(&mut p.pages[s]),
        })
    }
}

/// Whether the file starts as a TIFF or BigTIFF does.
fn is_tiff(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(matches!(
        &magic[..n],
        b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+"
    ))
}

/// Where the prediction goes, section by section: probabilities (P(cell), or `K` planes a
/// section as an ImageJ hyperstack) as 32-bit float, or classes as 8-bit (16-bit above 256
/// classes); written to a temporary file renamed into place by [`Output::finish`].
enum Output {
    Probabilities(TiffSectionWriter<f32>),
    Classes8(TiffSectionWriter<u8>),
    Classes16(TiffSectionWriter<u16>),
}

impl Output {
    fn create(
        path: &Path,
        sections: usize,
        height: usize,
        width: usize,
        classes: usize,
        argmax: bool,
    ) -> Result<Self> {
        // P(cell) of a two-class model is one plane a section; K > 2 classes are K planes.
        let planes = if classes == 2 { 1 } else { classes };
        Ok(match (argmax, classes) {
            (true, k) if k <= 256 => {
                Output::Classes8(TiffSectionWriter::create(path, sections, 1, height, width)?)
            }
            (true, _) => {
                Output::Classes16(TiffSectionWriter::create(path, sections, 1, height, width)?)
            }
            (false, _) => Output::Probabilities(TiffSectionWriter::create(
                path, sections, planes, height, width,
            )?),
        })
    }

    fn write_probabilities(&mut self, planes: &[f32]) -> Result<()> {
        match self {
            Output::Probabilities(w) => Ok(w.write_section(planes)?),
            _ => bail!("an output of classes takes no probabilities"),
        }
    }

    fn write_classes(&mut self, classes: &[u16]) -> Result<()> {
        match self {
            Output::Classes8(w) => {
                let bytes: Vec<u8> = classes.iter().map(|&c| c as u8).collect();
                Ok(w.write_section(&bytes)?)
            }
            Output::Classes16(w) => Ok(w.write_section(classes)?),
            Output::Probabilities(_) => bail!("an output of probabilities takes no classes"),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Output::Probabilities(w) => w.finish()?,
            Output::Classes8(w) => w.finish()?,
            Output::Classes16(w) => w.finish()?,
        }
        Ok(())
    }
}

/// `--binary`: P(cell) > threshold as 0 / 255, a TIFF written section by section, or PNG
/// (one file a page) kept until the end.
enum BinaryOutput {
    Tiff(TiffSectionWriter<u8>),
    Png {
        path: PathBuf,
        height: usize,
        width: usize,
        pages: Vec<Vec<u8>>,
    },
}

impl BinaryOutput {
    fn create(path: &Path, sections: usize, height: usize, width: usize) -> Result<Self> {
        let is_png = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        Ok(match is_png {
            true => BinaryOutput::Png {
                path: path.to_path_buf(),
                height,
                width,
                pages: Vec::new(),
            },
            false => {
                BinaryOutput::Tiff(TiffSectionWriter::create(path, sections, 1, height, width)?)
            }
        })
    }

    fn write(&mut self, p_cell: &[f32], threshold: f32) -> Result<()> {
        let binary: Vec<u8> = p_cell
            .iter()
            .map(|&p| if p > threshold { 255 } else { 0 })
            .collect();
        match self {
            BinaryOutput::Tiff(w) => w.write_section(&binary)?,
            BinaryOutput::Png { pages, .. } => pages.push(binary),
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            BinaryOutput::Tiff(w) => w.finish()?,
            BinaryOutput::Png {
                path,
                height,
                width,
                pages,
            } => {
                if let [page] = pages.as_slice() {
                    return Ok(write_png_grey(&path, height, width, page)?);
                }
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("binary");
                for (p, page) in pages.iter().enumerate() {
                    let file = path.with_file_name(format!("{stem}-{p:03}.png"));
                    write_png_grey(&file, height, width, page)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_path_names_its_format_by_its_first_store_component() {
        for (path, want) in [
            ("em.zarr", Some(FormatArg::Zarr)),
            ("em.zarr/0", Some(FormatArg::Zarr)),
            ("/data/EM.N5/raw", Some(FormatArg::N5)),
            ("em.zarr/raw.n5", Some(FormatArg::Zarr)),
            ("em.n5/raw.zarr", Some(FormatArg::N5)),
            ("stack.tif", None),
            ("plain", None),
        ] {
            assert_eq!(volume_format_of(Path::new(path)), want, "{path}");
        }
    }
}
