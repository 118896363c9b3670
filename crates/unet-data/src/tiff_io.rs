//! Multi-page TIFF stacks, as ImageJ/Fiji and the ISBI challenge use them.
//!
//! Reading accepts 8-bit, 16-bit and 32-bit float grey pages, and several samples per pixel
//! stored interleaved or as separate planes; every page must have the size and type of the
//! first. Writing produces an uncompressed baseline TIFF with one page per section, written
//! atomically.

use std::fs;
use std::io::{Cursor, Seek};
use std::path::Path;

use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::{ColorType, TiffError};

use crate::{AnyStack, Error, Result, Stack};

/// A pixel type that can be written to a TIFF page.
pub trait TiffPixel: Copy + sealed::Sealed {
    /// Bits per sample.
    #[doc(hidden)]
    const BITS: u16;
    /// TIFF's SampleFormat: 1 unsigned integer, 3 IEEE float.
    #[doc(hidden)]
    const SAMPLE_FORMAT: u16;
    /// Appends `values` as little-endian bytes.
    #[doc(hidden)]
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for f32 {}
}

impl TiffPixel for u8 {
    const BITS: u16 = 8;
    const SAMPLE_FORMAT: u16 = 1;
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>) {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
}

impl TiffPixel for u16 {
    const BITS: u16 = 16;
    const SAMPLE_FORMAT: u16 = 1;
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>) {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
}

impl TiffPixel for f32 {
    const BITS: u16 = 32;
    const SAMPLE_FORMAT: u16 = 3;
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>) {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
}

/// Write a grey stack as a multi-page TIFF, one page per section, atomically (a temporary file in
/// the same directory, then a rename), so an interrupted write never leaves a half file behind;
/// laid out as ImageJ writes stacks ([`crate::TiffSectionWriter`]), so ImageJ, Fiji and
/// tifffile open it as the stack it is.
///
/// Only stacks of one sample per pixel are written.
pub fn write_stack<T: TiffPixel>(path: impl AsRef<Path>, stack: &Stack<T>) -> Result<()> {
    write_sections(path.as_ref(), stack, 1)
}

/// Writes the planes of `stack` (`channels` a section) through [`crate::TiffSectionWriter`].
pub(crate) fn write_sections<T: TiffPixel>(
    path: &Path,
    stack: &Stack<T>,
    channels: usize,
) -> Result<()> {
    if stack.samples() != 1 || !stack.pages().is_multiple_of(channels.max(1)) {
        return Err(Error::Shape(format!(
            "{}: {} pages of {} samples per pixel are not sections of {channels} grey planes",
            path.display(),
            stack.pages(),
            stack.samples()
        )));
    }
    let sections = stack.pages() / channels;
    let mut writer = crate::TiffSectionWriter::<T>::create(
        path,
        sections,
        channels,
        stack.height(),
        stack.width(),
    )?;
    let section = channels * stack.height() * stack.width();
    for values in stack.as_slice().chunks_exact(section) {
        writer.write_section(values)?;
    }
    writer.finish()
}

/// Read every page of a TIFF file.
///
/// Errors name the file and page: not a TIFF, an empty or truncated file, an unsupported pixel
/// type, pages of different sizes or types.
pub fn read_stack(path: impl AsRef<Path>) -> Result<AnyStack> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_stack(&bytes, path)
}

/// Read a TIFF stack whose pages must be 8-bit (images or labels).
pub fn read_u8_stack(path: impl AsRef<Path>) -> Result<Stack<u8>> {
    let path = path.as_ref();
    match read_stack(path)? {
        AnyStack::U8(s) => Ok(s),
        other => Err(Error::WrongPixelType {
            path: path.to_path_buf(),
            expected: "8-bit",
            found: other.pixel_type(),
        }),
    }
}

/// Decode TIFF bytes; `path` is only used in error messages.
///
/// Several samples per pixel come back interleaved, whether the file stores them so
/// (PlanarConfiguration 1) or as separate planes (2).
pub fn decode_stack(bytes: &[u8], path: &Path) -> Result<AnyStack> {
    decode_tiff(bytes, path).map(|(stack, _)| stack)
}

/// [`decode_stack`], and the first page's ImageDescription (ImageJ's or OME's metadata) when it
/// has one in ASCII.
pub(crate) fn decode_tiff(bytes: &[u8], path: &Path) -> Result<(AnyStack, Option<String>)> {
    if bytes.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    let magic = &bytes[..bytes.len().min(4)];
    if !matches!(magic, b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+") {
        return Err(Error::NotTiff {
            path: path.to_path_buf(),
            magic: magic.to_vec(),
        });
    }
    let tiff_err = |page: usize, e: TiffError| tiff_error(path, page, e);
    check_directories(&mut &bytes[..], path)?;
    let max = crate::max_pixels();
    let mut decoder = Decoder::new(Cursor::new(bytes))
        .map_err(|e| tiff_err(0, e))?
        .with_limits(decoder_limits(bytes.len() as u64));
    let file_bound = (bytes.len() as u64).saturating_mul(crate::MAX_COMPRESSION_RATIO);
    let mut declared_so_far = 0u64;

    let mut first: Option<(u32, u32, ColorType)> = None;
    let mut description: Option<String> = None;
    let mut pages: Vec<DecodingResult> = Vec::new();
    let mut page = 0usize;
    loop {
        let (w, h) = decoder.dimensions().map_err(|e| tiff_err(page, e))?;
        let color = decoder.colortype().map_err(|e| tiff_err(page, e))?;
        let samples = samples_of(color).ok_or_else(|| Error::UnsupportedPixelType {
            path: path.to_path_buf(),
            page,
            pixel: format!("{color:?}"),
        })?;
        match first {
            None => {
                first = Some((w, h, color));
                description = decoder
                    .find_tag(tiff::tags::Tag::ImageDescription)
                    .map_err(|e| tiff_err(page, e))?
                    .and_then(|v| v.into_string().ok());
            }
            Some((w0, h0, c0)) if (w0, h0, c0) != (w, h, color) => {
                return Err(Error::PageMismatch {
                    path: path.to_path_buf(),
                    page,
                    expected: describe(w0, h0, c0),
                    found: describe(w, h, color),
                });
            }
            Some(_) => {}
        }
        let page_values = u64::from(w) * u64::from(h) * samples as u64;
        declared_so_far = declared_so_far.saturating_add(page_values);
        let too_large = |why: String| Error::TooLarge {
            path: path.to_path_buf(),
            page,
            declared: declared_so_far,
            why,
        };
        if declared_so_far > max {
            return Err(too_large(format!("the bound of {max}")));
        }
        // A page's bytes cannot exceed what its compressed data could expand to.
        if page_values > file_bound.max(1 << 20) {
            return Err(too_large(format!(
                "a file of {} bytes can hold",
                bytes.len()
            )));
        }
        pages.push(read_page(&mut decoder, path, page, samples)?);
        page += 1;
        if !decoder.more_images() {
            break;
        }
        decoder.next_image().map_err(|e| tiff_err(page, e))?;
    }
    let (w, h, color) = first.expect("the loop reads at least one page");
    let (w, h) = (w as usize, h as usize);
    let samples = samples_of(color).expect("checked above");
    let unsupported = |found: &DecodingResult| Error::UnsupportedPixelType {
        path: path.to_path_buf(),
        page: 0,
        pixel: format!("{color:?} decoded as {}", variant_name(found)),
    };
    macro_rules! collect {
        ($variant:ident, $ty:ty) => {{
            let mut data: Vec<$ty> = Vec::with_capacity(pages.len() * w * h * samples);
            for p in &pages {
                match p {
                    DecodingResult::$variant(v) => data.extend_from_slice(&v[..w * h * samples]),
                    other => return Err(unsupported(other)),
                }
            }
            Stack::with_samples(pages.len(), h, w, samples, data)?
        }};
    }
    let stack = match &pages[0] {
        DecodingResult::U8(_) => AnyStack::U8(collect!(U8, u8)),
        DecodingResult::U16(_) => AnyStack::U16(collect!(U16, u16)),
        DecodingResult::F32(_) => AnyStack::F32(collect!(F32, f32)),
        other => return Err(unsupported(other)),
    };
    Ok((stack, description))
}

/// The error of the TIFF library on `page`, as [`Error::Truncated`] when the file ended early.
pub(crate) fn tiff_error(path: &Path, page: usize, e: TiffError) -> Error {
    let detail = e.to_string();
    let truncated =
        matches!(&e, TiffError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
    if truncated {
        Error::Truncated {
            path: path.to_path_buf(),
            page,
            detail,
        }
    } else {
        Error::Tiff {
            path: path.to_path_buf(),
            page,
            detail,
        }
    }
}

/// The decoder's limits for a file of `file_len` bytes.
pub(crate) fn decoder_limits(file_len: u64) -> Limits {
    let mut limits = Limits::default();
    // The decoder's own buffers stay within the bound too (4 bytes for the widest sample).
    let decoding = crate::max_pixels().saturating_mul(4);
    limits.decoding_buffer_size = usize::try_from(decoding).unwrap_or(usize::MAX);
    // A strip's compressed bytes lie in the file: a count beyond its size is damage, and
    // would otherwise allocate up to the decoder's default of 128 MiB for a few bytes of input.
    // (A file larger than the pixel bound still cannot make one strip exceed that bound.)
    limits.intermediate_buffer_size = usize::try_from(file_len.min(decoding)).unwrap_or(usize::MAX);
    limits
}

/// The decoder's current page (`page` in error messages) of `samples` samples per pixel, its
/// samples interleaved; at least `width * height * samples` values, or an error.
pub(crate) fn read_page<R: std::io::Read + Seek>(
    decoder: &mut Decoder<R>,
    path: &Path,
    page: usize,
    samples: usize,
) -> Result<DecodingResult> {
    let tiff_err = |e: TiffError| tiff_error(path, page, e);
    let (w, h) = decoder.dimensions().map_err(tiff_err)?;
    // Samples stored as separate planes (PlanarConfiguration = 2) would otherwise decode as
    // a short, seemingly truncated page.
    let planar = decoder
        .find_tag_unsigned::<u16>(tiff::tags::Tag::PlanarConfiguration)
        .map_err(tiff_err)?;
    let planar = samples > 1 && planar == Some(2);
    let expected = w as usize * h as usize * samples;
    let image = if planar {
        // All planes, one after the other (the caller's bound keeps them within the limits).
        let mut planes = DecodingResult::U8(Vec::new());
        decoder
            .read_image_to_buffer(&mut planes)
            .map_err(tiff_err)?;
        interleave(planes, w as usize * h as usize, samples)
    } else {
        decoder.read_image().map_err(tiff_err)?
    };
    let len = decoded_len(&image);
    if len < expected {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            page,
            detail: format!("{len} of {expected} values"),
        });
    }
    Ok(image)
}

/// Planes of `samples` x `n` values, one after the other, as `n` pixels of interleaved samples.
/// A short buffer (fewer planes than asked) is returned as it is, for the caller to call
/// truncated.
fn interleave(planes: DecodingResult, n: usize, samples: usize) -> DecodingResult {
    fn go<T: Copy>(v: Vec<T>, n: usize, samples: usize) -> Vec<T> {
        if v.len() < n * samples {
            return v;
        }
        (0..n * samples)
            .map(|i| v[(i % samples) * n + i / samples])
            .collect()
    }
    match planes {
        DecodingResult::U8(v) => DecodingResult::U8(go(v, n, samples)),
        DecodingResult::U16(v) => DecodingResult::U16(go(v, n, samples)),
        DecodingResult::F32(v) => DecodingResult::F32(go(v, n, samples)),
        other => other,
    }
}

/// A TIFF's bytes read at offsets: the whole file in memory, or an open file (so a file larger
/// than memory can be checked too).
pub(crate) trait ByteSource {
    /// The file's length in bytes.
    fn byte_len(&self) -> u64;
    /// Fills `buf` from byte `at`: `Ok(false)` when the file ends first.
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<bool>;
}

impl ByteSource for &[u8] {
    fn byte_len(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        let at = usize::try_from(at).unwrap_or(usize::MAX);
        match at.checked_add(buf.len()).and_then(|end| self.get(at..end)) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// An open file as a [`ByteSource`]: reads that follow one another need no seek, so walking a
/// directory's entries reads through the buffer.
pub(crate) struct FileSource {
    reader: std::io::BufReader<fs::File>,
    len: u64,
    pos: u64,
}

impl FileSource {
    /// Reads `file`, `len` bytes long, from its start.
    pub(crate) fn new(file: fs::File, len: u64) -> Self {
        FileSource {
            reader: std::io::BufReader::new(file),
            len,
            pos: u64::MAX,
        }
    }
}

impl ByteSource for FileSource {
    fn byte_len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        use std::io::Read;
        if at.saturating_add(buf.len() as u64) > self.len {
            return Ok(false);
        }
        if at != self.pos {
            self.reader.seek(std::io::SeekFrom::Start(at))?;
        }
        match self.reader.read_exact(buf) {
            Ok(()) => {
                self.pos = at + buf.len() as u64;
                Ok(true)
            }
            // The file shrank since its length was taken.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.pos = u64::MAX;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Walks the TIFF's chain of image directories before the decoder sees it, refusing a tag whose
/// values, by its count, would lie beyond the end of the file, a directory outside the file, and
/// a chain that loops. The decoder would allocate such a tag's values (and their expanded
/// copies, many times the file's size) before finding out.
pub(crate) fn check_directories(src: &mut impl ByteSource, path: &Path) -> Result<()> {
    let bad = |page: usize, detail: String| Error::Tiff {
        path: path.to_path_buf(),
        page,
        detail,
    };
    let mut order = [0u8; 2];
    let little = src.read_at(0, &mut order).map_err(|e| Error::io(path, e))? && order == *b"II";
    let len = src.byte_len();
    // The `n`-byte unsigned integer at `at`, in the file's byte order.
    let mut uint_at = |at: u64, n: usize| -> Result<Option<u64>> {
        let mut b = [0u8; 8];
        let b = &mut b[..n];
        if !src.read_at(at, b).map_err(|e| Error::io(path, e))? {
            return Ok(None);
        }
        let digits = |v: u64, &d: &u8| v << 8 | u64::from(d);
        Ok(Some(match little {
            true => b.iter().rev().fold(0, digits),
            false => b.iter().fold(0, digits),
        }))
    };
    let big = uint_at(2, 2)? == Some(43);
    let (mut next, count_len, entry_len, inline, offset_len) = match big {
        true => (uint_at(8, 8)?, 8u64, 20u64, 8u64, 8usize),
        false => (uint_at(4, 4)?, 2, 12, 4, 4),
    };
    let mut seen = std::collections::HashSet::new();
    let mut page = 0;
    while let Some(offset) = next.filter(|&o| o != 0) {
        if !seen.insert(offset) {
            return Err(bad(
                page,
                format!("the directory chain loops back to byte {offset}"),
            ));
        }
        let Some(entries) = uint_at(offset, count_len as usize)? else {
            // The decoder names a directory beyond the end as truncation.
            return Ok(());
        };
        let first = offset.saturating_add(count_len);
        let table = entries.saturating_mul(entry_len);
        if first.saturating_add(table) > len {
            return Ok(());
        }
        for e in 0..entries {
            let entry = first + e * entry_len;
            let tag = uint_at(entry, 2)?.unwrap_or(0);
            let size = match uint_at(entry + 2, 2)?.unwrap_or(0) {
                1 | 2 | 6 | 7 => 1,
                3 | 8 => 2,
                4 | 9 | 11 | 13 => 4,
                5 | 10 | 12 | 16 | 17 | 18 => 8,
                // Unknown types are the decoder's to refuse.
                _ => continue,
            };
            let (count, value) = match big {
                true => (uint_at(entry + 4, 8)?, uint_at(entry + 12, 8)?),
                false => (uint_at(entry + 4, 4)?, uint_at(entry + 8, 4)?),
            };
            let (count, value) = (count.unwrap_or(0), value.unwrap_or(0));
            let value_bytes = count.saturating_mul(size);
            if value_bytes > inline && value.saturating_add(value_bytes) > len {
                return Err(bad(
                    page,
                    format!(
                        "tag {tag} declares {count} values ({value_bytes} bytes at byte {value}), \
                         beyond the end of the {len}-byte file"
                    ),
                ));
            }
        }
        next = uint_at(first + table, offset_len)?;
        page += 1;
    }
    Ok(())
}

pub(crate) fn samples_of(color: ColorType) -> Option<usize> {
    match color {
        ColorType::Gray(8 | 16 | 32) => Some(1),
        // 32 bits: float samples (32-bit integers are refused once decoded).
        ColorType::RGB(8 | 16 | 32) => Some(3),
        ColorType::RGBA(8 | 16 | 32) => Some(4),
        ColorType::GrayA(8 | 16 | 32) => Some(2),
        ColorType::Multiband {
            bit_depth: 8 | 16 | 32,
            num_samples,
        } => Some(num_samples as usize),
        _ => None,
    }
}

pub(crate) fn describe(w: u32, h: u32, c: ColorType) -> String {
    format!("{w}x{h} {c:?}")
}

fn decoded_len(r: &DecodingResult) -> usize {
    match r {
        DecodingResult::U8(v) => v.len(),
        DecodingResult::U16(v) => v.len(),
        DecodingResult::F32(v) => v.len(),
        // Other types are rejected after the page loop; their length does not matter here.
        _ => usize::MAX,
    }
}

pub(crate) fn variant_name(r: &DecodingResult) -> &'static str {
    match r {
        DecodingResult::U8(_) => "u8",
        DecodingResult::U16(_) => "u16",
        DecodingResult::U32(_) => "u32",
        DecodingResult::U64(_) => "u64",
        DecodingResult::F16(_) => "f16",
        DecodingResult::F32(_) => "f32",
        DecodingResult::F64(_) => "f64",
        DecodingResult::I8(_) => "i8",
        DecodingResult::I16(_) => "i16",
        DecodingResult::I32(_) => "i32",
        DecodingResult::I64(_) => "i64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_pixel_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tif");
        let s8 = Stack::new(3, 4, 5, (0..60).map(|v| v as u8).collect()).unwrap();
        write_stack(&p, &s8).unwrap();
        assert_eq!(read_stack(&p).unwrap(), AnyStack::U8(s8));
        let s16 = Stack::new(2, 3, 2, (0..12).map(|v| v * 1000).collect::<Vec<u16>>()).unwrap();
        write_stack(&p, &s16).unwrap();
        assert_eq!(read_stack(&p).unwrap(), AnyStack::U16(s16));
        let sf = Stack::new(2, 2, 3, (0..12).map(|v| v as f32 * 0.25 - 1.0).collect()).unwrap();
        write_stack(&p, &sf).unwrap();
        assert_eq!(read_stack(&p).unwrap(), AnyStack::F32(sf));
        // no temporary file is left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
