//! A small RGB raster with just what the project's figures need: grey and heat-map images,
//! rectangles, lines, 8x8 bitmap text, PNG output. No font files, no system libraries.

use std::path::Path;

use anyhow::{Context, Result};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// White.
pub const WHITE: Rgb = [255, 255, 255];
/// Black.
pub const BLACK: Rgb = [0, 0, 0];

/// An RGB image, row-major.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<Rgb>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    /// Set one pixel; outside the canvas nothing happens.
    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = c;
        }
    }

    /// A filled rectangle.
    pub fn fill_rect(&mut self, x: i64, y: i64, w: usize, h: usize, c: Rgb) {
        for dy in 0..h as i64 {
            for dx in 0..w as i64 {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// A rectangle outline.
    pub fn stroke_rect(&mut self, x: i64, y: i64, w: usize, h: usize, c: Rgb) {
        let (w, h) = (w as i64, h as i64);
        self.line(x, y, x + w - 1, y, c);
        self.line(x, y + h - 1, x + w - 1, y + h - 1, c);
        self.line(x, y, x, y + h - 1, c);
        self.line(x + w - 1, y, x + w - 1, y + h - 1, c);
    }

    /// A one-pixel line (Bresenham).
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draw an image given as one colour per pixel (row-major `h` x `w`) at `(x, y)`.
    pub fn blit(&mut self, x: i64, y: i64, w: usize, h: usize, colour_of: impl Fn(usize) -> Rgb) {
        for r in 0..h {
            for col in 0..w {
                self.set(x + col as i64, y + r as i64, colour_of(r * w + col));
            }
        }
    }

    /// Draw text in the 8x8 bitmap font, each font pixel `scale` x `scale` canvas pixels.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        use font8x8::UnicodeFonts;
        for (i, ch) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
            let ox = x + (i * 8 * scale) as i64;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.fill_rect(
                            ox + (col * scale) as i64,
                            y + (row * scale) as i64,
                            scale,
                            scale,
                            c,
                        );
                    }
                }
            }
        }
    }

    /// Write the canvas as an RGB PNG, atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            let flat: Vec<u8> = self.pixels.iter().flatten().copied().collect();
            w.write_image_data(&flat)?;
        }
        unet_data::write_atomically(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The viridis colour map at `t` in [0, 1] (clamped), by linear interpolation between 9 stops.
pub fn viridis(t: f32) -> Rgb {
    const STOPS: [[f32; 3]; 9] = [
        [68.0, 1.0, 84.0],
        [71.0, 44.0, 122.0],
        [59.0, 81.0, 139.0],
        [44.0, 113.0, 142.0],
        [33.0, 144.0, 141.0],
        [39.0, 173.0, 129.0],
        [92.0, 200.0, 99.0],
        [170.0, 220.0, 50.0],
        [253.0, 231.0, 37.0],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f32;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f32;
    let mut out = [0u8; 3];
    for (k, o) in out.iter_mut().enumerate() {
        *o = (STOPS[i][k] + f * (STOPS[i + 1][k] - STOPS[i][k])).round() as u8;
    }
    out
}

/// A grey value as a colour.
pub fn grey(v: u8) -> Rgb {
    [v, v, v]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        assert_eq!(viridis(f32::NAN), [68, 1, 84]);
    }

    #[test]
    fn line_and_text_draw() {
        let mut c = Canvas::new(20, 10, WHITE);
        c.line(0, 0, 19, 9, BLACK);
        assert_eq!(c.pixels[0], BLACK);
        assert_eq!(c.pixels[9 * 20 + 19], BLACK);
        c.text(0, 0, "1", 1, [255, 0, 0]);
        assert!(c.pixels.contains(&[255, 0, 0]));
    }
}
