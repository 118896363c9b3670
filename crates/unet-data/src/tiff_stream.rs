//! TIFF and BigTIFF stacks read and written section by section, so a stack larger than memory
//! can be predicted with memory bounded by one section.
//!
//! [`TiffSections`] reads a file's sections with the channel layout [`crate::read_channels`]
//! gives it, decoding only the pages of the section asked for; [`TiffSectionWriter`] writes a
//! stack section after section, as [`crate::write_channels`] would write the whole of it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;
use tiff::ColorType;

use crate::channels::{channel_layout, imagej_description};
use crate::fsutil::{sync_parent_dir, temp_path_for};
use crate::tiff_io::{
    check_directories, decoder_limits, describe, read_page, samples_of, tiff_error, variant_name,
    ByteSource, FileSource,
};
use crate::{AnyStack, ChannelStack, Error, Result, Stack, TiffPixel};

/// The sample types a page may hold, as [`AnyStack`]'s variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pixel {
    U8,
    U16,
    F32,
}

impl Pixel {
    fn name(self) -> &'static str {
        match self {
            Pixel::U8 => "8-bit",
            Pixel::U16 => "16-bit",
            Pixel::F32 => "32-bit float",
        }
    }
}

/// A TIFF or BigTIFF stack opened for reading section by section.
///
/// Opening walks the file's chain of pages once (checking, as [`crate::read_stack`] does, that
/// no directory or tag lies beyond the end of the file and that the chain does not loop) and
/// learns the pages' size and pixel type and page 0's ImageDescription; no pixel is read until
/// a section is asked for. The sections and channels are those [`crate::read_channels`] finds:
/// the samples of each pixel, each page a section; an ImageJ hyperstack's `channels=C`; an
/// OME-TIFF's `SizeC` in its `DimensionOrder`; else one grey channel, each page a section.
///
/// The pixel bound ([`crate::max_pixels`]) applies to one section, not the whole file: that is
/// what a read allocates.
///
/// ```
/// use unet_data::{read_channels, write_stack, Stack, TiffSections};
///
/// # fn main() -> unet_data::Result<()> {
/// let dir = std::env::temp_dir().join(format!("unet-data-sections-doc-{}", std::process::id()));
/// let path = dir.join("s.tif");
/// write_stack(&path, &Stack::new(3, 2, 2, (0..12u8).collect())?)?;
/// let mut sections = TiffSections::open(&path)?;
/// assert_eq!((sections.sections(), sections.channels()), (3, 1));
/// let whole = read_channels(&path)?;
/// assert_eq!(sections.read_unit_section(2)?, whole.unit_section(2));
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok(())
/// # }
/// ```
pub struct TiffSections {
    path: PathBuf,
    decoder: Decoder<BufReader<File>>,
    pages: usize,
    height: usize,
    width: usize,
    samples: usize,
    pixel: Pixel,
    channels: usize,
    /// The page of each (section, channel) plane in turn, when not the file's order.
    order: Option<Vec<usize>>,
    description: Option<String>,
}

impl std::fmt::Debug for TiffSections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiffSections")
            .field("path", &self.path)
            .field("pages", &self.pages)
            .field("sections", &self.sections())
            .field("channels", &self.channels)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("pixel_type", &self.pixel.name())
            .finish_non_exhaustive()
    }
}

impl TiffSections {
    /// Opens a TIFF or BigTIFF file and learns its pages, without reading their pixels.
    ///
    /// Errors name the file and the page: not a TIFF, an empty or truncated file, a damaged
    /// directory chain, an unsupported pixel type, a page whose size, samples or pixel type
    /// differ from page 0's, metadata that does not fit the pages, a section over the pixel
    /// bound.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |e| Error::io(path, e);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(Error::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut source = FileSource::new(file.try_clone().map_err(io)?, len);
        let mut magic = vec![0u8; len.min(4) as usize];
        source.read_at(0, &mut magic).map_err(io)?;
        if !matches!(&magic[..], b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+") {
            return Err(Error::NotTiff {
                path: path.to_path_buf(),
                magic,
            });
        }
        check_directories(&mut source, path)?;
        drop(source);
        let mut file = file;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut decoder = Decoder::new(BufReader::new(file))
            .map_err(|e| tiff_error(path, 0, e))?
            .with_limits(decoder_limits(len));

        let mut first: Option<(u32, u32, ColorType, Pixel)> = None;
        let mut description = None;
        let mut pages = 0usize;
        loop {
            let page = pages;
            let (w, h, color, pixel) = page_info(&mut decoder, path, page)?;
            match first {
                None => {
                    first = Some((w, h, color, pixel));
                    description = decoder
                        .find_tag(Tag::ImageDescription)
                        .map_err(|e| tiff_error(path, page, e))?
                        .and_then(|v| v.into_string().ok());
                }
                Some((w0, h0, c0, p0)) if (w0, h0, c0, p0) != (w, h, color, pixel) => {
                    return Err(Error::PageMismatch {
                        path: path.to_path_buf(),
                        page,
                        expected: format!("{} {}", describe(w0, h0, c0), p0.name()),
                        found: format!("{} {}", describe(w, h, color), pixel.name()),
                    });
                }
                Some(_) => {}
            }
            pages += 1;
            if !decoder.more_images() {
                break;
            }
            decoder
                .next_image()
                .map_err(|e| tiff_error(path, pages, e))?;
        }
        let (w, h, color, pixel) = first.expect("the loop reads at least one page");
        let samples = samples_of(color).expect("checked by page_info");
        let (channels, order) = channel_layout(description.as_deref(), pages, samples, path)?;

        let (w, h) = (w as usize, h as usize);
        let page_values = (w as u64) * (h as u64) * samples as u64;
        let section_values = (w as u64) * (h as u64) * channels as u64;
        let too_large = |declared: u64, why: String| Error::TooLarge {
            path: path.to_path_buf(),
            page: 0,
            declared,
            why,
        };
        let max = crate::max_pixels();
        if section_values > max {
            return Err(too_large(
                section_values,
                format!("the bound of {max} for one section"),
            ));
        }
        // A page's bytes cannot exceed what its compressed data could expand to.
        let file_bound = len.saturating_mul(crate::MAX_COMPRESSION_RATIO);
        if page_values > file_bound.max(1 << 20) {
            return Err(too_large(
                page_values,
                format!("a file of {len} bytes can hold"),
            ));
        }
        Ok(TiffSections {
            path: path.to_path_buf(),
            decoder,
            pages,
            height: h,
            width: w,
            samples,
            pixel,
            channels,
            order,
            description,
        })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of pages in the file.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Number of sections.
    pub fn sections(&self) -> usize {
        match self.samples {
            1 => self.pages / self.channels,
            _ => self.pages,
        }
    }

    /// Channels per section.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Rows of a plane.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Columns of a plane.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The pixel type in words ("8-bit", "16-bit", "32-bit float"), as
    /// [`ChannelStack::pixel_type`].
    pub fn pixel_type(&self) -> &'static str {
        self.pixel.name()
    }

    /// Page 0's ImageDescription (ImageJ's or OME's metadata), when it has one in ASCII.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Section `s`: a one-section [`ChannelStack`] of its channel planes, 8-bit, 16-bit or
    /// float as stored; equal to `read_channels(path)?.select(&[s])`.
    ///
    /// Errors name the file and page (a truncated or damaged page), or the section when it is
    /// out of range.
    pub fn read_section(&mut self, s: usize) -> Result<ChannelStack> {
        if s >= self.sections() {
            return Err(Error::Shape(format!(
                "{}: section {s} asked for, the stack has {} sections",
                self.path.display(),
                self.sections()
            )));
        }
        if self.samples > 1 {
            let page = self.read_pages(&[s])?;
            return Ok(ChannelStack::from_interleaved(page));
        }
        let c = self.channels;
        let pages: Vec<usize> = match &self.order {
            Some(order) => order[s * c..(s + 1) * c].to_vec(),
            None => (s * c..(s + 1) * c).collect(),
        };
        let planes = self.read_pages(&pages)?;
        ChannelStack::new(c, planes)
    }

    /// Section `s`'s channel planes in the net's units, `C x H x W` values: 8-bit values / 255,
    /// 16-bit / 65535, float as stored (as [`ChannelStack::unit_section`]).
    pub fn read_unit_section(&mut self, s: usize) -> Result<Vec<f32>> {
        Ok(self.read_section(s)?.unit_section(0))
    }

    /// The given pages, one after the other, with their samples interleaved.
    fn read_pages(&mut self, pages: &[usize]) -> Result<AnyStack> {
        let (h, w, samples) = (self.height, self.width, self.samples);
        let page_len = h * w * samples;
        let mut data = match self.pixel {
            Pixel::U8 => DecodingResult::U8(Vec::with_capacity(pages.len() * page_len)),
            Pixel::U16 => DecodingResult::U16(Vec::with_capacity(pages.len() * page_len)),
            Pixel::F32 => DecodingResult::F32(Vec::with_capacity(pages.len() * page_len)),
        };
        for &page in pages {
            let path = self.path.as_path();
            self.decoder
                .seek_to_image(page)
                .map_err(|e| tiff_error(path, page, e))?;
            // The file may have changed since it was opened.
            let (pw, ph) = self
                .decoder
                .dimensions()
                .map_err(|e| tiff_error(path, page, e))?;
            if (pw as usize, ph as usize) != (w, h) {
                return Err(Error::PageMismatch {
                    path: path.to_path_buf(),
                    page,
                    expected: format!("{w}x{h}"),
                    found: format!("{pw}x{ph}"),
                });
            }
            let image = read_page(&mut self.decoder, path, page, samples)?;
            match (&mut data, image) {
                (DecodingResult::U8(d), DecodingResult::U8(v)) => d.extend(&v[..page_len]),
                (DecodingResult::U16(d), DecodingResult::U16(v)) => d.extend(&v[..page_len]),
                (DecodingResult::F32(d), DecodingResult::F32(v)) => d.extend(&v[..page_len]),
                (_, other) => {
                    return Err(Error::UnsupportedPixelType {
                        path: path.to_path_buf(),
                        page,
                        pixel: format!("{} decoded as {}", self.pixel.name(), variant_name(&other)),
                    })
                }
            }
        }
        let n = pages.len();
        Ok(match data {
            DecodingResult::U8(d) => Stack::with_samples(n, h, w, samples, d)?.into(),
            DecodingResult::U16(d) => Stack::with_samples(n, h, w, samples, d)?.into(),
            DecodingResult::F32(d) => Stack::with_samples(n, h, w, samples, d)?.into(),
            _ => unreachable!("created as one of the three above"),
        })
    }
}

/// The decoder's current page's size, colour type and pixel type; an unsupported pixel type is
/// an error naming the page.
fn page_info(
    decoder: &mut Decoder<BufReader<File>>,
    path: &Path,
    page: usize,
) -> Result<(u32, u32, ColorType, Pixel)> {
    let tiff_err = |e| tiff_error(path, page, e);
    let (w, h) = decoder.dimensions().map_err(tiff_err)?;
    let color = decoder.colortype().map_err(tiff_err)?;
    // SampleFormat: 1 unsigned integers (the default), 3 IEEE floats.
    let format = decoder
        .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
        .map_err(tiff_err)?
        .and_then(|v| v.first().copied())
        .unwrap_or(1);
    let bits = match color {
        ColorType::Gray(b) | ColorType::RGB(b) | ColorType::RGBA(b) | ColorType::GrayA(b) => b,
        ColorType::Multiband { bit_depth, .. } => bit_depth,
        _ => 0,
    };
    let pixel = match (samples_of(color), bits, format) {
        (Some(_), 8, 1) => Some(Pixel::U8),
        (Some(_), 16, 1) => Some(Pixel::U16),
        (Some(_), 32, 3) => Some(Pixel::F32),
        _ => None,
    };
    let pixel = pixel.ok_or_else(|| Error::UnsupportedPixelType {
        path: path.to_path_buf(),
        page,
        pixel: format!("{color:?} of sample format {format}"),
    })?;
    Ok((w, h, color, pixel))
}

/// A stack written section after section to a TIFF, atomically: into a temporary file beside
/// `path`, renamed over it by [`TiffSectionWriter::finish`]; a writer dropped unfinished
/// removes its temporary file and leaves `path` as it was.
///
/// Each section is `channels` grey planes, written as pages channel-fastest with ImageJ's
/// description (a hyperstack when `channels > 1`), so the file reads back as
/// [`crate::read_channels`] reads it whole. The pixels of all pages lie one after the other and
/// the page directories follow them, as ImageJ writes its stacks: ImageJ, Fiji and tifffile
/// read a file that describes itself as an ImageJ stack as one contiguous block of pixels, not
/// page by page. The file is classic TIFF when it will be under 4 GiB, BigTIFF otherwise.
/// Pixels are `u8`, `u16` or `f32`, little-endian, uncompressed, one strip a page.
///
/// ```
/// use unet_data::{read_channels, TiffSectionWriter};
///
/// # fn main() -> unet_data::Result<()> {
/// let dir = std::env::temp_dir().join(format!("unet-data-writer-doc-{}", std::process::id()));
/// let path = dir.join("p.tif");
/// // 2 sections of 3 channels of 1 x 2 pixels.
/// let mut out = TiffSectionWriter::<f32>::create(&path, 2, 3, 1, 2)?;
/// for s in 0..2 {
///     out.write_section(&[s as f32; 6])?;
/// }
/// out.finish()?;
/// let back = read_channels(&path)?;
/// assert_eq!((back.sections(), back.channels()), (2, 3));
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok(())
/// # }
/// ```
pub struct TiffSectionWriter<T: TiffPixel> {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once finished, dropped, or after a failed write.
    file: Option<BufWriter<File>>,
    big: bool,
    sections: usize,
    channels: usize,
    height: usize,
    width: usize,
    written: usize,
    description: String,
    finished: bool,
    pixel: PhantomData<T>,
}

impl<T: TiffPixel> std::fmt::Debug for TiffSectionWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiffSectionWriter")
            .field("path", &self.path)
            .field("big_tiff", &self.big)
            .field("sections", &self.sections)
            .field("channels", &self.channels)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// Whether a file of `pages` pages of `height` rows of `page_bytes` bytes, with a description
/// of `description` bytes, may reach 4 GiB: the pixels, and a generous bound on each page's
/// directory (its tags, and a strip offset and count for every row at most).
fn needs_big_tiff(pages: u64, height: u64, page_bytes: u64, description: u64) -> bool {
    let per_page = page_bytes
        .saturating_add(512)
        .saturating_add(height.saturating_mul(16));
    let total = pages
        .saturating_mul(per_page)
        .saturating_add(description)
        .saturating_add(16);
    total > u64::from(u32::MAX)
}

impl<T: TiffPixel> TiffSectionWriter<T> {
    /// Starts writing `sections` sections of `channels` planes of `height` x `width` pixels to
    /// `path` (its directory created if missing): classic TIFF when the file will be under
    /// 4 GiB, BigTIFF otherwise.
    pub fn create(
        path: impl AsRef<Path>,
        sections: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        let page_bytes = (height as u64)
            .saturating_mul(width as u64)
            .saturating_mul(std::mem::size_of::<T>() as u64);
        let pages = (sections as u64).saturating_mul(channels as u64);
        let description = imagej_description(channels, sections).len() as u64;
        let big = needs_big_tiff(pages, height as u64, page_bytes, description);
        Self::create_kind(path.as_ref(), sections, channels, height, width, big)
    }

    /// [`TiffSectionWriter::create`], but BigTIFF whatever the size (for tests, and readers
    /// that want one format).
    pub fn create_big(
        path: impl AsRef<Path>,
        sections: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        Self::create_kind(path.as_ref(), sections, channels, height, width, true)
    }

    fn create_kind(
        path: &Path,
        sections: usize,
        channels: usize,
        height: usize,
        width: usize,
        big: bool,
    ) -> Result<Self> {
        let fits = |n: usize| n > 0 && u32::try_from(n).is_ok();
        if sections == 0 || channels == 0 || !fits(height) || !fits(width) {
            return Err(Error::Shape(format!(
                "{}: cannot write {sections} sections of {channels} channels of {height}x{width} \
                 pixels",
                path.display()
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let tmp = temp_path_for(path);
        let file = File::create(&tmp).map_err(|e| Error::io(path, e))?;
        // From here on, dropping the writer removes the temporary file.
        let mut writer = TiffSectionWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(BufWriter::new(file)),
            big,
            sections,
            channels,
            height,
            width,
            written: 0,
            description: imagej_description(channels, sections),
            finished: false,
            pixel: PhantomData,
        };
        // The header; the first directory's offset is filled in by `finish`.
        let header: &[u8] = match big {
            true => b"II+\0\x08\0\0\0\0\0\0\0\0\0\0\0",
            false => b"II*\0\0\0\0\0",
        };
        writer.write_bytes(0, header)?;
        Ok(writer)
    }

    /// Writes `bytes` at the file's end; a failure (of page `page`) closes the writer.
    fn write_bytes(&mut self, page: usize, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Tiff {
                path: self.path.clone(),
                page,
                detail: "an earlier write to this file failed".into(),
            });
        };
        if let Err(e) = file.write_all(bytes) {
            self.file = None;
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }

    /// Whether the file is BigTIFF.
    pub fn is_big_tiff(&self) -> bool {
        self.big
    }

    /// Sections written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes the next section: its `channels x height x width` values, channel after channel
    /// (as [`ChannelStack::unit_section`] gives them).
    ///
    /// Fails when the values are not one section, every section is written already, or the
    /// file cannot be written; after a failed write the writer accepts no more sections.
    pub fn write_section(&mut self, planes: &[T]) -> Result<()> {
        let (c, h, w) = (self.channels, self.height, self.width);
        let n = h * w;
        if self.written >= self.sections {
            return Err(Error::Shape(format!(
                "{}: all {} sections are written already",
                self.path.display(),
                self.sections
            )));
        }
        if planes.len() != c * n {
            return Err(Error::Shape(format!(
                "{}: a section of {} values given, {c} channels of {h}x{w} pixels are {}",
                self.path.display(),
                planes.len(),
                c * n
            )));
        }
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(planes));
        T::extend_le_bytes(planes, &mut bytes);
        self.write_bytes(self.written * c, &bytes)?;
        self.written += 1;
        Ok(())
    }

    /// Completes the file: checks that every section was written, flushes it to disk and
    /// renames it over `path`. On failure `path` is left as it was and the temporary file is
    /// removed.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.sections {
            return Err(Error::Shape(format!(
                "{}: {} of {} sections written; the file is not complete",
                self.path.display(),
                self.written,
                self.sections
            )));
        }
        let directories = self.directories();
        let page = self.written * self.channels;
        self.write_bytes(page, &directories)?;
        let mut file = self.file.take().expect("write_bytes succeeded");
        let first = self.directory_offset();
        let io = |e| Error::io(&self.path, e);
        let patched = match self.big {
            true => file
                .seek(SeekFrom::Start(8))
                .and_then(|_| file.write_all(&first.to_le_bytes())),
            false => file
                .seek(SeekFrom::Start(4))
                .and_then(|_| file.write_all(&(first as u32).to_le_bytes())),
        };
        patched.map_err(io)?;
        file.flush().map_err(io)?;
        file.get_ref().sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io)?;
        self.finished = true;
        sync_parent_dir(&self.path);
        Ok(())
    }

    /// Bytes of one page's pixels.
    fn page_bytes(&self) -> u64 {
        (self.height * self.width * std::mem::size_of::<T>()) as u64
    }

    /// Where the pixels begin: after the header.
    fn pixels_offset(&self) -> u64 {
        if self.big {
            16
        } else {
            8
        }
    }

    /// Where the description begins: after every page's pixels, on an even offset.
    fn description_offset(&self) -> u64 {
        let pages = (self.sections * self.channels) as u64;
        (self.pixels_offset() + pages * self.page_bytes()).next_multiple_of(2)
    }

    /// Where the first page's directory begins: after the description and its NUL.
    fn directory_offset(&self) -> u64 {
        (self.description_offset() + self.description.len() as u64 + 1).next_multiple_of(2)
    }

    /// Everything after the last page's pixels: padding, the description, padding, and every
    /// page's directory, each pointing at the next.
    fn directories(&self) -> Vec<u8> {
        let pages = self.sections * self.channels;
        let end_of_pixels = self.pixels_offset() + pages as u64 * self.page_bytes();
        let mut out = vec![0u8; (self.description_offset() - end_of_pixels) as usize];
        out.extend_from_slice(self.description.as_bytes());
        out.push(0);
        let padding =
            self.directory_offset() - self.description_offset() - self.description.len() as u64 - 1;
        out.extend(std::iter::repeat_n(0u8, padding as usize));
        // Tag types: SHORT, LONG, ASCII, LONG8.
        const SHORT: u16 = 3;
        const LONG: u16 = 4;
        const ASCII: u16 = 2;
        const LONG8: u16 = 16;
        let offset_type = if self.big { LONG8 } else { LONG };
        let mut at = self.directory_offset();
        for page in 0..pages {
            // (tag, type, count, value): tags in ascending order, as TIFF requires.
            let mut entries: Vec<(u16, u16, u64, u64)> = vec![
                (256, LONG, 1, self.width as u64),
                (257, LONG, 1, self.height as u64),
                (258, SHORT, 1, T::BITS as u64),
                (259, SHORT, 1, 1), // no compression
                (262, SHORT, 1, 1), // black is zero
            ];
            if page == 0 {
                let count = self.description.len() as u64 + 1;
                entries.push((270, ASCII, count, self.description_offset()));
            }
            entries.extend([
                (
                    273,
                    offset_type,
                    1,
                    self.pixels_offset() + page as u64 * self.page_bytes(),
                ),
                (277, SHORT, 1, 1),
                (278, LONG, 1, self.height as u64),
                (279, offset_type, 1, self.page_bytes()),
                (284, SHORT, 1, 1), // chunky
                (339, SHORT, 1, T::SAMPLE_FORMAT as u64),
            ]);
            let size = match self.big {
                true => 8 + 20 * entries.len() as u64 + 8,
                false => 2 + 12 * entries.len() as u64 + 4,
            };
            let next = if page + 1 < pages { at + size } else { 0 };
            match self.big {
                true => {
                    out.extend((entries.len() as u64).to_le_bytes());
                    for (tag, kind, count, value) in entries {
                        out.extend(tag.to_le_bytes());
                        out.extend(kind.to_le_bytes());
                        out.extend(count.to_le_bytes());
                        out.extend(inline_value(kind, value, 8));
                    }
                    out.extend(next.to_le_bytes());
                }
                false => {
                    out.extend((entries.len() as u16).to_le_bytes());
                    for (tag, kind, count, value) in entries {
                        out.extend(tag.to_le_bytes());
                        out.extend(kind.to_le_bytes());
                        out.extend((count as u32).to_le_bytes());
                        out.extend(inline_value(kind, value, 4));
                    }
                    out.extend((next as u32).to_le_bytes());
                }
            }
            at += size;
        }
        out
    }
}

/// A tag's value field of `width` bytes: a SHORT left-justified, a LONG or LONG8 as it is, an
/// offset (ASCII) as the offset.
fn inline_value(kind: u16, value: u64, width: usize) -> Vec<u8> {
    let mut field = vec![0u8; width];
    match kind {
        3 => field[..2].copy_from_slice(&(value as u16).to_le_bytes()),
        4 => field[..4].copy_from_slice(&(value as u32).to_le_bytes()),
        _ if width == 8 => field.copy_from_slice(&value.to_le_bytes()),
        _ => field.copy_from_slice(&(value as u32).to_le_bytes()),
    }
    field
}

impl<T: TiffPixel> Drop for TiffSectionWriter<T> {
    fn drop(&mut self) {
        if !self.finished {
            // Closed before removal, for platforms that cannot remove an open file.
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_channels, read_stack, write_channels, write_stack};
    use tiff::encoder::colortype;
    use tiff::encoder::TiffEncoder;

    /// Every section of `path` read by [`TiffSections`] equals the whole file's, by
    /// [`read_channels`].
    fn sections_match(path: &Path) -> TiffSections {
        let whole = read_channels(path).unwrap();
        let mut sections = TiffSections::open(path).unwrap();
        assert_eq!(sections.sections(), whole.sections());
        assert_eq!(sections.channels(), whole.channels());
        assert_eq!(
            (sections.height(), sections.width()),
            (whole.height(), whole.width())
        );
        assert_eq!(sections.pixel_type(), whole.pixel_type());
        // Backwards, so each read seeks.
        for s in (0..whole.sections()).rev() {
            assert_eq!(
                sections.read_section(s).unwrap(),
                whole.select(&[s]).unwrap()
            );
            assert_eq!(
                sections.read_unit_section(s).unwrap(),
                whole.unit_section(s)
            );
        }
        assert!(sections.read_section(whole.sections()).is_err());
        sections
    }

    #[test]
    fn grey_stacks_read_section_by_section() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.tif");
        write_stack(
            &p,
            &Stack::new(3, 4, 5, (0..60).map(|v| v as u8).collect()).unwrap(),
        )
        .unwrap();
        assert_eq!(sections_match(&p).pixel_type(), "8-bit");
        let s16: Vec<u16> = (0..24).map(|v| v * 2700).collect();
        write_stack(&p, &Stack::new(2, 3, 4, s16).unwrap()).unwrap();
        assert_eq!(sections_match(&p).pixel_type(), "16-bit");
        let sf: Vec<f32> = (0..30).map(|v| v as f32 * 0.25 - 1.0).collect();
        write_stack(&p, &Stack::new(5, 2, 3, sf).unwrap()).unwrap();
        let sections = sections_match(&p);
        assert_eq!(
            (sections.pixel_type(), sections.pages()),
            ("32-bit float", 5)
        );
    }

    #[test]
    fn hyperstacks_and_rgb_read_section_by_section() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.tif");
        // 2 sections of 3 channels.
        let planes = Stack::new(6, 3, 2, (0..36).map(|v| v as u16 * 1000).collect()).unwrap();
        write_channels(&p, &ChannelStack::new(3, planes).unwrap()).unwrap();
        let sections = sections_match(&p);
        assert_eq!((sections.sections(), sections.channels()), (2, 3));
        assert!(sections.description().unwrap().contains("channels=3"));

        // RGB, interleaved, two pages of 2x3 pixels.
        let rgb = dir.path().join("rgb.tif");
        let mut bytes = std::io::Cursor::new(Vec::new());
        {
            let mut e = TiffEncoder::new(&mut bytes).unwrap();
            for page in 0..2u8 {
                let data: Vec<u8> = (0..18).map(|v| v * 7 + page).collect();
                e.write_image::<colortype::RGB8>(3, 2, &data).unwrap();
            }
        }
        std::fs::write(&rgb, bytes.into_inner()).unwrap();
        let sections = sections_match(&rgb);
        assert_eq!((sections.sections(), sections.channels()), (2, 3));
    }

    #[test]
    fn big_tiff_reads_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.tif");
        let mut bytes = std::io::Cursor::new(Vec::new());
        {
            let mut e = TiffEncoder::new_big(&mut bytes).unwrap();
            for page in 0..3u16 {
                let data: Vec<u16> = (0..20).map(|v| v * 300 + page).collect();
                e.write_image::<colortype::Gray16>(5, 4, &data).unwrap();
            }
        }
        let bytes = bytes.into_inner();
        assert_eq!(&bytes[..4], b"II+\0");
        std::fs::write(&p, bytes).unwrap();
        let sections = sections_match(&p);
        assert_eq!((sections.sections(), sections.channels()), (3, 1));
    }

    #[test]
    fn a_page_of_another_size_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.tif");
        let mut bytes = std::io::Cursor::new(Vec::new());
        {
            let mut e = TiffEncoder::new(&mut bytes).unwrap();
            e.write_image::<colortype::Gray8>(4, 3, &[0; 12]).unwrap();
            e.write_image::<colortype::Gray8>(4, 3, &[0; 12]).unwrap();
            e.write_image::<colortype::Gray8>(3, 3, &[0; 9]).unwrap();
        }
        std::fs::write(&p, bytes.into_inner()).unwrap();
        let err = TiffSections::open(&p).unwrap_err();
        assert!(matches!(err, Error::PageMismatch { page: 2, .. }), "{err}");
        assert!(err.to_string().contains("odd.tif page 2"), "{err}");
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tif");
        write_stack(&p, &Stack::new(4, 8, 8, vec![7u8; 256]).unwrap()).unwrap();
        let full = std::fs::read(&p).unwrap();
        // Every cut either fails to open or fails to read some section; none panics.
        for cut in [0, 3, 8, 20, full.len() / 2, full.len() - 40, full.len() - 1] {
            std::fs::write(&p, &full[..cut]).unwrap();
            let result = TiffSections::open(&p)
                .and_then(|mut s| (0..s.sections()).try_for_each(|i| s.read_section(i).map(drop)));
            assert!(result.is_err(), "a file cut at {cut} bytes read");
        }
        std::fs::write(&p, b"not a tiff").unwrap();
        assert!(matches!(TiffSections::open(&p), Err(Error::NotTiff { .. })));
        // A directory chain that loops: page 0's next-directory offset points back at itself.
        let mut looped = full.clone();
        let first = u32::from_le_bytes(looped[4..8].try_into().unwrap()) as usize;
        let entries = u16::from_le_bytes([looped[first], looped[first + 1]]) as usize;
        let next = first + 2 + entries * 12;
        looped[next..next + 4].copy_from_slice(&(first as u32).to_le_bytes());
        std::fs::write(&p, &looped).unwrap();
        let err = TiffSections::open(&p).unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
        // The fuzzer's mutations of a small file: errors or sections, never a panic.
        for seed in 0..200u64 {
            let mut damaged = full.clone();
            let at = (seed as usize * 7919) % damaged.len();
            damaged[at] ^= (seed as u8).wrapping_mul(37) | 1;
            std::fs::write(&p, &damaged).unwrap();
            if let Ok(mut s) = TiffSections::open(&p) {
                for i in 0..s.sections() {
                    let _ = s.read_section(i);
                }
            }
        }
    }

    #[test]
    fn the_writer_round_trips_as_write_channels() {
        let dir = tempfile::tempdir().unwrap();
        let (streamed, whole) = (dir.path().join("s.tif"), dir.path().join("w.tif"));
        // Three channels of floats.
        let planes = Stack::new(6, 3, 4, (0..72).map(|v| v as f32 / 7.0).collect()).unwrap();
        let stack = ChannelStack::new(3, planes).unwrap();
        let mut out = TiffSectionWriter::<f32>::create(&streamed, 2, 3, 3, 4).unwrap();
        assert!(!out.is_big_tiff());
        for s in 0..2 {
            out.write_section(&stack.unit_section(s)).unwrap();
        }
        assert!(out.write_section(&stack.unit_section(0)).is_err());
        out.finish().unwrap();
        write_channels(&whole, &stack).unwrap();
        assert_eq!(read_channels(&streamed).unwrap(), stack);
        assert_eq!(read_stack(&streamed).unwrap(), read_stack(&whole).unwrap());
        assert_eq!(
            std::fs::read(&streamed).unwrap(),
            std::fs::read(&whole).unwrap()
        );
        // The pixels lie in one block, page after page, as ImageJ (and tifffile, for a file
        // that describes itself as ImageJ's) reads them: from page 0's offset on.
        let mut decoder = Decoder::new(BufReader::new(File::open(&streamed).unwrap())).unwrap();
        let mut offsets = Vec::new();
        loop {
            offsets.push(decoder.get_tag_u64(Tag::StripOffsets).unwrap());
            if !decoder.more_images() {
                break;
            }
            decoder.next_image().unwrap();
        }
        let page_bytes = 3 * 4 * 4;
        assert_eq!(offsets.len(), 6);
        for (p, &offset) in offsets.iter().enumerate() {
            assert_eq!(offset, offsets[0] + (p * page_bytes) as u64, "page {p}");
        }

        // One channel of bytes, grey; and 16-bit.
        let grey = Stack::new(3, 2, 5, (0..30).map(|v| v as u8 * 8).collect()).unwrap();
        let mut out = TiffSectionWriter::<u8>::create(&streamed, 3, 1, 2, 5).unwrap();
        for page in grey.iter_pages() {
            out.write_section(page).unwrap();
        }
        out.finish().unwrap();
        write_stack(&whole, &grey).unwrap();
        assert_eq!(read_stack(&streamed).unwrap(), read_stack(&whole).unwrap());
        assert_eq!(read_stack(&streamed).unwrap(), AnyStack::U8(grey.clone()));
        let wide = grey.map(|v| u16::from(v) * 250);
        let mut out = TiffSectionWriter::<u16>::create(&streamed, 3, 1, 2, 5).unwrap();
        for page in wide.iter_pages() {
            out.write_section(page).unwrap();
        }
        out.finish().unwrap();
        assert_eq!(read_stack(&streamed).unwrap(), AnyStack::U16(wide));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn the_writer_writes_big_tiff_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.tif");
        let planes = Stack::new(4, 2, 3, (0..24).map(|v| v * 10).collect::<Vec<u8>>()).unwrap();
        let stack = ChannelStack::new(2, planes.clone()).unwrap();
        let mut out = TiffSectionWriter::<u8>::create_big(&p, 2, 2, 2, 3).unwrap();
        assert!(out.is_big_tiff());
        for s in 0..2 {
            out.write_section(&planes.as_slice()[s * 12..(s + 1) * 12])
                .unwrap();
        }
        out.finish().unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[..4], b"II+\0");
        assert_eq!(read_stack(&p).unwrap(), AnyStack::U8(planes));
        assert_eq!(read_channels(&p).unwrap(), stack);
        sections_match(&p);
        // The size rule: 4 GiB of float pages needs BigTIFF, a small stack does not.
        assert!(needs_big_tiff(1024, 1024, 4 << 20, 100));
        assert!(!needs_big_tiff(30, 512, 1 << 20, 100));
    }

    #[test]
    fn reader_and_writer_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<TiffSections>();
        send::<TiffSectionWriter<f32>>();
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.tif");
        let mut out = TiffSectionWriter::<f32>::create(&p, 3, 1, 2, 2).unwrap();
        out.write_section(&[0.5; 4]).unwrap();
        assert!(out.write_section(&[0.5; 3]).is_err(), "a short section");
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // finish() before every section is written fails, and leaves nothing either.
        let mut out = TiffSectionWriter::<f32>::create(&p, 2, 1, 2, 2).unwrap();
        out.write_section(&[0.5; 4]).unwrap();
        assert!(out.finish().is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
