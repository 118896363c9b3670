//! Single 8-bit grey PNG images: the per-section files of the public ISBI mirror, and the
//! thresholded maps `unet predict` writes.

use std::io::Cursor;
use std::path::Path;

use crate::fsutil::write_atomically;
use crate::{Error, Result};

/// Decode a PNG into 8-bit grey pixels, returning `(height, width, pixels)`.
///
/// Grey and grey+alpha images keep their grey channel; RGB(A) images are accepted only when every
/// pixel is grey (R = G = B). 16-bit images are an error, as are palette images. `source_name`
/// (a path or URL) is used in error messages.
pub fn decode_png_grey(bytes: &[u8], source_name: &str) -> Result<(usize, usize, Vec<u8>)> {
    let err = |detail: String| Error::Png {
        source_name: source_name.to_string(),
        detail,
    };
    let max = crate::max_pixels();
    let limits = png::Limits {
        bytes: usize::try_from(max.saturating_mul(4)).unwrap_or(usize::MAX),
    };
    let decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    let mut reader = decoder
        .read_info()
        .map_err(|e| err(format!("not a readable PNG: {e}")))?;
    let declared = u64::from(reader.info().width) * u64::from(reader.info().height);
    if declared > max {
        return Err(err(format!(
            "declares {declared} pixels, more than the bound of {max}; refused before reading \
             (raise it with --max-pixels or UNET_MAX_PIXELS if the file is real)"
        )));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| err(format!("PNG data is damaged: {e}")))?;
    buf.truncate(info.buffer_size());
    if info.bit_depth != png::BitDepth::Eight {
        return Err(err(format!(
            "{:?}-bit PNG, expected 8-bit grey",
            info.bit_depth
        )));
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(err("palette PNG, expected 8-bit grey".into())),
    };
    let mut grey = Vec::with_capacity(w * h);
    for (i, px) in buf.chunks_exact(channels).enumerate() {
        if channels >= 3 && (px[0] != px[1] || px[1] != px[2]) {
            return Err(err(format!(
                "colour PNG: pixel ({}, {}) is not grey",
                i / w,
                i % w
            )));
        }
        grey.push(px[0]);
    }
    Ok((h, w, grey))
}

/// Read an 8-bit grey PNG file.
pub fn read_png_grey(path: impl AsRef<Path>) -> Result<(usize, usize, Vec<u8>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_png_grey(&bytes, &path.display().to_string())
}

/// Encode 8-bit grey pixels as PNG bytes.
pub fn encode_png_grey(height: usize, width: usize, pixels: &[u8]) -> Result<Vec<u8>> {
    if pixels.len() != height * width || height == 0 || width == 0 {
        return Err(Error::Shape(format!(
            "{height}x{width} PNG from {} pixels",
            pixels.len()
        )));
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| Error::Png {
            source_name: "encoder".into(),
            detail: e.to_string(),
        };
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(pixels).map_err(png_err)?;
    }
    Ok(out)
}

/// Write 8-bit grey pixels as a PNG file, atomically.
pub fn write_png_grey(
    path: impl AsRef<Path>,
    height: usize,
    width: usize,
    pixels: &[u8],
) -> Result<()> {
    write_atomically(path, &encode_png_grey(height, width, pixels)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip() {
        let px: Vec<u8> = (0..12).map(|v| v * 20).collect();
        let bytes = encode_png_grey(3, 4, &px).unwrap();
        assert_eq!(decode_png_grey(&bytes, "x").unwrap(), (3, 4, px));
    }

    #[test]
    fn garbage_is_an_error() {
        let e = decode_png_grey(b"hello", "mem.png")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("mem.png: not a readable PNG"), "{e}");
    }
}
