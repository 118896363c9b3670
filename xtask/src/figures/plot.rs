//! What every figure is drawn with: `plotters` on an RGB buffer, the DejaVu Sans font embedded in
//! the binary (the `dejavu` crate; no system fonts or font libraries), raster images placed in
//! a drawing area, line panels with real axes, and a legend in a strip of its own so it never
//! covers the data. The buffer is written as PNG atomically (`unet_data::write_atomically`).

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The drawing area of a figure.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The font family the figures use (registered from the embedded DejaVu Sans).
pub const FONT: &str = "sans-serif";

/// Colours of the lines, in order (matplotlib's first five).
pub const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// A plotters error as an `anyhow` error (plotters' errors borrow the backend's type).
pub fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the figure: {e}")
}

/// Registers the embedded font once per process.
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are DejaVu's own TTF files: failing to read them is a bug, not bad input.
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ] {
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                panic!("the embedded DejaVu Sans font does not parse");
            }
        }
    });
}

/// A figure of `width` x `height` pixels, white, drawn by `draw`, then saved as PNG to `path`.
pub fn figure(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<()> {
    register_fonts();
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(drawing)?;
    }
    save_png(path, width, height, &rgb)
}

/// Writes an RGB buffer as PNG, atomically.
fn save_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(rgb)?;
    }
    unet_data::write_atomically(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// A text style of the figures' font.
pub fn text(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// A bold text style of the figures' font.
pub fn bold(size: u32) -> TextStyle<'static> {
    (FONT, size)
        .into_font()
        .style(FontStyle::Bold)
        .color(&BLACK)
}

/// A grey value as a colour.
pub fn grey(v: u8) -> RGBColor {
    RGBColor(v, v, v)
}

/// The viridis colour of `t` in [0, 1] (clamped; not-a-number is the low end).
pub fn viridis(t: f32) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ViridisRGB::get_color_normalized(t, 0.0, 1.0)
}

/// Draws an `h` x `w` raster (`colour_of(row, col)`) into `area` by nearest-neighbour sampling,
/// one scale on both axes (the largest that fits), from the top-left corner.
pub fn raster(
    area: &Area,
    (h, w): (usize, usize),
    colour_of: impl Fn(usize, usize) -> RGBColor,
) -> Result<()> {
    if h == 0 || w == 0 {
        return Ok(());
    }
    let (aw, ah) = area.dim_in_pixel();
    let scale = (f64::from(aw) / w as f64).min(f64::from(ah) / h as f64);
    let (dw, dh) = ((w as f64 * scale) as i32, (h as f64 * scale) as i32);
    for y in 0..dh {
        let r = ((f64::from(y) / scale) as usize).min(h - 1);
        for x in 0..dw {
            let c = ((f64::from(x) / scale) as usize).min(w - 1);
            area.draw_pixel((x, y), &colour_of(r, c)).map_err(drawing)?;
        }
    }
    Ok(())
}

/// A tick label: at most three decimals, trailing zeros dropped (`20`, `0.85`, `1.25`).
pub fn tick(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Draws an image down-sampled by 2 (the top-left pixel of each 2 x 2 block) with a caption
/// under it into `area`.
pub fn half_size_panel(
    area: &Area,
    (h, w): (usize, usize),
    caption: &str,
    colour_of: impl Fn(usize, usize) -> RGBColor,
) -> Result<()> {
    let (_, ah) = area.dim_in_pixel();
    let (image, below) = area.split_vertically(ah.saturating_sub(22));
    raster(&image, (h / 2, w / 2), |r, c| colour_of(2 * r, 2 * c))?;
    below
        .draw_text(caption, &text(14), (2, 4))
        .map_err(drawing)?;
    Ok(())
}

/// One line of a line panel.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Colour.
    pub colour: RGBColor,
    /// Dashed (a reference rather than a measurement).
    pub dashed: bool,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
}

/// The axis range of `values` with a margin of 6% (a unit range around a single value).
fn padded_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let margin = ((hi - lo) * 0.06).max(if hi > lo { 1e-9 } else { 0.5 });
    lo - margin..hi + margin
}

/// The labels of a line panel.
pub struct PanelLabels<'a> {
    /// Title above the panel.
    pub title: &'a str,
    /// Label of the x axis.
    pub x: &'a str,
    /// Label of the y axis.
    pub y: &'a str,
}

/// A line panel: axes with ticks and labels, a light grid, each series as a line with markers
/// (dashed without markers for references). The y range is fitted to the data, or `y_range`.
pub fn line_panel(
    area: &Area,
    labels: &PanelLabels,
    lines: &[Series],
    y_range: Option<Range<f64>>,
) -> Result<()> {
    let points = || lines.iter().flat_map(|s| s.points.iter().copied());
    let xs = padded_range(points().map(|p| p.0));
    let ys = y_range.unwrap_or_else(|| padded_range(points().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(labels.title, bold(16))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(58)
        .build_cartesian_2d(xs, ys)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc(labels.x)
        .y_desc(labels.y)
        .label_style(text(13))
        .axis_desc_style(text(14))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()
        .map_err(drawing)?;
    if lines.iter().all(|s| s.points.is_empty()) {
        let (w, h) = chart.plotting_area().dim_in_pixel();
        chart
            .plotting_area()
            .strip_coord_spec()
            .draw_text("no data", &text(14), (w as i32 / 2 - 25, h as i32 / 2))
            .map_err(drawing)?;
    }
    for s in lines {
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(
                    s.points.iter().copied(),
                    6,
                    4,
                    s.colour.stroke_width(1),
                ))
                .map_err(drawing)?;
        } else {
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    s.colour.stroke_width(2),
                ))
                .map_err(drawing)?;
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, s.colour.filled())),
                )
                .map_err(drawing)?;
        }
    }
    Ok(())
}

/// A legend in a row across `area` (a strip beside the panels, never over them): a swatch and
/// the name of each series, dashed ones drawn dashed.
pub fn legend(area: &Area, entries: &[(&str, RGBColor, bool)]) -> Result<()> {
    let style = text(14);
    let (_, h) = area.dim_in_pixel();
    let y = h as i32 / 2;
    let mut x = 12i32;
    for &(name, colour, dashed) in entries {
        if dashed {
            for k in 0..3 {
                area.draw(&PathElement::new(
                    vec![(x + 9 * k, y), (x + 9 * k + 5, y)],
                    colour.stroke_width(2),
                ))
                .map_err(drawing)?;
            }
        } else {
            area.draw(&PathElement::new(
                vec![(x, y), (x + 24, y)],
                colour.stroke_width(2),
            ))
            .map_err(drawing)?;
            area.draw(&Circle::new((x + 12, y), 3, colour.filled()))
                .map_err(drawing)?;
        }
        x += 30;
        area.draw_text(name, &style, (x, y - 8)).map_err(drawing)?;
        let (w, _) = area.estimate_text_size(name, &style).map_err(drawing)?;
        x += w as i32 + 24;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_nan() {
        assert_eq!(viridis(0.0), viridis(f32::NAN));
        assert_ne!(viridis(0.0), viridis(1.0));
        assert_eq!(viridis(2.0), viridis(1.0));
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(tick(&20.0), "20");
        assert_eq!(tick(&0.85), "0.85");
        assert_eq!(tick(&-0.0001), "0");
        assert_eq!(tick(&1.25), "1.25");
    }

    #[test]
    fn padded_range_covers_the_values() {
        let r = padded_range([0.2, 0.9, f64::NAN].into_iter());
        assert!(r.start < 0.2 && r.end > 0.9);
        let single = padded_range([3.0].into_iter());
        assert!(single.start < 3.0 && single.end > 3.0);
        assert_eq!(padded_range(std::iter::empty()), 0.0..1.0);
    }

    #[test]
    fn a_figure_with_text_draws_dark_pixels_and_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        figure(&path, (300, 200), |root| {
            root.fill(&WHITE).map_err(drawing)?;
            let (top, bottom) = root.split_vertically(160);
            line_panel(
                &top,
                &PanelLabels {
                    title: "t",
                    x: "x",
                    y: "y",
                },
                &[Series {
                    name: "a".into(),
                    colour: PALETTE[0],
                    dashed: false,
                    points: vec![(0.0, 0.0), (1.0, 1.0)],
                }],
                None,
            )?;
            legend(
                &bottom,
                &[("a", PALETTE[0], false), ("b", PALETTE[1], true)],
            )
        })
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (300, 200));
        let px = &buf[..info.buffer_size()];
        // The font rendered: text and axes make near-black pixels; the line is drawn in blue.
        assert!(px.chunks(3).any(|c| c.iter().all(|&v| v < 60)));
        assert!(px.chunks(3).any(|c| c == [31, 119, 180]));
    }
}
