//! Images with channels: [`ChannelStack`], read from RGB and N-sample TIFFs (interleaved or
//! planar), from ImageJ hyperstacks and from OME-TIFFs whose channels are separate pages, and
//! written as ImageJ hyperstacks.

use std::path::Path;

use crate::tiff_io::{decode_tiff, write_sections};
use crate::{AnyStack, Error, GreyStats, Result, Stack};

/// Sections of `channels` planes of `height` x `width` pixels each: the pixels are kept as grey
/// planes ([`ChannelStack::planes`]), section after section and, within a section, channel after
/// channel (`C x H x W`, as the net takes them), so section `s`'s channel `c` is plane
/// `s * channels + c`. A grey file is a one-channel stack whose planes are its pages.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStack {
    channels: usize,
    planes: AnyStack,
}

impl ChannelStack {
    /// A stack from its grey planes, `channels` a section (section-major, channel-fastest).
    ///
    /// Fails when `channels` is zero, the planes have several samples per pixel, or their count
    /// is not a multiple of `channels`.
    pub fn new(channels: usize, planes: impl Into<AnyStack>) -> Result<Self> {
        let planes = planes.into();
        let (pages, _, _, samples) = planes.dims();
        if channels == 0 || samples != 1 || pages % channels != 0 {
            return Err(Error::Shape(format!(
                "{pages} planes of {samples} sample(s) per pixel are not sections of {channels} \
                 grey channel planes"
            )));
        }
        Ok(ChannelStack { channels, planes })
    }

    /// Each page a section and each sample a channel: a stack with interleaved samples (RGB,
    /// N-sample TIFF pages) turned into channel planes. A grey stack is taken as it is.
    pub fn from_interleaved(stack: impl Into<AnyStack>) -> Self {
        fn planes<T: Copy>(s: &Stack<T>) -> Stack<T> {
            let (c, n) = (s.samples(), s.height() * s.width());
            let data = (0..s.pages() * c * n)
                .map(|i| {
                    let (page, rest) = (i / (c * n), i % (c * n));
                    s.page(page)[(rest % n) * c + rest / n]
                })
                .collect();
            Stack::with_samples(s.pages() * c, s.height(), s.width(), 1, data)
                .expect("the same number of values as the input")
        }
        let stack = stack.into();
        let channels = stack.dims().3;
        if channels == 1 {
            return ChannelStack {
                channels,
                planes: stack,
            };
        }
        let planes = match &stack {
            AnyStack::U8(s) => AnyStack::U8(planes(s)),
            AnyStack::U16(s) => AnyStack::U16(planes(s)),
            AnyStack::F32(s) => AnyStack::F32(planes(s)),
        };
        ChannelStack { channels, planes }
    }

    /// Number of sections.
    pub fn sections(&self) -> usize {
        self.planes.dims().0 / self.channels
    }

    /// Channels per section.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Rows of a plane.
    pub fn height(&self) -> usize {
        self.planes.dims().1
    }

    /// Columns of a plane.
    pub fn width(&self) -> usize {
        self.planes.dims().2
    }

    /// The pixel type in words ("8-bit", "16-bit", "32-bit float").
    pub fn pixel_type(&self) -> &'static str {
        self.planes.pixel_type()
    }

    /// The grey planes, `channels` a section.
    pub fn planes(&self) -> &AnyStack {
        &self.planes
    }

    /// The grey planes, owned.
    pub fn into_planes(self) -> AnyStack {
        self.planes
    }

    /// The factor that takes stored values to the units fed to the net
    /// ([`AnyStack::unit_scale`]): 1/255 for 8-bit, 1/65535 for 16-bit, 1 for float.
    pub fn unit_scale(&self) -> f64 {
        self.planes.unit_scale()
    }

    /// The planes in the net's units ([`AnyStack::to_unit_f32`]); section `s` is the slice
    /// `s * C * H * W .. (s + 1) * C * H * W` of its values.
    pub fn to_unit_f32(&self) -> Stack<f32> {
        self.planes.to_unit_f32()
    }

    /// Section `s`'s channel planes in the net's units (as [`ChannelStack::to_unit_f32`]):
    /// `C x H x W` values. Panics if `s` is out of range, like slice indexing.
    pub fn unit_section(&self, s: usize) -> Vec<f32> {
        let n = self.channels * self.height() * self.width();
        self.planes.unit_values(s * n..(s + 1) * n)
    }

    /// A new stack of the given sections, in the order given (an index may repeat).
    pub fn select(&self, sections: &[usize]) -> Result<Self> {
        if let Some(&bad) = sections.iter().find(|&&s| s >= self.sections()) {
            return Err(Error::Shape(format!(
                "section {bad} asked for, the stack has {} sections",
                self.sections()
            )));
        }
        let c = self.channels;
        let pages: Vec<usize> = sections.iter().flat_map(|&s| s * c..(s + 1) * c).collect();
        let planes = match &self.planes {
            AnyStack::U8(s) => AnyStack::U8(s.select(&pages)?),
            AnyStack::U16(s) => AnyStack::U16(s.select(&pages)?),
            AnyStack::F32(s) => AnyStack::F32(s.select(&pages)?),
        };
        Ok(ChannelStack {
            channels: c,
            planes,
        })
    }

    /// Mean and standard deviation of each channel over the given sections, in stored units
    /// (multiply by [`ChannelStack::unit_scale`] for the net's): what a per-channel
    /// normalisation needs. See [`GreyStats::per_channel`].
    pub fn channel_stats(&self, sections: &[usize]) -> Result<Vec<GreyStats>> {
        match &self.planes {
            AnyStack::U8(s) => GreyStats::per_channel(s, self.channels, sections),
            AnyStack::U16(s) => GreyStats::per_channel(s, self.channels, sections),
            AnyStack::F32(s) => GreyStats::per_channel(s, self.channels, sections),
        }
    }

    /// Checks that the stack has the channels a model takes (`in_channels`); `path` names the
    /// file in the error.
    pub fn check_channels(&self, path: &Path, expected: usize) -> Result<()> {
        if self.channels != expected {
            return Err(Error::ChannelMismatch {
                path: path.to_path_buf(),
                found: self.channels,
                expected,
            });
        }
        Ok(())
    }
}

impl<T> From<Stack<T>> for ChannelStack
where
    Stack<T>: Into<AnyStack>,
{
    /// Each page a section, each sample a channel ([`ChannelStack::from_interleaved`]); a grey
    /// stack is one channel.
    fn from(stack: Stack<T>) -> Self {
        ChannelStack::from_interleaved(stack)
    }
}

/// Read a TIFF of images with channels.
///
/// The channels are, in this order of precedence: the samples of each pixel (RGB, or N samples
/// per pixel, interleaved or planar), each page a section; the `channels=C` of an ImageJ
/// hyperstack's description, its pages channel-fastest (ImageJ's order); the `SizeC` of an
/// OME-TIFF's `Pixels` element, its pages in the element's `DimensionOrder` (sections are its Z
/// and T planes, T-major). Any other file is grey, one channel, each page a section, exactly as
/// [`crate::read_stack`] reads it. 8-bit, 16-bit and 32-bit float.
///
/// Errors name the file: metadata that does not fit the pages (a page count that is not a
/// multiple of the channels, an OME description of other planes than the file holds) as well
/// as every error of [`crate::read_stack`].
pub fn read_channels(path: impl AsRef<Path>) -> Result<ChannelStack> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_channels(&bytes, path)
}

/// [`read_channels`] of TIFF bytes; `path` is only used in error messages.
pub fn decode_channels(bytes: &[u8], path: &Path) -> Result<ChannelStack> {
    let (stack, description) = decode_tiff(bytes, path)?;
    let (pages, _, _, samples) = stack.dims();
    let (channels, order) = channel_layout(description.as_deref(), pages, samples, path)?;
    if samples > 1 {
        return Ok(ChannelStack::from_interleaved(stack));
    }
    let planes = match order {
        None => stack,
        Some(order) => match &stack {
            AnyStack::U8(s) => AnyStack::U8(s.select(&order)?),
            AnyStack::U16(s) => AnyStack::U16(s.select(&order)?),
            AnyStack::F32(s) => AnyStack::F32(s.select(&order)?),
        },
    };
    ChannelStack::new(channels, planes)
}

/// Write images with channels as an ImageJ hyperstack (`channels=C`, `slices=S`), atomically:
/// one page per channel per section, channel-fastest, 8-bit, 16-bit or 32-bit float as the
/// stack is. [`read_channels`] reads it back as it was; a one-channel stack is written as
/// [`crate::write_stack`] writes it, with ImageJ's description of its slices.
pub fn write_channels(path: impl AsRef<Path>, stack: &ChannelStack) -> Result<()> {
    let (path, c) = (path.as_ref(), stack.channels());
    match stack.planes() {
        AnyStack::U8(p) => write_sections(path, p, c),
        AnyStack::U16(p) => write_sections(path, p, c),
        AnyStack::F32(p) => write_sections(path, p, c),
    }
}

/// The ImageJ description of `sections` sections of `channels` grey planes: a hyperstack
/// (`channels=C`, `slices=S`, channel-fastest) when `channels > 1`, else a grey stack of slices.
pub(crate) fn imagej_description(channels: usize, sections: usize) -> String {
    let (c, s) = (channels, sections);
    if c > 1 {
        format!(
            "ImageJ=1.11a\nimages={}\nchannels={c}\nslices={s}\nhyperstack=true\nmode=grayscale\n",
            c * s
        )
    } else {
        format!("ImageJ=1.11a\nimages={s}\nslices={s}\n")
    }
}

/// How a file of `pages` pages of `samples` samples per pixel, with page 0's `description`,
/// holds its channels: the channels per section, and the page of each (section, channel) plane
/// in turn when that is not the file's order. With several samples per pixel the samples are
/// the channels (each page a section; the description may only agree); else the description's
/// layout ([`page_layout`]), else one grey channel.
pub(crate) fn channel_layout(
    description: Option<&str>,
    pages: usize,
    samples: usize,
    path: &Path,
) -> Result<(usize, Option<Vec<usize>>)> {
    let layout = match description {
        Some(d) => page_layout(d, pages, path)?,
        None => None,
    };
    if samples > 1 {
        // Samples are the channels; metadata may only agree.
        if let Some((c, _)) = layout.filter(|&(c, _)| c != samples) {
            return Err(metadata_error(
                path,
                format!(
                    "the description names {c} channels of pages with {samples} samples per \
                     pixel; unet reads the samples as the channels only"
                ),
            ));
        }
        return Ok((samples, None));
    }
    Ok(layout.unwrap_or((1, None)))
}

fn metadata_error(path: &Path, detail: String) -> Error {
    Error::Tiff {
        path: path.to_path_buf(),
        page: 0,
        detail,
    }
}

/// The channels a description gives grey pages (more than one), and the page of each
/// (section, channel) plane in turn when that is not the file's order: `None` when the
/// description names no channels.
fn page_layout(
    description: &str,
    pages: usize,
    path: &Path,
) -> Result<Option<(usize, Option<Vec<usize>>)>> {
    if description.starts_with("ImageJ=") {
        return imagej_layout(description, pages, path).map(|c| c.map(|c| (c, None)));
    }
    if description.contains("<OME") {
        return ome_layout(description, pages, path);
    }
    Ok(None)
}

/// An ImageJ hyperstack's channels (its pages are channel-fastest, then slices, then frames).
fn imagej_layout(description: &str, pages: usize, path: &Path) -> Result<Option<usize>> {
    let value = |key: &str| -> Result<Option<usize>> {
        let Some(text) = description
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        else {
            return Ok(None);
        };
        text.trim().parse().map(Some).map_err(|_| {
            metadata_error(
                path,
                format!("ImageJ description: {key}={text} is not a number"),
            )
        })
    };
    let channels = value("channels")?.unwrap_or(1);
    if channels <= 1 {
        return Ok(None);
    }
    if let Some(images) = value("images")?.filter(|&n| n != pages) {
        return Err(metadata_error(
            path,
            format!(
                "the ImageJ description says images={images} but the file has {pages} pages \
                 (a file ImageJ wrote without a page for each image is not read)"
            ),
        ));
    }
    if !pages.is_multiple_of(channels) {
        return Err(metadata_error(
            path,
            format!(
                "the ImageJ description says channels={channels}, but {pages} pages are not \
                 whole sections of {channels} channels"
            ),
        ));
    }
    Ok(Some(channels))
}

/// An OME-TIFF's channels and the page of each (section, channel) plane, from its first
/// `Pixels` element's `SizeC`, `SizeZ`, `SizeT` and `DimensionOrder`.
fn ome_layout(
    description: &str,
    pages: usize,
    path: &Path,
) -> Result<Option<(usize, Option<Vec<usize>>)>> {
    let bad = |detail: String| metadata_error(path, format!("OME-XML description: {detail}"));
    let Some(start) = description
        .find("<Pixels")
        .or_else(|| description.find(":Pixels"))
    else {
        return Ok(None);
    };
    let element = &description[start..];
    let element = &element[..element.find('>').unwrap_or(element.len())];
    let attr = |name: &str| -> Option<&str> {
        let at = element.find(&format!(" {name}="))? + name.len() + 2;
        let quote = element[at..].chars().next()?;
        let rest = &element[at + 1..];
        Some(&rest[..rest.find(quote)?])
    };
    let size = |name: &str| -> Result<usize> {
        match attr(name) {
            None => Ok(1),
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("{name}=\"{v}\" is not a positive number"))),
        }
    };
    let (c, z, t) = (size("SizeC")?, size("SizeZ")?, size("SizeT")?);
    if c <= 1 {
        return Ok(None);
    }
    let order = attr("DimensionOrder").unwrap_or("XYCZT");
    let dims: Vec<char> = order.chars().collect();
    let valid = dims.len() == 5
        && dims[..2] == ['X', 'Y']
        && ['C', 'Z', 'T'].iter().all(|d| dims[2..].contains(d));
    if !valid {
        return Err(bad(format!(
            "DimensionOrder=\"{order}\" is not XY and C, Z, T"
        )));
    }
    let planes = c.checked_mul(z).and_then(|n| n.checked_mul(t));
    if planes != Some(pages) {
        return Err(bad(format!(
            "SizeC={c} SizeZ={z} SizeT={t} describe other planes than the file's {pages} pages \
             (multi-file and multi-series OME-TIFFs are not read)"
        )));
    }
    // The stride of each dimension in pages, fastest first after X and Y.
    let mut stride = [0usize; 3];
    let mut step = 1;
    for d in &dims[2..] {
        let (i, n) = match d {
            'C' => (0, c),
            'Z' => (1, z),
            _ => (2, t),
        };
        stride[i] = step;
        step *= n;
    }
    let order: Vec<usize> = (0..z * t)
        .flat_map(|s| {
            let (zi, ti) = (s % z, s / z);
            (0..c).map(move |ci| ci * stride[0] + zi * stride[1] + ti * stride[2])
        })
        .collect();
    let identity = order.iter().enumerate().all(|(i, &p)| i == p);
    Ok(Some((c, (!identity).then_some(order))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_samples_become_planes() {
        // One page of 1x2 pixels, RGB: (1,2,3), (4,5,6).
        let s = Stack::with_samples(1, 1, 2, 3, vec![1u8, 2, 3, 4, 5, 6]).unwrap();
        let c = ChannelStack::from_interleaved(s);
        assert_eq!((c.sections(), c.channels()), (1, 3));
        assert_eq!(
            c.planes(),
            &AnyStack::U8(Stack::new(3, 1, 2, vec![1, 4, 2, 5, 3, 6]).unwrap())
        );
        let stats = c.channel_stats(&[0]).unwrap();
        assert_eq!(stats[1].mean, 3.5);
        assert!(ChannelStack::new(2, Stack::new(3, 1, 1, vec![0u8; 3]).unwrap()).is_err());
        // Section 0 in the net's units, channel after channel.
        let unit: Vec<f32> = [1u8, 4, 2, 5, 3, 6]
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect();
        assert_eq!(c.unit_section(0), unit);
        let wide = ChannelStack::new(2, Stack::new(4, 1, 1, vec![0u16, 1, 65535, 3]).unwrap());
        assert_eq!(wide.unwrap().unit_section(1), vec![1.0, 3.0 / 65535.0]);
    }

    #[test]
    fn select_takes_whole_sections() {
        let c = ChannelStack::new(2, Stack::new(4, 1, 1, vec![0u16, 1, 2, 3]).unwrap()).unwrap();
        let s = c.select(&[1, 0]).unwrap();
        assert_eq!(s.planes().dims(), (4, 1, 1, 1));
        assert_eq!(
            s.planes(),
            &AnyStack::U16(Stack::new(4, 1, 1, vec![2, 3, 0, 1]).unwrap())
        );
        assert!(c.select(&[2]).is_err());
        let e = c.check_channels(Path::new("x.tif"), 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.tif: 2 channel(s) per section, but the model takes 1"
        );
    }

    #[test]
    fn imagej_and_ome_layouts() {
        let p = Path::new("m.tif");
        let ij = "ImageJ=1.53t\nimages=6\nchannels=2\nslices=3\nhyperstack=true\n";
        assert_eq!(page_layout(ij, 6, p).unwrap(), Some((2, None)));
        assert!(page_layout(ij, 4, p).is_err());
        assert_eq!(page_layout("ImageJ=1.53t\nimages=6\n", 6, p).unwrap(), None);
        assert!(page_layout("ImageJ=1\nchannels=x\n", 6, p).is_err());
        assert!(page_layout("ImageJ=1\nchannels=4\n", 6, p).is_err());

        let ome = |order: &str| {
            format!(
                "<?xml version=\"1.0\"?><OME><Image ID=\"Image:0\"><Pixels ID=\"Pixels:0\" \
                 DimensionOrder=\"{order}\" SizeC=\"2\" SizeT=\"1\" SizeX=\"4\" SizeY=\"3\" \
                 SizeZ=\"3\" Type=\"uint8\"></Pixels></Image></OME>"
            )
        };
        assert_eq!(page_layout(&ome("XYCZT"), 6, p).unwrap(), Some((2, None)));
        // Z fastest: page = z + 3 c; sections are the z planes.
        assert_eq!(
            page_layout(&ome("XYZCT"), 6, p).unwrap(),
            Some((2, Some(vec![0, 3, 1, 4, 2, 5])))
        );
        assert!(page_layout(&ome("XYZCT"), 5, p).is_err());
        assert!(page_layout(&ome("XYZZT"), 6, p).is_err());
        assert_eq!(page_layout("a scanner's note", 6, p).unwrap(), None);
    }
}
