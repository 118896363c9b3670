//! `unet predict` on OME-Zarr volumes: block by block, resumable, split over the workers of a
//! job array (Slurm, Kubernetes Indexed Jobs, or `--blocks i/N` by hand).
//!
//! Each block is whole output chunks in (z, y, x). Its sections are read with the context the
//! overlap-tile rule needs (`unet_model::tiling::window_input`: real neighbouring voxels inside
//! the volume, mirrored only at its true border) and predicted with the whole section's tile
//! layout (`overlap_tile_predict_window`), so a block holds the numbers `unet predict` gives for
//! the whole section. The store, its block grid and done-markers are `unet_data::zarr`'s.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};
use unet_data::zarr::{
    worker_blocks, BlockGrid, BlockStore, OutputSpec, OutputType, StoreFormat, Volume, ZarrVersion,
};
use unet_metrics::argmax_classes;
use unet_model::tiling::{window_input, TileOptions};
use unet_model::{
    overlap_tile_predict_window, overlap_tile_predict_window_probs, Normalisation, PlaneStats,
    UNet, Window,
};

use crate::builtin::{checkpoint_bytes, open_model};
use crate::daisy::{DaisyClient, DaisyContext, Roi};
use crate::predict::{volume_output_format, FormatArg, PredictArgs};

/// The voxel type of a Zarr output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// round(P x 255).
    U8,
    /// P in half precision.
    F16,
    /// P as computed.
    F32,
}

/// The flags of `unet predict` that only OME-Zarr volumes take.
#[derive(Debug, Args)]
pub struct VolumeArgs {
    /// Print how many blocks of the store `--out` are done, of how many, and exit.
    #[arg(long)]
    pub status: bool,
    /// The output's Zarr format: 2 (OME-Zarr 0.4; what napari-ome-zarr, MoBIE and neuroglancer
    /// open today) or 3 (OME-Zarr 0.5, one shard per block). Not for an N5 output.
    #[arg(long, value_parser = ["2", "3"])]
    pub zarr_version: Option<String>,
    /// The output's voxel type: u8 (round(P x 255)), f16 (Zarr only) or f32 [default: u8].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// The output's chunk shape Z,Y,X [default: the input's chunk shape, within the volume].
    #[arg(long, value_name = "Z,Y,X")]
    pub chunks: Option<String>,
    /// The block shape Z,Y,X in voxels, rounded up to whole chunks: the unit of work, resumption
    /// and memory [default: one chunk deep, 2048 x 2048].
    #[arg(long, value_name = "Z,Y,X")]
    pub block: Option<String>,
    /// This worker's share: every block b with b % N == I [default: from SLURM_ARRAY_TASK_ID
    /// minus SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT, else Kubernetes'
    /// JOB_COMPLETION_INDEX of --workers, else all blocks].
    #[arg(long, value_name = "I/N")]
    pub blocks: Option<String>,
    /// The number of workers of a Kubernetes Indexed Job (its `completions`), with
    /// JOB_COMPLETION_INDEX [default: $UNET_WORKERS].
    #[arg(long, value_name = "N")]
    pub workers: Option<u64>,
    /// Add N levels downsampled 2x, 4x, ... 2^N in y and x (not z) for viewing: arrays 1..=N
    /// beside 0, each block writing its own part of each level (probabilities: 2 x 2 means;
    /// --argmax classes: the top-left voxel). The y and x chunk sizes must be multiples of 2^N
    /// [default: 0, full resolution only].
    #[arg(long, value_name = "N")]
    pub pyramid: Option<u32>,
    /// Take blocks from a daisy 2.0 scheduler (funkelab's blockwise task scheduler) instead of
    /// a share of the grid: the worker finds it through DAISY_CONTEXT, as daisy's own workers
    /// do. The daisy Task's write_roi and read_roi are the --block shape in voxels (z, y, x) and
    /// its total_roi the volume; see docs/volumes/predict_with_daisy.py.
    #[arg(long, conflicts_with_all = ["blocks", "workers", "status"])]
    pub daisy_worker: bool,
}

impl VolumeArgs {
    /// Whether any flag of a volume job is given (they make no sense for TIFF).
    pub fn is_set(&self) -> bool {
        self.zarr_version.is_some()
            || self.dtype.is_some()
            || self.chunks.is_some()
            || self.block.is_some()
            || self.blocks.is_some()
            || self.workers.is_some()
            || self.pyramid.is_some()
            || self.daisy_worker
    }
}

/// `Z,Y,X` as three positive numbers.
fn parse_zyx(flag: &str, text: &str) -> Result<[usize; 3]> {
    let parts: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--{flag} {text}: expected Z,Y,X (three whole numbers)"))?;
    match parts[..] {
        [z, y, x] if z > 0 && y > 0 && x > 0 => Ok([z, y, x]),
        _ => bail!("--{flag} {text}: expected Z,Y,X, three numbers of at least 1"),
    }
}

/// This worker's index and the number of workers: `--blocks I/N`, else a Slurm array task,
/// else a Kubernetes Indexed Job's completion index with `--workers`; else the only worker.
fn worker_share(args: &VolumeArgs, env: impl Fn(&str) -> Option<String>) -> Result<(u64, u64)> {
    let number = |name: &str, text: &str| -> Result<u64> {
        text.trim()
            .parse()
            .with_context(|| format!("{name}={text}: not a whole number"))
    };
    let (index, count, from) = if let Some(share) = &args.blocks {
        let (i, n) = share
            .split_once('/')
            .with_context(|| format!("--blocks {share}: expected I/N, e.g. 0/4"))?;
        (number("--blocks", i)?, number("--blocks", n)?, "--blocks")
    } else if let (Some(id), Some(count)) =
        (env("SLURM_ARRAY_TASK_ID"), env("SLURM_ARRAY_TASK_COUNT"))
    {
        // `--array=1-8` numbers tasks from 1: the index is relative to the array's first task.
        let min =
            env("SLURM_ARRAY_TASK_MIN").map_or(Ok(0), |m| number("SLURM_ARRAY_TASK_MIN", &m))?;
        let id = number("SLURM_ARRAY_TASK_ID", &id)?;
        let count = number("SLURM_ARRAY_TASK_COUNT", &count)?;
        (
            id.checked_sub(min)
                .context("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?,
            count,
            "Slurm",
        )
    } else if let Some(index) = env("JOB_COMPLETION_INDEX") {
        let workers = match (args.workers, env("UNET_WORKERS")) {
            (Some(n), _) => Some(n),
            (None, Some(text)) => Some(number("UNET_WORKERS", &text)?),
            (None, None) => None,
        };
        let Some(count) = workers else {
            bail!(
                "JOB_COMPLETION_INDEX={index} is set but not the number of workers: pass \
                 --workers N (or set UNET_WORKERS) to the Indexed Job's completions"
            );
        };
        (
            number("JOB_COMPLETION_INDEX", &index)?,
            count,
            "JOB_COMPLETION_INDEX",
        )
    } else {
        (0, 1, "")
    };
    if count == 0 || index >= count {
        bail!("worker {index} of {count} (from {from}): the index must be below the count, the count at least 1");
    }
    Ok((index, count))
}

/// Whole chunks covering `wanted` voxels along each axis, within the volume.
fn round_block(wanted: [usize; 3], chunks: [usize; 3], shape: [usize; 3]) -> [u64; 3] {
    [0, 1, 2].map(|d| {
        let whole = wanted[d].div_ceil(chunks[d]) * chunks[d];
        whole.min(shape[d].div_ceil(chunks[d]) * chunks[d]) as u64
    })
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The pause between a block's data and its done-marker, for the tests that kill a worker
/// there (`UNET_TEST_PAUSE_BEFORE_MARKER_MS`): the one moment a kill must not count a block.
fn pause_before_marker() {
    if let Some(ms) = std::env::var("UNET_TEST_PAUSE_BEFORE_MARKER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// The mean and standard deviation of each channel of section `z`, as
/// `Normalisation::PerImage` computes them for the whole channel plane (rows in order), read in
/// bands of `band` rows so memory stays bounded by a band.
fn streamed_section_stats(volume: &Volume, z: usize, band: usize) -> Result<Vec<PlaneStats>> {
    let [_, height, width] = volume.shape();
    let band = band.max(1);
    let mut stats = vec![PlaneStats::default(); volume.channels()];
    for pass in 0..2 {
        for y0 in (0..height).step_by(band) {
            let rows = y0..(y0 + band).min(height);
            let plane = rows.len() * width;
            let values = volume.read_unit(z..z + 1, rows, 0..width)?;
            for (stats, part) in stats.iter_mut().zip(values.chunks_exact(plane)) {
                if pass == 0 {
                    stats.add_values(part);
                } else {
                    stats.add_deviations(part);
                }
            }
        }
    }
    Ok(stats)
}

/// `unet predict` for an OME-Zarr volume.
pub fn run(args: &PredictArgs) -> Result<()> {
    let out = &args.out;
    let v = &args.volume;
    if v.status {
        let (grid, done) = BlockStore::status(out)?;
        println!("{}: {done} / {} blocks done", out.display(), grid.len());
        return Ok(());
    }
    let Some(input) = args.input.as_deref() else {
        bail!("--input is needed");
    };
    for (given, flag) in [
        (args.tta, "--tta"),
        (args.binary.is_some(), "--binary"),
        (args.overwrite, "--overwrite"),
    ] {
        if given {
            bail!(
                "{flag} is not offered for OME-Zarr volumes (--overwrite: delete the store \
                 yourself, since the workers of a job share it; a rerun resumes)"
            );
        }
    }
    let device = args.device.open()?;
    let (model, meta, model_name) = open_model(args.model.as_deref(), &device)?;
    // What the store holds: P(cell) of a two-class model, every class's probability (a
    // channel axis) of more classes, or with --argmax the most probable class.
    let n_classes = model.config().n_classes;
    let output_channels = if args.argmax || n_classes == 2 {
        1
    } else {
        n_classes
    };
    if args.argmax && n_classes > 256 {
        bail!(
            "--argmax into an OME-Zarr volume writes uint8 classes; {model_name} has {n_classes}"
        );
    }
    if args.argmax && v.dtype.is_some() {
        bail!("--dtype is for probabilities; --argmax writes class indices as uint8");
    }
    let (bytes, _) = checkpoint_bytes(args.model.as_deref())?;
    let model_sha256 = sha256_hex(&[&bytes.sidecar, &bytes.weights]);
    let cfg = model.config().clone();
    let normalisation = match meta.normalisation {
        Some(Normalisation::Percentile { .. }) => bail!(
            "{model_name} normalises each image by its percentiles, which blockwise prediction \
             does not offer (it would sort every whole section); predict TIFF stacks with it"
        ),
        None => {
            eprintln!(
                "warning: {model_name} records no input normalisation; standardising each \
                 section by its own mean and std"
            );
            Normalisation::PerImage
        }
        Some(n) => n,
    };
    let volume = Volume::open(input)?;
    if volume.channels() != cfg.in_channels {
        bail!(
            "{}: {} channel(s), but the model {model_name} takes {}",
            input.display(),
            volume.channels(),
            cfg.in_channels
        );
    }
    let shape = volume.shape();
    let chunks = match &v.chunks {
        Some(text) => parse_zyx("chunks", text)?,
        None => volume.chunk_shape()?,
    };
    let chunks = [0, 1, 2].map(|d| chunks[d].min(shape[d]));
    let wanted = match &v.block {
        Some(text) => parse_zyx("block", text)?,
        None => [chunks[0], 2048, 2048],
    };
    let block = round_block(wanted, chunks, shape);
    let opts = args.tile_options(&device);
    let dtype = match v.dtype.unwrap_or(DtypeArg::U8) {
        _ if args.argmax => OutputType::Class,
        DtypeArg::U8 => OutputType::U8,
        DtypeArg::F16 => OutputType::F16,
        DtypeArg::F32 => OutputType::F32,
    };
    let format = match (volume_output_format(args), v.zarr_version.as_deref()) {
        (FormatArg::N5, Some(_)) => bail!(
            "--zarr-version is for Zarr outputs; {} is an N5 container",
            out.display()
        ),
        (FormatArg::N5, None) => StoreFormat::N5,
        (_, Some("3")) => StoreFormat::Zarr(ZarrVersion::V3),
        _ => StoreFormat::Zarr(ZarrVersion::V2),
    };
    let spec = OutputSpec {
        grid: BlockGrid {
            shape: shape.map(|n| n as u64),
            block,
        },
        chunks: chunks.map(|n| n as u64),
        dtype,
        channels: output_channels as u64,
        format,
        axes: volume.spatial_axes().to_vec(),
        scale: volume.spatial_scale().unwrap_or([1.0; 3]),
        // What decides the numbers: a rerun that differs here is refused, not mixed in.
        job: json!({
            "model_sha256": model_sha256,
            "tile": opts.output_tile,
            "overlap": opts.overlap,
            "blend": format!("{:?}", args.blend).to_lowercase(),
            "input_shape": shape,
            "input_channels": volume.channels(),
            "input_type": volume.voxel_type(),
        }),
        pyramid: v.pyramid.unwrap_or(0),
    };
    let store = BlockStore::create_or_open(out, &spec)?;
    let predictor = BlockPredictor {
        input,
        volume,
        model,
        normalisation,
        opts,
        n_classes,
        argmax: args.argmax,
        output_channels,
        section_stats: HashMap::new(),
        grid: store.grid(),
        device,
    };
    let mut job = BlockJob {
        predictor,
        store,
        out,
    };
    if v.daisy_worker {
        daisy_worker(&mut job)
    } else {
        array_worker(&mut job, v)
    }
}

/// One volume job of a worker: what predicts its blocks, and the store they go to.
struct BlockJob<'a> {
    predictor: BlockPredictor<'a>,
    store: BlockStore,
    /// The store's path, for messages and the summary.
    out: &'a Path,
}

/// What predicts the blocks of one volume job: the volume, the model and the options, and the
/// per-section statistics this worker has gathered.
struct BlockPredictor<'a> {
    input: &'a Path,
    volume: Volume,
    model: UNet,
    normalisation: Normalisation,
    opts: TileOptions,
    n_classes: usize,
    argmax: bool,
    output_channels: usize,
    /// Per-section statistics (`Normalisation::PerImage`), each gathered once by this worker.
    section_stats: HashMap<usize, Vec<PlaneStats>>,
    /// The store's blocks.
    grid: BlockGrid,
    /// Where the model computes (named in the summary).
    device: candle_core::Device,
}

impl BlockJob<'_> {
    /// Predicts block `id`, writes it, then its done-marker; returns its voxel count.
    fn predict_block(&mut self, id: u64) -> Result<u64> {
        let values = self.predictor.compute_block(id)?;
        store_block(&self.store, id, &values)
    }

    /// The JSON summary a worker prints at its end.
    fn summary(&self, worker: String, counts: BlockCounts, started: Instant) -> serde_json::Value {
        let seconds = started.elapsed().as_secs_f64();
        let mut summary = json!({
            "out": self.out.display().to_string(),
            "worker": worker,
            "blocks_total": self.store.grid().len(),
            "blocks_this_worker": counts.predicted + counts.skipped,
            "blocks_predicted": counts.predicted,
            "blocks_skipped": counts.skipped,
            "blocks_done_in_store": self.store.done_count(),
            "voxels_predicted": counts.voxels,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "voxels_per_second": (counts.voxels as f64 / seconds.max(1e-9)).round(),
        });
        if let Some(fields) = summary.as_object_mut() {
            fields.extend(crate::device::kernel_fields(&self.predictor.device));
        }
        summary
    }
}

impl BlockPredictor<'_> {
    /// Block `id`'s values as the store takes them: `[c][z][y][x]` over the block.
    fn compute_block(&mut self, id: u64) -> Result<Vec<f32>> {
        let cfg = self.model.config();
        let [_, height, width] = self.volume.shape();
        let channels = self.volume.channels();
        let [zs, ys, xs] = self.grid.block(id);
        let window = Window { y: ys, x: xs };
        let need = window_input(cfg, height, width, &window, &self.opts)?;
        let crop = self
            .volume
            .read_unit(zs.clone(), need.y.clone(), need.x.clone())?;
        let crop_plane = channels * need.height() * need.width();
        let plane = window.height() * window.width();
        // Per section: its output channels' planes; the block is written channel-major.
        let mut per_section = Vec::with_capacity(zs.len());
        for (k, section) in crop.chunks_exact(crop_plane).enumerate() {
            let mut section = section.to_vec();
            if self.normalisation == Normalisation::PerImage {
                let z = zs.start + k;
                let stats = match self.section_stats.entry(z) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => {
                        new.insert(streamed_section_stats(&self.volume, z, window.height())?)
                    }
                };
                let plane = need.height() * need.width();
                for (stats, values) in stats.iter().zip(section.chunks_exact_mut(plane)) {
                    stats.apply(values);
                }
            } else {
                // Fixed statistics act voxel by voxel: a crop gets the whole section's numbers.
                self.normalisation.apply(&mut section, channels);
            }
            let context = || format!("{} section {}", self.input.display(), zs.start + k);
            let (model, opts) = (&self.model, &self.opts);
            let values = if self.n_classes == 2 && !self.argmax {
                overlap_tile_predict_window(model, &section, &need, height, width, &window, opts)
                    .with_context(context)?
            } else {
                let probs = overlap_tile_predict_window_probs(
                    model, &section, &need, height, width, &window, opts,
                )
                .with_context(context)?;
                if self.argmax {
                    let classes = argmax_classes(&probs, self.n_classes).with_context(context)?;
                    classes.into_iter().map(|c| c as f32).collect()
                } else {
                    probs
                }
            };
            per_section.push(values);
        }
        let values: Vec<f32> = (0..self.output_channels)
            .flat_map(|c| {
                per_section
                    .iter()
                    .flat_map(move |s| s[c * plane..(c + 1) * plane].iter().copied())
            })
            .collect();
        Ok(values)
    }
}

/// Writes block `id` of `store` and flushes it to disk, then its done-marker; returns its
/// voxel count.
fn store_block(store: &BlockStore, id: u64, values: &[f32]) -> Result<u64> {
    store.write_block(id, values)?;
    pause_before_marker();
    store.mark_done(id)?;
    Ok(store
        .grid()
        .block(id)
        .iter()
        .map(|r| r.len() as u64)
        .product())
}

/// What one worker did.
#[derive(Debug, Default, Clone, Copy)]
struct BlockCounts {
    predicted: u64,
    skipped: u64,
    voxels: u64,
}

/// A job-array worker: its share of the blocks (`--blocks`, Slurm, Kubernetes), those not done.
fn array_worker(job: &mut BlockJob, v: &VolumeArgs) -> Result<()> {
    let (index, count) = worker_share(v, |name| std::env::var(name).ok())?;
    let grid = job.store.grid();
    let mine: Vec<u64> = worker_blocks(grid.len(), index, count).collect();
    let todo: Vec<u64> = mine
        .iter()
        .copied()
        .filter(|&id| !job.store.is_done(id))
        .collect();
    let bar = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} blocks, {elapsed} (eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut counts = BlockCounts {
        skipped: (mine.len() - todo.len()) as u64,
        ..BlockCounts::default()
    };
    // A writer thread encodes each block, flushes it to disk and marks it done while the next
    // block is predicted: the flushes (milliseconds each) wait on the disk, not on the CPU. The
    // hand-over waits for the writer, so two blocks' values are held at most.
    let (to_writer, blocks) = std::sync::mpsc::sync_channel::<(u64, Vec<f32>)>(0);
    let store = &job.store;
    let written = std::thread::scope(|scope| -> Result<u64> {
        let writer = scope.spawn(|| -> Result<u64> {
            let mut voxels = 0;
            for (id, values) in blocks {
                voxels += store_block(store, id, &values)?;
                let rate = voxels as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{:.2} Mvoxel/s", rate / 1e6));
                bar.inc(1);
            }
            Ok(voxels)
        });
        let mut predicted = Ok(());
        for &id in &todo {
            match job.predictor.compute_block(id) {
                // A closed channel: the writer failed, and says why below.
                Ok(values) => {
                    if to_writer.send((id, values)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    predicted = Err(e);
                    break;
                }
            }
        }
        drop(to_writer);
        let voxels = writer.join().expect("the block writer does not panic")?;
        predicted.map(|()| voxels)
    })?;
    counts.voxels = written;
    counts.predicted = todo.len() as u64;
    bar.finish_and_clear();
    println!(
        "{}",
        job.summary(format!("{index}/{count}"), counts, started)
    );
    Ok(())
}

/// The block of `grid` that a daisy block's write ROI (voxels, z, y, x) covers: its offset on a
/// block corner, its extent that block's (clipped to the volume, as daisy's `fit="shrink"`
/// clips, or reaching past it, as `fit="overhang"` does).
fn grid_block_of(grid: &BlockGrid, roi: &Roi) -> Result<u64> {
    let wrong = || {
        let shape = grid.shape;
        let block = grid.block;
        format!(
            "daisy block write ROI offset {:?} shape {:?} is not a block of this store (volume \
             {shape:?}, blocks {block:?} from 0): give the daisy Task write_roi and read_roi the \
             --block shape (in voxels, z, y, x) and total_roi the volume",
            roi.offset, roi.shape
        )
    };
    if roi.offset.len() != 3 || roi.shape.len() != 3 {
        bail!("{}", wrong());
    }
    let counts = grid.counts();
    let mut index = [0u64; 3];
    for d in 0..3 {
        let (offset, extent) = (roi.offset[d], roi.shape[d]);
        let block = grid.block[d] as i64;
        if offset < 0 || offset % block != 0 || extent <= 0 || (offset / block) as u64 >= counts[d]
        {
            bail!("{}", wrong());
        }
        index[d] = (offset / block) as u64;
    }
    let id = (index[0] * counts[1] + index[1]) * counts[2] + index[2];
    for (d, expected) in grid.block(id).iter().enumerate() {
        let end = (roi.offset[d] + roi.shape[d]).min(grid.shape[d] as i64) as usize;
        if end != expected.end {
            bail!("{}", wrong());
        }
    }
    Ok(id)
}

/// A worker of a daisy 2.0 task: blocks come from the scheduler `DAISY_CONTEXT` names until it
/// has none left. A block already done in the store (an earlier run) goes back at once. A block
/// that fails goes back as failed, with the error, and the worker stops with that error: daisy
/// retries the block and restarts workers within the task's limits.
fn daisy_worker(job: &mut BlockJob) -> Result<()> {
    let context = DaisyContext::from_env()?;
    let worker = format!(
        "daisy {} worker {}",
        context.task_id,
        context
            .worker_id
            .map_or("-".to_string(), |id| id.to_string())
    );
    let mut client = DaisyClient::connect(context)?;
    let grid = job.store.grid();
    let started = Instant::now();
    let mut counts = BlockCounts::default();
    while let Some(assigned) = client.acquire()? {
        let block_started = Instant::now();
        let done = grid_block_of(&grid, &assigned.block.write_roi).and_then(|id| {
            if job.store.is_done(id) {
                counts.skipped += 1;
            } else {
                counts.voxels += job.predict_block(id)?;
                counts.predicted += 1;
            }
            Ok(())
        });
        if let Err(e) = done {
            // The block's own error is the one to report, even if daisy cannot be told.
            if let Err(report) = client.fail(assigned.block, &format!("{e:#}")) {
                eprintln!("warning: the failed block could not go back to daisy: {report:#}");
            }
            return Err(e.context(format!(
                "a block daisy gave this worker, for {}",
                job.out.display()
            )));
        }
        let seconds = block_started.elapsed().as_secs_f64();
        if assigned.timeout_secs.is_some_and(|t| seconds > t) {
            eprintln!(
                "warning: a block took {seconds:.0} s, past the daisy task's timeout of {:.0} s: \
                 daisy gives such a block to another worker too (the same bytes, written twice); \
                 raise the Task's timeout or give --block fewer voxels",
                assigned.timeout_secs.unwrap_or_default()
            );
        }
        client.release(assigned.block)?;
    }
    println!("{}", job.summary(worker, counts, started));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(blocks: Option<&str>, workers: Option<u64>) -> VolumeArgs {
        VolumeArgs {
            status: false,
            zarr_version: None,
            dtype: None,
            chunks: None,
            block: None,
            blocks: blocks.map(String::from),
            workers,
            pyramid: None,
            daisy_worker: false,
        }
    }

    #[test]
    fn the_share_comes_from_the_flag_slurm_or_kubernetes() {
        let none = |_: &str| None;
        assert_eq!(
            worker_share(&args(Some("2/5"), None), none).unwrap(),
            (2, 5)
        );
        assert_eq!(worker_share(&args(None, None), none).unwrap(), (0, 1));
        let slurm = |name: &str| match name {
            "SLURM_ARRAY_TASK_ID" => Some("4".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
            _ => None,
        };
        assert_eq!(worker_share(&args(None, None), slurm).unwrap(), (3, 4));
        let k8s = |name: &str| (name == "JOB_COMPLETION_INDEX").then(|| "1".to_string());
        assert_eq!(worker_share(&args(None, Some(3)), k8s).unwrap(), (1, 3));
        let k8s_env = |name: &str| match name {
            "JOB_COMPLETION_INDEX" => Some("2".to_string()),
            "UNET_WORKERS" => Some("4".to_string()),
            _ => None,
        };
        assert_eq!(worker_share(&args(None, None), k8s_env).unwrap(), (2, 4));
        let err = worker_share(&args(None, None), k8s)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--workers"), "{err}");
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(worker_share(&args(Some(bad), None), none).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_daisy_roi_names_the_store_block_it_covers() {
        let grid = BlockGrid {
            shape: [2, 70, 90],
            block: [1, 32, 64],
        };
        let roi = |offset: [i64; 3], shape: [i64; 3]| Roi {
            offset: offset.to_vec(),
            shape: shape.to_vec(),
        };
        assert_eq!(
            grid_block_of(&grid, &roi([0, 0, 0], [1, 32, 64])).unwrap(),
            0
        );
        // Clipped at the volume's end (daisy's fit="shrink"), or reaching past it ("overhang").
        assert_eq!(
            grid_block_of(&grid, &roi([0, 0, 64], [1, 32, 26])).unwrap(),
            1
        );
        assert_eq!(
            grid_block_of(&grid, &roi([1, 64, 64], [1, 32, 64])).unwrap(),
            11
        );
        assert_eq!(grid.block(11), [1..2, 64..70, 64..90]);
        for (offset, shape) in [
            ([0, 0, 0], [1, 30, 64]),  // not the block's extent
            ([0, 16, 0], [1, 32, 64]), // not on a block corner
            ([0, 0, 64], [1, 32, 20]), // stops short of the volume's end
            ([2, 0, 0], [1, 32, 64]),  // past the volume
            ([-1, 0, 0], [1, 32, 64]),
        ] {
            let err = grid_block_of(&grid, &roi(offset, shape)).unwrap_err();
            assert!(
                err.to_string().contains("not a block of this store"),
                "{err}"
            );
        }
        let flat = Roi {
            offset: vec![0, 0],
            shape: vec![32, 64],
        };
        assert!(grid_block_of(&grid, &flat).is_err());
    }

    #[test]
    fn blocks_are_whole_chunks_within_the_volume() {
        assert_eq!(
            round_block([1, 2048, 2048], [1, 64, 100], [5, 300, 90]),
            [1, 320, 100]
        );
        assert_eq!(round_block([3, 10, 10], [2, 4, 4], [5, 9, 9]), [4, 12, 12]);
        assert!(parse_zyx("block", "1,2").is_err());
        assert!(parse_zyx("block", "1,0,2").is_err());
        assert_eq!(parse_zyx("block", "1, 2,3").unwrap(), [1, 2, 3]);
    }
}
