//! Training curves from a run's `log.jsonl`, prediction panels from a P(cell) stack, and scores
//! against shift from `unet robustness --json`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use unet_data::{LabelledSections, Stack};

use plotters::prelude::*;

use super::plot::{self, drawing, Area, PanelLabels, Series, PALETTE};

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
pub fn series(records: &[Value], key: &str, name: &str, colour: RGBColor) -> Series {
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
        dashed: false,
        points,
    }
}

/// The series that have points (a run without calibration logs no calibrated scores).
fn present(series: Vec<Series>) -> Vec<Series> {
    series
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// A line panel over the epochs with its legend in a strip under it.
fn epoch_panel(area: &Area, title: &str, y: &str, lines: &[Series]) -> Result<()> {
    let (_, h) = area.dim_in_pixel();
    let (chart, strip) = area.split_vertically(h.saturating_sub(30));
    plot::line_panel(
        &chart,
        &PanelLabels {
            title,
            x: "epoch",
            y,
        },
        lines,
        None,
    )?;
    let entries: Vec<(&str, RGBColor, bool)> = lines
        .iter()
        .map(|s| (s.name.as_str(), s.colour, s.dashed))
        .collect();
    plot::legend(&strip, &entries)
}

/// Loss, mean IoU and pixel accuracy per epoch, side by side (like the reference's plots).
pub fn curves_figure(log: &Path, out: &Path) -> Result<()> {
    let records = read_log(log)?;
    let [blue, orange, green, red, _] = PALETTE;
    let panels = [
        (
            "loss",
            "weighted cross-entropy",
            vec![
                series(&records, "train_loss", "train", blue),
                series(&records, "validation.loss", "validation", orange),
            ],
        ),
        (
            "validation mean IoU / V-Rand",
            "score",
            present(vec![
                series(&records, "validation.mean_iou", "mean IoU, P > 0.5", green),
                series(
                    &records,
                    "validation.calibrated.mean_iou",
                    "mean IoU, fitted t",
                    blue,
                ),
                series(&records, "validation.v_rand", "V-Rand", red),
            ]),
        ),
        (
            "validation pixel accuracy",
            "pixel accuracy",
            present(vec![
                series(&records, "validation.pixel_accuracy", "P > 0.5", green),
                series(
                    &records,
                    "validation.calibrated.pixel_accuracy",
                    "fitted t",
                    blue,
                ),
            ]),
        ),
    ];
    let (w, h, head) = (460u32, 360u32, 36u32);
    plot::figure(out, (3 * w, h + head), |root| {
        root.fill(&WHITE).map_err(drawing)?;
        let (title, rest) = root.split_vertically(head);
        title
            .draw_text(
                &format!("training run {}", log.parent().unwrap_or(log).display()),
                &plot::bold(18),
                (12, 10),
            )
            .map_err(drawing)?;
        for ((name, y, lines), area) in panels.iter().zip(rest.split_evenly((1, 3))) {
            epoch_panel(&area, name, y, lines)?;
        }
        Ok(())
    })
}

/// Per validation section: image | P(cell) | truth | errors (false cell red, false membrane blue).
pub fn predictions_figure(
    data: &LabelledSections,
    prob: &Stack<f32>,
    pages: &[usize],
    out: &Path,
) -> Result<()> {
    let (h, w) = (data.grey_u8()?.height(), data.grey_u8()?.width());
    if (prob.height(), prob.width()) != (h, w) {
        bail!(
            "P(cell) is {}x{}, the sections are {h}x{w}",
            prob.height(),
            prob.width()
        );
    }
    // A P stack of the validation pages only, or of the whole volume.
    let page_of = |p: usize| -> Result<&[f32]> {
        if prob.pages() == data.grey_u8()?.pages() {
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
    let rows: Vec<(usize, &[f32])> = pages
        .iter()
        .map(|&p| Ok((p, page_of(p)?)))
        .collect::<Result<_>>()?;
    let (red, blue) = (RGBColor(214, 39, 40), RGBColor(31, 119, 180));
    let (cell_w, cell_h, head) = (w as u32 / 2 + 12, h as u32 / 2 + 28, 36u32);
    let size = (4 * cell_w + 8, head + rows.len() as u32 * cell_h);
    plot::figure(out, size, |root| {
        root.fill(&WHITE).map_err(drawing)?;
        let (title, grid) = root.split_vertically(head);
        title
            .draw_text(
                "image | P(cell) | truth | errors at P > 0.5 (red: false cell, blue: false \
                 membrane)",
                &plot::bold(17),
                (10, 10),
            )
            .map_err(drawing)?;
        let cells = grid.split_evenly((rows.len(), 4));
        for (row, &(p, pr)) in rows.iter().enumerate() {
            let img = data.grey_u8()?.page(p);
            let truth = data.train_labels.page(p);
            let errors = (0..h * w)
                .filter(|&j| (pr[j] > 0.5) != (truth[j] > 0))
                .count();
            let error = 100.0 * errors as f64 / (h * w) as f64;
            let at = |r: usize, c: usize| r * w + c;
            let cell = |k: usize| cells[row * 4 + k].margin(2, 2, 6, 6);
            plot::half_size_panel(&cell(0), (h, w), &format!("section {p}"), |r, c| {
                plot::grey(img[at(r, c)])
            })?;
            plot::half_size_panel(&cell(1), (h, w), "P(cell)", |r, c| {
                plot::grey((pr[at(r, c)].clamp(0.0, 1.0) * 255.0).round() as u8)
            })?;
            plot::half_size_panel(&cell(2), (h, w), "truth", |r, c| {
                plot::grey(truth[at(r, c)])
            })?;
            plot::half_size_panel(
                &cell(3),
                (h, w),
                &format!("pixel error {error:.2}%"),
                |r, c| {
                    let j = at(r, c);
                    match (pr[j] > 0.5, truth[j] > 0) {
                        (true, false) => red,
                        (false, true) => blue,
                        _ => plot::grey(img[j] / 2 + 100),
                    }
                },
            )?;
        }
        Ok(())
    })
}

/// One model's scores from `unet robustness --json`.
pub struct RobustnessTable {
    /// The model's name as the table gives it (or the file's name when it gives none).
    pub model: String,
    /// (shift kind, amount, V-Rand, V-Info) per row, in the table's order.
    pub rows: Vec<(String, f64, f64, f64)>,
}

/// Reads a table written by `unet robustness --json`.
pub fn read_robustness(path: &Path) -> Result<RobustnessTable> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not JSON from unet robustness", path.display()))?;
    let rows = json["rows"]
        .as_array()
        .with_context(|| {
            format!(
                "{}: no \"rows\" list (unet robustness --json)",
                path.display()
            )
        })?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let number = |key: &str| {
                r[key].as_f64().with_context(|| {
                    format!("{}: row {} has no number \"{key}\"", path.display(), i + 1)
                })
            };
            let kind = r["shift"]
                .as_str()
                .with_context(|| format!("{}: row {} has no \"shift\"", path.display(), i + 1))?;
            Ok((
                kind.to_string(),
                number("amount")?,
                number("v_rand")?,
                number("v_info")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let model = json["model"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into(),
            )
        });
    Ok(RobustnessTable { model, rows })
}

/// The amount at which a shift kind leaves the sections as they are (where the unshifted
/// scores are drawn in its panel).
fn neutral_amount(kind: &str) -> f64 {
    match kind {
        "noise" | "blur" => 0.0,
        _ => 1.0,
    }
}

/// The axis label of a shift kind's amount.
fn amount_label(kind: &str) -> &'static str {
    match kind {
        "contrast" => "contrast factor around mid-grey",
        "gamma" => "gamma",
        "brightness" => "brightness factor",
        "noise" => "Gaussian noise std (grey in [0, 1])",
        "blur" => "blur sigma (px)",
        "zoom" => "zoom factor (pixel size change)",
        _ => "amount",
    }
}

/// Thinned V-Rand and V-Info against the amount of each shift, one panel per kind of shift, one
/// pair of lines per model (the first table solid colours, then the next), with the 0.97 bar.
pub fn robustness_figure(tables: &[RobustnessTable], out: &Path) -> Result<()> {
    anyhow::ensure!(!tables.is_empty(), "no robustness table to draw");
    // Panels in the order of the first table; the identity joins every panel at its neutral
    // amount, 16-bit storage (one value) goes into the title.
    let mut kinds: Vec<&str> = Vec::new();
    for (kind, ..) in &tables[0].rows {
        if kind != "none" && kind != "16-bit" && !kinds.contains(&kind.as_str()) {
            kinds.push(kind);
        }
    }
    anyhow::ensure!(!kinds.is_empty(), "the robustness table has no shifts");
    let colours = [
        (PALETTE[0], PALETTE[1]),
        (PALETTE[2], PALETTE[3]),
        (PALETTE[4], RGBColor(140, 86, 75)),
    ];
    anyhow::ensure!(
        tables.len() <= colours.len(),
        "at most {} robustness tables in one figure",
        colours.len()
    );
    let target = 0.97;
    let series_of = |t: &RobustnessTable, kind: &str, (c_rand, c_info): (RGBColor, RGBColor)| {
        let mut points: Vec<(f64, f64, f64)> = t
            .rows
            .iter()
            .filter(|r| r.0 == kind)
            .map(|r| (r.1, r.2, r.3))
            .collect();
        if let Some(none) = t.rows.iter().find(|r| r.0 == "none") {
            points.push((neutral_amount(kind), none.2, none.3));
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|a, b| a.0 == b.0);
        [
            Series {
                name: format!("{}: V-Rand", t.model),
                colour: c_rand,
                dashed: false,
                points: points.iter().map(|p| (p.0, p.1)).collect(),
            },
            Series {
                name: format!("{}: V-Info", t.model),
                colour: c_info,
                dashed: false,
                points: points.iter().map(|p| (p.0, p.2)).collect(),
            },
        ]
    };
    let sixteen: Vec<String> = tables
        .iter()
        .filter_map(|t| {
            let r = t.rows.iter().find(|r| r.0 == "16-bit")?;
            Some(format!("{}: {:.3} / {:.3}", t.model, r.2, r.3))
        })
        .collect();
    // The y range: every score and the target, shared by all panels so they compare.
    let scores = tables
        .iter()
        .flat_map(|t| t.rows.iter().flat_map(|r| [r.2, r.3]));
    let low = scores.fold(target, f64::min);
    let y_range = (low - 0.02 * (1.0 - low).max(0.05)).max(0.0)..1.0 + 0.005;
    let columns = kinds.len().min(3);
    let panel_rows = kinds.len().div_ceil(columns);
    let (w, h, head, foot) = (440u32, 320u32, 58u32, 36u32);
    let size = (columns as u32 * w, head + panel_rows as u32 * h + foot);
    plot::figure(out, size, |root| {
        root.fill(&WHITE).map_err(drawing)?;
        let (title, rest) = root.split_vertically(head);
        title
            .draw_text(
                "Thinned V-Rand and V-Info (ISBI style) under intensity and pixel-size shifts",
                &plot::bold(18),
                (12, 8),
            )
            .map_err(drawing)?;
        let mut subtitle = format!("dashed: the {target} bar");
        if !sixteen.is_empty() {
            subtitle += &format!(
                "; stored as 16-bit, V-Rand / V-Info: {}",
                sixteen.join(", ")
            );
        }
        title
            .draw_text(&subtitle, &plot::text(14), (12, 34))
            .map_err(drawing)?;
        let (grid, strip) = rest.split_vertically(panel_rows as u32 * h);
        let panels = grid.split_evenly((panel_rows, columns));
        let mut legend: Vec<(String, RGBColor, bool)> = Vec::new();
        for (kind, area) in kinds.iter().zip(&panels) {
            let mut lines: Vec<Series> = tables
                .iter()
                .zip(colours)
                .flat_map(|(t, c)| series_of(t, kind, c))
                .collect();
            let xs: Vec<f64> = lines
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .collect();
            let (x0, x1) = xs
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            if legend.is_empty() {
                legend = lines
                    .iter()
                    .map(|s| (s.name.clone(), s.colour, false))
                    .collect();
                legend.push((format!("{target}"), BLACK, true));
            }
            lines.push(Series {
                name: format!("{target}"),
                colour: BLACK,
                dashed: true,
                points: vec![(x0, target), (x1, target)],
            });
            plot::line_panel(
                area,
                &PanelLabels {
                    title: kind,
                    x: amount_label(kind),
                    y: "score",
                },
                &lines,
                Some(y_range.clone()),
            )?;
        }
        let entries: Vec<(&str, RGBColor, bool)> = legend
            .iter()
            .map(|(n, c, d)| (n.as_str(), *c, *d))
            .collect();
        plot::legend(&strip, &entries)
    })
}
