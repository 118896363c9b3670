//! `unet augment`: write augmented versions of one section, to see what training sees.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use unet_augment::{Preset, Sample};
use unet_data::{check_pair, read_labels, read_stack, write_stack, Stack};

/// Flags of `unet augment`.
#[derive(Debug, Args)]
pub struct AugmentArgs {
    /// Image stack (8-bit, 16-bit or float; 8/16-bit are scaled to [0, 1]).
    #[arg(long)]
    pub image: PathBuf,
    /// Label stack (255 or 1 = cell, 0 = membrane).
    #[arg(long)]
    pub labels: PathBuf,
    /// Optional weight-map stack (32-bit float, e.g. from `unet weights`), moved with the labels.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Which page (section) to augment, counting from 0.
    #[arg(long, default_value_t = 0)]
    pub page: usize,
    /// How many augmented samples to write.
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// Seed; the same seed gives the same samples on every machine.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The recipe: reference (dense elastic, flips, brightness 0.4, noise), paper (coarse-grid
    /// elastic, shifts, rotations, grey-value variation) or none.
    #[arg(long, default_value = "reference")]
    pub preset: Preset,
    /// Output directory: image.tif (float), labels.tif (8-bit) and weights.tif (float), n pages each.
    #[arg(long)]
    pub out: PathBuf,
}

/// Augment and write.
pub fn run(args: &AugmentArgs) -> Result<()> {
    let image = read_stack(&args.image)?.to_unit_f32();
    let labels = read_labels(&args.labels)?;
    check_pair(&args.image, &image, &args.labels, &labels)?;
    if image.samples() != 1 {
        bail!(
            "{}: {} samples per pixel; grey images only",
            args.image.display(),
            image.samples()
        );
    }
    if args.page >= image.pages() {
        bail!(
            "--page {}: {} has pages 0..{}",
            args.page,
            args.image.display(),
            image.pages() - 1
        );
    }
    let weights = match &args.weights {
        Some(path) => {
            let w = read_stack(path)?.to_f32();
            check_pair(&args.image, &image, path, &w)?;
            Some(w.page(args.page).to_vec())
        }
        None => None,
    };
    let (h, w) = (image.height(), image.width());
    let sample = Sample::grey(
        w,
        h,
        image.page(args.page).to_vec(),
        labels.page(args.page).to_vec(),
        weights,
    )?;
    let pipeline = args.preset.pipeline()?;
    let batch = vec![sample; args.n];
    let out = pipeline
        .apply_batch(&batch, args.seed)
        .context("augmenting the samples")?;
    let (oh, ow) = (out[0].height(), out[0].width());
    let has_weights = out[0].weight().is_some();
    let (mut imgs, mut labs, mut wts) = (Vec::new(), Vec::new(), Vec::new());
    for s in out {
        let (i, l, w) = s.into_parts();
        imgs.push(i);
        labs.push(l);
        if let Some(w) = w {
            wts.push(w);
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_stack(
        args.out.join("image.tif"),
        &Stack::from_pages(oh, ow, 1, imgs)?,
    )?;
    write_stack(
        args.out.join("labels.tif"),
        &Stack::from_pages(oh, ow, 1, labs)?,
    )?;
    if has_weights {
        write_stack(
            args.out.join("weights.tif"),
            &Stack::from_pages(oh, ow, 1, wts)?,
        )?;
    }
    eprintln!(
        "{} samples of page {} ({} preset, seed {}) written to {}",
        args.n,
        args.page,
        args.preset,
        args.seed,
        args.out.display()
    );
    Ok(())
}
