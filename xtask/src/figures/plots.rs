//! Training curves from a run's `log.jsonl`, and prediction panels from a P(cell) stack.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use unet_data::{LabelledSections, Stack};

use super::canvas::{grey, Canvas, Rgb, BLACK, WHITE};

const BLUE: Rgb = [31, 119, 180];
const ORANGE: Rgb = [255, 127, 14];
const GREEN: Rgb = [44, 160, 44];
const RED: Rgb = [214, 39, 40];
const LIGHT: Rgb = [225, 225, 225];

/// One line of a plot.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Colour.
    pub colour: Rgb,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
}

/// Read `log.jsonl`: one JSON object per epoch.
pub fn read_log(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    if records.is_empty() {
        bail!("{}: no epoch logged yet", path.display());
    }
    Ok(records)
}

/// The series `key` (a path like `validation.mean_iou`) over epochs, skipping epochs without it.
pub fn series(records: &[Value], key: &str, name: &str, colour: Rgb) -> Series {
    let points = records
        .iter()
        .filter_map(|r| {
            let epoch = r["epoch"].as_f64()?;
            let v = key.split('.').try_fold(r, |v, k| v.get(k))?.as_f64()?;
            Some((epoch, v))
        })
        .collect();
    Series {
        name: name.to_string(),
        colour,
        points,
    }
}

/// Draw a line plot with axes, ticks, title and legend into `c` at (`x`, `y`), `w` x `h`.
pub fn line_plot(
    c: &mut Canvas,
    x: i64,
    y: i64,
    w: usize,
    h: usize,
    title: &str,
    lines: &[Series],
) {
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    c.text(x, y, title, 1, BLACK);
    let (px, py, pw, ph) = (x + 48, y + 16, w as i64 - 60, h as i64 - 40);
    c.stroke_rect(px, py, pw as usize, ph as usize, BLACK);
    if all.is_empty() {
        c.text(px + 8, py + 8, "no data", 1, BLACK);
        return;
    }
    let (mut x0, mut x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let margin = ((y1 - y0) * 0.08).max(1e-6);
    y0 -= margin;
    y1 += margin;
    let sx = |v: f64| px + ((v - x0) / (x1 - x0) * (pw - 1) as f64).round() as i64;
    let sy = |v: f64| py + ph - 1 - ((v - y0) / (y1 - y0) * (ph - 1) as f64).round() as i64;
    for k in 0..=4 {
        let v = y0 + (y1 - y0) * k as f64 / 4.0;
        let ty = sy(v);
        c.line(px + 1, ty, px + pw - 2, ty, LIGHT);
        c.line(px - 4, ty, px, ty, BLACK);
        c.text(x, ty - 4, &format!("{v:.3}"), 1, BLACK);
    }
    let xticks = ((x1 - x0).round() as usize).clamp(1, 10);
    for k in 0..=xticks {
        let v = x0 + (x1 - x0) * k as f64 / xticks as f64;
        let tx = sx(v);
        c.line(tx, py + ph, tx, py + ph + 4, BLACK);
        c.text(tx - 8, py + ph + 7, &format!("{v:.0}"), 1, BLACK);
    }
    c.text(px + pw / 2 - 20, py + ph + 17, "epoch", 1, BLACK);
    for (i, s) in lines.iter().enumerate() {
        for pair in s.points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            c.line(sx(a.0), sy(a.1), sx(b.0), sy(b.1), s.colour);
            c.line(sx(a.0), sy(a.1) + 1, sx(b.0), sy(b.1) + 1, s.colour);
        }
        for &(px_, py_) in &s.points {
            c.fill_rect(sx(px_) - 2, sy(py_) - 2, 5, 5, s.colour);
        }
        let ly = py + 6 + 12 * i as i64;
        c.fill_rect(px + pw - 150, ly, 14, 8, s.colour);
        c.text(px + pw - 132, ly, &s.name, 1, BLACK);
    }
}

/// The series that have points (a run without calibration logs no calibrated scores).
fn present(series: Vec<Series>) -> Vec<Series> {
    series
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Loss, mean IoU and pixel accuracy per epoch, side by side (like the reference's plots).
pub fn curves_figure(log: &Path, out: &Path) -> Result<()> {
    let records = read_log(log)?;
    let (w, h, pad) = (420usize, 300usize, 16usize);
    let mut c = Canvas::new(3 * w + 4 * pad, h + 2 * pad + 24, WHITE);
    c.text(
        pad as i64,
        8,
        &format!("training run {}", log.parent().unwrap_or(log).display()),
        2,
        BLACK,
    );
    let top = (pad + 24) as i64;
    line_plot(
        &mut c,
        pad as i64,
        top,
        w,
        h,
        "loss",
        &[
            series(&records, "train_loss", "train", BLUE),
            series(&records, "validation.loss", "validation", ORANGE),
        ],
    );
    line_plot(
        &mut c,
        (2 * pad + w) as i64,
        top,
        w,
        h,
        "validation mean IoU / V-Rand",
        &present(vec![
            series(&records, "validation.mean_iou", "mean IoU, P > 0.5", GREEN),
            series(
                &records,
                "validation.calibrated.mean_iou",
                "mean IoU, fitted t",
                BLUE,
            ),
            series(&records, "validation.v_rand", "V-Rand", RED),
        ]),
    );
    line_plot(
        &mut c,
        (3 * pad + 2 * w) as i64,
        top,
        w,
        h,
        "validation pixel accuracy",
        &present(vec![
            series(&records, "validation.pixel_accuracy", "P > 0.5", GREEN),
            series(
                &records,
                "validation.calibrated.pixel_accuracy",
                "fitted t",
                BLUE,
            ),
        ]),
    );
    c.save_png(out)
}

/// Per validation section: image | P(cell) | truth | errors (false cell red, false membrane blue).
pub fn predictions_figure(
    data: &LabelledSections,
    prob: &Stack<f32>,
    pages: &[usize],
    out: &Path,
) -> Result<()> {
    let (h, w) = (data.train_images.height(), data.train_images.width());
    if (prob.height(), prob.width()) != (h, w) {
        bail!(
            "P(cell) is {}x{}, the sections are {h}x{w}",
            prob.height(),
            prob.width()
        );
    }
    // A P stack of the validation pages only, or of the whole volume.
    let page_of = |p: usize| -> Result<&[f32]> {
        if prob.pages() == data.train_images.pages() {
            Ok(prob.page(p))
        } else if let Some(i) = pages
            .iter()
            .position(|&q| q == p)
            .filter(|&i| i < prob.pages())
        {
            Ok(prob.page(i))
        } else {
            bail!(
                "P(cell) has {} pages: no page for section {p}",
                prob.pages()
            )
        }
    };
    let s = 256usize; // each panel at half size
    let (pad, head, caption) = (10usize, 36usize, 14usize);
    let mut c = Canvas::new(
        4 * s + 5 * pad,
        head + pages.len() * (s + pad + caption),
        WHITE,
    );
    c.text(
        pad as i64,
        8,
        "image | P(cell) | truth | errors (red: false cell, blue: false membrane)",
        1,
        BLACK,
    );
    for (row, &p) in pages.iter().enumerate() {
        let y = (head + row * (s + pad + caption)) as i64;
        let img = data.train_images.page(p);
        let truth = data.train_labels.page(p);
        let pr = page_of(p)?;
        let at = |i: usize| (2 * (i / s)) * w + 2 * (i % s);
        let xs: Vec<i64> = (0..4).map(|k| (pad + k * (s + pad)) as i64).collect();
        c.blit(xs[0], y, s, s, |i| grey(img[at(i)]));
        c.blit(xs[1], y, s, s, |i| {
            grey((pr[at(i)].clamp(0.0, 1.0) * 255.0).round() as u8)
        });
        c.blit(xs[2], y, s, s, |i| grey(truth[at(i)]));
        c.blit(xs[3], y, s, s, |i| {
            let j = at(i);
            match (pr[j] > 0.5, truth[j] > 0) {
                (true, false) => RED,
                (false, true) => BLUE,
                _ => grey(img[j] / 2 + 100),
            }
        });
        let (mut errors, n) = (0usize, h * w);
        for j in 0..n {
            errors += usize::from((pr[j] > 0.5) != (truth[j] > 0));
        }
        c.text(
            xs[0],
            y + s as i64 + 3,
            &format!(
                "section {p}: pixel error at P > 0.5 = {:.2}%",
                100.0 * errors as f64 / n as f64
            ),
            1,
            BLACK,
        );
    }
    c.save_png(out)
}
