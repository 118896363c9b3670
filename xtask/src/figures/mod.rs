//! `cargo xtask figures`: the project's pictures, as PNG files under `docs/figures/`.
//!
//! - `weights`: an ISBI label section beside its weight map w(x) as a heat map with a colour bar
//!   (like Fig. 3 of the paper);
//! - `augment`: one ISBI section under 8 augmentations, the label's cell borders drawn over each;
//! - `curves`: loss, IoU and pixel accuracy per epoch from a run's `log.jsonl`;
//! - `predictions`: image | P(cell) | truth | errors for the validation sections, from the P(cell)
//!   stack that `unet predict` writes;
//! - `robustness`: thinned V-Rand and V-Info against each shift of `unet robustness`, from one or
//!   more of its `--json` tables (one model each).
//!
//! All are drawn with `plotters` and the embedded DejaVu Sans font (`plot`).

mod plot;
pub mod plots;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use unet_data::{locate_data_dir, LabelledSections, Stack};

use plot::{drawing, Area};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

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
    /// Scores against shift (needs --robustness).
    Robustness,
    /// The weight-map and augmentation figures, and the others whose inputs are given.
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
    /// A table from `unet robustness --json` (for `robustness`); repeat it to compare models
    /// (at most three), the first drawn in blue and orange.
    #[arg(long)]
    pub robustness: Vec<PathBuf>,
    /// The legend's name of each --robustness table, in order [default: the model it names].
    #[arg(long)]
    pub label: Vec<String>,
    /// The sections shown in `predictions`.
    #[arg(long, value_delimiter = ',', default_value = "27,28,29")]
    pub sections: Vec<usize>,
}

/// Draw the figures asked for.
pub fn run(root: &Path, args: &FiguresArgs) -> Result<()> {
    let data = if matches!(args.figure, Figure::Curves | Figure::Robustness) {
        None
    } else {
        let dir = locate_data_dir(args.data.as_deref())?;
        let data = LabelledSections::load(&dir)?;
        anyhow::ensure!(
            args.page < data.grey_u8()?.pages(),
            "--page {}: the training stack has {} pages",
            args.page,
            data.grey_u8()?.pages()
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
    if args.figure == Figure::Robustness || (all && !args.robustness.is_empty()) {
        anyhow::ensure!(
            !args.robustness.is_empty(),
            "`robustness` needs --robustness TABLE.json (from unet robustness --json)"
        );
        let tables = args
            .robustness
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut table = plots::read_robustness(p)?;
                if let Some(label) = args.label.get(i) {
                    table.model = label.clone();
                }
                Ok(table)
            })
            .collect::<Result<Vec<_>>>()?;
        let path = out.join("robustness.png");
        plots::robustness_figure(&tables, &path)?;
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

/// An image panel with axes in the section's pixel coordinates (columns `left..`, rows `top..`
/// downwards), the `n` x `n` crop drawn by `colour_of(row, col)` over a square plotting area so
/// the ticks match the pixels.
fn image_panel(
    area: &Area,
    title: &str,
    (top, left, n): (usize, usize, usize),
    colour_of: impl Fn(usize, usize) -> RGBColor,
) -> Result<()> {
    let (x0, y0, n_f) = (left as f64, top as f64, n as f64);
    let area = area.titled(title, plot::text(15)).map_err(drawing)?;
    fn build<'a, 'b>(
        area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
        x: std::ops::Range<f64>,
        y: std::ops::Range<f64>,
    ) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>>
    {
        ChartBuilder::on(area)
            .margin(6)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(x, y)
            .map_err(drawing)
    }
    let (xs, ys) = (x0..x0 + n_f, y0..y0 + n_f);
    // Building draws nothing without a caption: measure, then shrink the area to a square.
    let (pw, ph) = build(&area, xs.clone(), ys.clone())?
        .plotting_area()
        .dim_in_pixel();
    let side = pw.min(ph);
    let area = area.margin(0, ph - side, 0, pw - side);
    let mut chart = build(&area, xs, ys)?;
    // plotters' y axis grows upwards; an image's rows grow downwards, so the labels are mirrored.
    let row_label = |v: &f64| format!("{:.0}", 2.0 * y0 + n_f - v);
    let column_label = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(5)
        .y_labels(5)
        .label_style(plot::text(12))
        .x_label_formatter(&column_label)
        .y_label_formatter(&row_label)
        .draw()
        .map_err(drawing)?;
    plot::raster(&chart.plotting_area().strip_coord_spec(), (n, n), colour_of)?;
    Ok(())
}

fn weights_figure(data: &LabelledSections, page: usize, path: &Path) -> Result<()> {
    // A 192 x 192 crop from the middle, shown 3x: the border term between touching cells is visible.
    let (n, top, left) = (192usize, 160usize, 160usize);
    let params = unet_weights::WeightMapParams::default().validate()?;
    let labels = &data.train_labels;
    let w = params
        .weight_map(labels.page(page), labels.height(), labels.width())
        .context("weight map")?;
    let w = Stack::new(1, labels.height(), labels.width(), w)?;
    let (img, lab, wc) = (
        crop(data.grey_u8()?, page, top, left, n),
        crop(labels, page, top, left, n),
        crop(&w, 0, top, left, n),
    );
    let wmax = wc.iter().copied().fold(0.0f32, f32::max);
    let (panel, bar, head, foot) = (3 * n as u32 + 60, 110u32, 40u32, 30u32);
    let size = (3 * panel + bar, 3 * n as u32 + 50 + head + foot);
    plot::figure(path, size, |root| {
        root.fill(&WHITE).map_err(drawing)?;
        let (title, rest) = root.split_vertically(head);
        title
            .draw_text(
                &format!("ISBI 2012 section {page}: label and weight map w(x)"),
                &plot::bold(20),
                (12, 10),
            )
            .map_err(drawing)?;
        let (rest, caption) = rest.split_vertically(size.1 - head - foot);
        caption
            .draw_text(
                &format!(
                    "crop of rows {top}-{}, columns {left}-{} of the 512x512 section; max weight {wmax:.2}",
                    top + n - 1,
                    left + n - 1
                ),
                &plot::text(14),
                (12, 6),
            )
            .map_err(drawing)?;
        let (panels, colour_bar) = rest.split_horizontally(3 * panel);
        let cells = panels.split_evenly((1, 3));
        let at = |v: &[u8], r: usize, c: usize| v[r * n + c];
        image_panel(&cells[0], "image", (top, left, n), |r, c| {
            plot::grey(at(&img, r, c))
        })?;
        image_panel(&cells[1], "label (white = cell)", (top, left, n), |r, c| {
            plot::grey(at(&lab, r, c))
        })?;
        image_panel(
            &cells[2],
            "w(x), w0 = 10, sigma = 5 px",
            (top, left, n),
            |r, c| plot::viridis(wc[r * n + c] / wmax),
        )?;
        // The colour bar: a chart whose y axis is the weight.
        let mut chart = ChartBuilder::on(&colour_bar)
            .margin_top(28)
            .margin_bottom(36)
            .margin_right(6)
            .y_label_area_size(44)
            .set_label_area_size(LabelAreaPosition::Right, 0)
            .build_cartesian_2d(0.0..1.0, 0.0..f64::from(wmax))
            .map_err(drawing)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_desc("w(x)")
            .label_style(plot::text(12))
            .axis_desc_style(plot::text(13))
            .draw()
            .map_err(drawing)?;
        let steps = 256;
        let step = f64::from(wmax) / steps as f64;
        chart
            .draw_series((0..steps).map(|k| {
                let v = k as f64 * step;
                Rectangle::new(
                    [(0.0, v), (1.0, v + step)],
                    plot::viridis((v / f64::from(wmax)) as f32).filled(),
                )
            }))
            .map_err(drawing)?;
        Ok(())
    })
}

fn augment_figure(data: &LabelledSections, page: usize, seed: u64, path: &Path) -> Result<()> {
    let (h, w) = (data.grey_u8()?.height(), data.grey_u8()?.width());
    let image: Vec<f32> = data
        .grey_u8()?
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
    let (cell_w, cell_h, head) = (w as u32 / 2 + 16, h as u32 / 2 + 30, 40u32);
    let size = (3 * cell_w + 8, head + 3 * cell_h);
    plot::figure(path, size, |root| {
        root.fill(&WHITE).map_err(drawing)?;
        let (title, grid) = root.split_vertically(head);
        title
            .draw_text(
                &format!(
                    "section {page}: reference augmentation, seed {seed} (red: the label's cell borders)"
                ),
                &plot::bold(18),
                (10, 10),
            )
            .map_err(drawing)?;
        for (k, (s, cell)) in tiles.iter().zip(grid.split_evenly((3, 3))).enumerate() {
            let (sw, sh) = (s.width(), s.height());
            let label = s.label();
            let is_border = |r: usize, col: usize| {
                let v = label[r * sw + col];
                (r + 1 < sh && label[(r + 1) * sw + col] != v)
                    || (col + 1 < sw && label[r * sw + col + 1] != v)
            };
            let img = s.image();
            let caption = match k {
                0 => "original".to_string(),
                k => format!("sample {k}"),
            };
            let cell = cell.margin(4, 4, 8, 8);
            plot::half_size_panel(&cell, (sh, sw), &caption, |r, col| {
                if is_border(r, col) || is_border(r + 1, col) || is_border(r, col + 1) {
                    RGBColor(230, 40, 40)
                } else {
                    plot::grey((img[r * sw + col].clamp(0.0, 1.0) * 255.0).round() as u8)
                }
            })?;
        }
        Ok(())
    })
}
