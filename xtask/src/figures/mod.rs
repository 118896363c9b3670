//! `cargo xtask figures`: the project's pictures, as PNG files under `docs/figures/`.
//!
//! - `weights`: an ISBI label section beside its weight map w(x) as a heat map with a colour bar
//!   (like Fig. 3 of the paper);
//! - `augment`: one ISBI section under 8 augmentations, the label's cell borders drawn over each;
//! - `curves`: loss, IoU and pixel accuracy per epoch from a run's `log.jsonl`;
//! - `predictions`: image | P(cell) | truth | errors for the validation sections, from the P(cell)
//!   stack that `unet predict` writes.

mod canvas;
mod plots;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use unet_data::{locate_data_dir, LabelledSections, Stack};

use canvas::{grey, viridis, Canvas, Rgb, BLACK, WHITE};

/// Which figure to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Figure {
    /// Label section and its weight map.
    Weights,
    /// One section under 8 augmentations.
    Augment,
    /// Training curves of a run (needs --run).
    Curves,
    /// Prediction panels (needs --pred).
    Predictions,
    /// The weight-map and augmentation figures, and the run's if --run / --pred are given.
    All,
}

/// Flags of `cargo xtask figures`.
#[derive(Debug, Args)]
pub struct FiguresArgs {
    /// Which figure.
    #[arg(value_enum, default_value = "all")]
    pub figure: Figure,
    /// Data directory [default: $UNET_DATA, else data/isbi2012].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory [default: docs/figures in the checkout].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The section to show.
    #[arg(long, default_value_t = 0)]
    pub page: usize,
    /// Seed of the augmentations.
    #[arg(long, default_value_t = 2015)]
    pub seed: u64,
    /// A run directory (for `curves`): reads <run>/log.jsonl.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// A P(cell) TIFF stack from `unet predict` (for `predictions`): the whole training volume or
    /// just the validation sections, in order.
    #[arg(long)]
    pub pred: Option<PathBuf>,
    /// The sections shown in `predictions`.
    #[arg(long, value_delimiter = ',', default_value = "27,28,29")]
    pub sections: Vec<usize>,
}

/// Draw the figures asked for.
pub fn run(root: &Path, args: &FiguresArgs) -> Result<()> {
    let data = if args.figure == Figure::Curves {
        None
    } else {
        let dir = locate_data_dir(args.data.as_deref())?;
        let data = LabelledSections::load(&dir)?;
        anyhow::ensure!(
            args.page < data.train_images.pages(),
            "--page {}: the training stack has {} pages",
            args.page,
            data.train_images.pages()
        );
        Some(data)
    };
    let data = || {
        data.as_ref()
            .context("the ISBI data is needed for this figure")
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("docs/figures"));
    let all = args.figure == Figure::All;
    if all || args.figure == Figure::Weights {
        let path = out.join("weight-map.png");
        weights_figure(data()?, args.page, &path)?;
        eprintln!("wrote {}", path.display());
    }
    if all || args.figure == Figure::Augment {
        let path = out.join("augmentation.png");
        augment_figure(data()?, args.page, args.seed, &path)?;
        eprintln!("wrote {}", path.display());
    }
    if args.figure == Figure::Curves || (all && args.run.is_some()) {
        let run = args
            .run
            .as_ref()
            .context("`curves` needs --run runs/NAME")?;
        let path = out.join("training-curves.png");
        plots::curves_figure(&run.join("log.jsonl"), &path)?;
        eprintln!("wrote {}", path.display());
    }
    if args.figure == Figure::Predictions || (all && args.pred.is_some()) {
        let pred = args
            .pred
            .as_ref()
            .context("`predictions` needs --pred P.tif")?;
        let prob = unet_data::read_stack(pred)?.to_f32();
        let path = out.join("predictions.png");
        plots::predictions_figure(data()?, &prob, &args.sections, &path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A `size` x `size` crop of page `page` at (`top`, `left`).
fn crop<T: Copy>(s: &Stack<T>, page: usize, top: usize, left: usize, size: usize) -> Vec<T> {
    let p = s.page(page);
    (0..size)
        .flat_map(|r| p[(top + r) * s.width() + left..][..size].iter().copied())
        .collect()
}

/// Draw a `n` x `n` image scaled by an integer factor.
fn blit_scaled(
    c: &mut Canvas,
    x: i64,
    y: i64,
    n: usize,
    scale: usize,
    colour: impl Fn(usize) -> Rgb,
) {
    let m = n * scale;
    c.blit(x, y, m, m, |i| {
        colour((i / m / scale) * n + (i % m) / scale)
    });
}

fn weights_figure(data: &LabelledSections, page: usize, path: &Path) -> Result<()> {
    // A 192 x 192 crop from the middle, shown 3x: the border term between touching cells is visible.
    let (n, scale, top, left) = (192usize, 3usize, 160usize, 160usize);
    let params = unet_weights::WeightMapParams::default().validate()?;
    let labels = &data.train_labels;
    let w = params
        .weight_map(labels.page(page), labels.height(), labels.width())
        .context("weight map")?;
    let w = Stack::new(1, labels.height(), labels.width(), w)?;
    let (img, lab, wc) = (
        crop(&data.train_images, page, top, left, n),
        crop(labels, page, top, left, n),
        crop(&w, 0, top, left, n),
    );
    let wmax = wc.iter().copied().fold(0.0f32, f32::max);
    let side = n * scale;
    let (pad, head) = (20usize, 50usize);
    let bar_w = 24usize;
    let width = 3 * side + 4 * pad + bar_w + 70;
    let height = side + head + pad + 30;
    let mut c = Canvas::new(width, height, WHITE);
    let x0 = pad as i64;
    let x1 = (2 * pad + side) as i64;
    let x2 = (3 * pad + 2 * side) as i64;
    let y = head as i64;
    c.text(x0, 12, &format!("ISBI 2012 section {page}"), 2, BLACK);
    c.text(x0, 34, "image", 1, BLACK);
    c.text(x1, 34, "label (white = cell)", 1, BLACK);
    c.text(x2, 34, "weight map w(x), w0 = 10, sigma = 5 px", 1, BLACK);
    blit_scaled(&mut c, x0, y, n, scale, |i| grey(img[i]));
    blit_scaled(&mut c, x1, y, n, scale, |i| grey(lab[i]));
    blit_scaled(&mut c, x2, y, n, scale, |i| viridis(wc[i] / wmax));
    // Colour bar with ticks.
    let bx = x2 + side as i64 + pad as i64;
    for r in 0..side {
        let t = 1.0 - r as f32 / (side - 1) as f32;
        c.fill_rect(bx, y + r as i64, bar_w, 1, viridis(t));
    }
    c.stroke_rect(bx, y, bar_w, side, BLACK);
    let ticks = 5;
    for k in 0..=ticks {
        let v = wmax * k as f32 / ticks as f32;
        let ty = y + ((1.0 - k as f32 / ticks as f32) * (side - 1) as f32) as i64;
        c.line(bx + bar_w as i64, ty, bx + bar_w as i64 + 4, ty, BLACK);
        c.text(bx + bar_w as i64 + 7, ty - 4, &format!("{v:.1}"), 1, BLACK);
    }
    c.text(
        x0,
        (head + side + 10) as i64,
        &format!(
            "crop rows {top}-{}, columns {left}-{} of 512x512; max weight {wmax:.2}",
            top + n - 1,
            left + n - 1
        ),
        1,
        BLACK,
    );
    c.save_png(path)
}

fn augment_figure(data: &LabelledSections, page: usize, seed: u64, path: &Path) -> Result<()> {
    let (h, w) = (data.train_images.height(), data.train_images.width());
    let image: Vec<f32> = data
        .train_images
        .page(page)
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    let sample =
        unet_augment::Sample::grey(w, h, image, data.train_labels.page(page).to_vec(), None)?;
    let pipeline = unet_augment::Preset::Reference.pipeline()?;
    let augmented = pipeline.apply_batch(&vec![sample.clone(); 8], seed)?;
    let tiles: Vec<unet_augment::Sample> = std::iter::once(sample).chain(augmented).collect();
    // Each sample shown at half size, 3 x 3, the original first.
    let (cell, pad, head) = (w / 2, 12usize, 44usize);
    let width = 3 * cell + 4 * pad;
    let height = head + 3 * (cell + pad + 14);
    let mut c = Canvas::new(width, height, WHITE);
    c.text(
        pad as i64,
        10,
        &format!("section {page}: reference augmentation, seed {seed}"),
        2,
        BLACK,
    );
    for (k, s) in tiles.iter().enumerate() {
        let (sw, sh) = (s.width(), s.height());
        let x = (pad + (k % 3) * (cell + pad)) as i64;
        let y = (head + (k / 3) * (cell + pad + 14)) as i64;
        let label = s.label();
        let is_border = |r: usize, col: usize| {
            let v = label[r * sw + col];
            (r + 1 < sh && label[(r + 1) * sw + col] != v)
                || (col + 1 < sw && label[r * sw + col + 1] != v)
        };
        let img = s.image();
        c.blit(x, y, sw / 2, sh / 2, |i| {
            let (r, col) = (2 * (i / (sw / 2)), 2 * (i % (sw / 2)));
            if is_border(r, col) || is_border(r + 1, col) || is_border(r, col + 1) {
                [230, 40, 40]
            } else {
                grey((img[r * sw + col].clamp(0.0, 1.0) * 255.0).round() as u8)
            }
        });
        let caption = if k == 0 {
            "original".to_string()
        } else {
            format!("sample {k}")
        };
        c.text(x, y + (sh / 2) as i64 + 3, &caption, 1, BLACK);
    }
    c.save_png(path)
}
