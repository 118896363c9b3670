//! [`Stack`]: pages of equal-sized images, as plain slices.

use crate::{Error, Result};

/// A stack of `pages` images of `height` x `width` pixels with `samples` values per pixel
/// (1 for grey), stored page after page, row-major, samples interleaved.
///
/// Other crates borrow it as plain slices ([`Stack::page`], [`Stack::as_slice`]); it owns no
/// knowledge of what the pixels mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack<T> {
    pages: usize,
    height: usize,
    width: usize,
    samples: usize,
    data: Vec<T>,
}

impl<T> Stack<T> {
    /// A grey stack (`samples` = 1) from its pixels, page after page.
    ///
    /// Fails when a dimension is zero or `data.len() != pages * height * width`.
    pub fn new(pages: usize, height: usize, width: usize, data: Vec<T>) -> Result<Self> {
        Self::with_samples(pages, height, width, 1, data)
    }

    /// A stack with `samples` values per pixel (interleaved).
    pub fn with_samples(
        pages: usize,
        height: usize,
        width: usize,
        samples: usize,
        data: Vec<T>,
    ) -> Result<Self> {
        if pages == 0 || height == 0 || width == 0 || samples == 0 {
            return Err(Error::Shape(format!(
                "every dimension must be positive, got {pages} pages of {height}x{width}x{samples}"
            )));
        }
        let expected = pages * height * width * samples;
        if data.len() != expected {
            return Err(Error::Shape(format!(
                "{pages} pages of {height}x{width}x{samples} need {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Stack {
            pages,
            height,
            width,
            samples,
            data,
        })
    }

    /// A stack from separate pages of `height` x `width` x `samples` values each.
    pub fn from_pages(
        height: usize,
        width: usize,
        samples: usize,
        pages: Vec<Vec<T>>,
    ) -> Result<Self> {
        let n = pages.len();
        let per_page = height * width * samples;
        if let Some((i, p)) = pages.iter().enumerate().find(|(_, p)| p.len() != per_page) {
            return Err(Error::Shape(format!(
                "page {i} has {} values, expected {per_page} ({height}x{width}x{samples})",
                p.len()
            )));
        }
        Self::with_samples(
            n,
            height,
            width,
            samples,
            pages.into_iter().flatten().collect(),
        )
    }

    /// Number of pages (sections).
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Rows per page.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Columns per page.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Values per pixel (1 for grey).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Values in one page: `height * width * samples`.
    pub fn page_len(&self) -> usize {
        self.height * self.width * self.samples
    }

    /// Page `index` as a slice; panics when `index >= pages()`, like slice indexing.
    pub fn page(&self, index: usize) -> &[T] {
        let n = self.page_len();
        &self.data[index * n..(index + 1) * n]
    }

    /// Page `index` as a mutable slice; panics when `index >= pages()`.
    pub fn page_mut(&mut self, index: usize) -> &mut [T] {
        let n = self.page_len();
        &mut self.data[index * n..(index + 1) * n]
    }

    /// The pages in order.
    pub fn iter_pages(&self) -> std::slice::Chunks<'_, T> {
        self.data.chunks(self.page_len())
    }

    /// All values, page after page.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// All values, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The values, page after page.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
}

impl<T: Clone> Stack<T> {
    /// A new stack of the given pages, in the order given (an index may repeat).
    ///
    /// Fails on an empty list or an index out of range.
    pub fn select(&self, indices: &[usize]) -> Result<Stack<T>> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.pages) {
            return Err(Error::Shape(format!(
                "page {bad} asked for, the stack has {} pages",
                self.pages
            )));
        }
        let data = indices
            .iter()
            .flat_map(|&i| self.page(i).iter().cloned())
            .collect();
        Stack::with_samples(indices.len(), self.height, self.width, self.samples, data)
    }

    /// The same pixels converted value by value.
    pub fn map<U>(&self, f: impl Fn(T) -> U) -> Stack<U> {
        Stack {
            pages: self.pages,
            height: self.height,
            width: self.width,
            samples: self.samples,
            data: self.data.iter().cloned().map(f).collect(),
        }
    }
}

/// A stack of any of the pixel types we read from TIFF files.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyStack {
    /// 8-bit unsigned.
    U8(Stack<u8>),
    /// 16-bit unsigned.
    U16(Stack<u16>),
    /// 32-bit float.
    F32(Stack<f32>),
}

impl AnyStack {
    /// The pixel type in words ("8-bit", "16-bit", "32-bit float").
    pub fn pixel_type(&self) -> &'static str {
        match self {
            AnyStack::U8(_) => "8-bit",
            AnyStack::U16(_) => "16-bit",
            AnyStack::F32(_) => "32-bit float",
        }
    }

    /// `(pages, height, width, samples)`.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        match self {
            AnyStack::U8(s) => (s.pages(), s.height(), s.width(), s.samples()),
            AnyStack::U16(s) => (s.pages(), s.height(), s.width(), s.samples()),
            AnyStack::F32(s) => (s.pages(), s.height(), s.width(), s.samples()),
        }
    }

    /// The pixels as `f32`, unscaled (an 8-bit 255 becomes 255.0).
    pub fn to_f32(&self) -> Stack<f32> {
        match self {
            AnyStack::U8(s) => s.map(f32::from),
            AnyStack::U16(s) => s.map(f32::from),
            AnyStack::F32(s) => s.clone(),
        }
    }

    /// The pixels as `f32` in the units images are fed to the net in ([`UnitValue`]).
    pub fn to_unit_f32(&self) -> Stack<f32> {
        match self {
            AnyStack::U8(s) => s.map(UnitValue::to_unit),
            AnyStack::U16(s) => s.map(UnitValue::to_unit),
            AnyStack::F32(s) => s.clone(),
        }
    }

    /// The stored values `range` of the flat pixel array (pages one after another) in the
    /// net's units ([`UnitValue`]). Panics if `range` is out of bounds, like slice indexing.
    pub fn unit_values(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        fn convert<T: UnitValue>(values: &[T]) -> Vec<f32> {
            values.iter().map(|&v| v.to_unit()).collect()
        }
        match self {
            AnyStack::U8(s) => convert(&s.as_slice()[range]),
            AnyStack::U16(s) => convert(&s.as_slice()[range]),
            AnyStack::F32(s) => convert(&s.as_slice()[range]),
        }
    }

    /// The factor that takes stored values to the net's units ([`UnitValue::FULL_SCALE`]'s
    /// reciprocal): 1/255 for 8-bit, 1/65535 for 16-bit, 1 for float.
    pub fn unit_scale(&self) -> f64 {
        match self {
            AnyStack::U8(_) => u8::FULL_SCALE.recip(),
            AnyStack::U16(_) => u16::FULL_SCALE.recip(),
            AnyStack::F32(_) => f32::FULL_SCALE.recip(),
        }
    }
}

/// A stored voxel type and the one rule that takes it to the units the net is fed: integer
/// types divided by their largest value (8-bit / 255, 16-bit / 65535) into [0, 1], floats as
/// stored (a float image is in those units already). TIFF pages, channel stacks and OME-Zarr
/// volumes all read through it.
pub trait UnitValue: Copy {
    /// The stored value that means 1.0.
    const FULL_SCALE: f64;
    /// The value in the net's units.
    fn to_unit(self) -> f32;
}

impl UnitValue for u8 {
    const FULL_SCALE: f64 = 255.0;
    fn to_unit(self) -> f32 {
        f32::from(self) / 255.0
    }
}

impl UnitValue for u16 {
    const FULL_SCALE: f64 = 65535.0;
    fn to_unit(self) -> f32 {
        f32::from(self) / 65535.0
    }
}

impl UnitValue for f32 {
    const FULL_SCALE: f64 = 1.0;
    fn to_unit(self) -> f32 {
        self
    }
}

impl UnitValue for f64 {
    const FULL_SCALE: f64 = 1.0;
    fn to_unit(self) -> f32 {
        self as f32
    }
}

impl From<Stack<u8>> for AnyStack {
    fn from(s: Stack<u8>) -> Self {
        AnyStack::U8(s)
    }
}

impl From<Stack<u16>> for AnyStack {
    fn from(s: Stack<u16>) -> Self {
        AnyStack::U16(s)
    }
}

impl From<Stack<f32>> for AnyStack {
    fn from(s: Stack<f32>) -> Self {
        AnyStack::F32(s)
    }
}

/// Mean and standard deviation of grey values, for normalising network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GreyStats {
    /// Mean grey value.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

impl GreyStats {
    /// Statistics over the given pages of a stack (all samples of all pixels).
    ///
    /// Fails on an empty page list or an index out of range.
    pub fn of_pages<T: Copy + Into<f64>>(stack: &Stack<T>, pages: &[usize]) -> Result<Self> {
        let mut all = Moments::default();
        for_pages(stack, 1, pages, |_, page| all.add(page))?;
        Ok(all.stats())
    }

    /// Statistics of each channel over the given sections, for a per-channel normalisation:
    /// the stack's pages are channel planes, `channels` a section, section `s`'s channel `c` at
    /// page `s * channels + c` (as [`crate::ChannelStack`] keeps them). With one channel it is
    /// [`GreyStats::of_pages`].
    ///
    /// Fails on an empty section list, a section out of range, or a page count that is not a
    /// multiple of `channels`.
    pub fn per_channel<T: Copy + Into<f64>>(
        stack: &Stack<T>,
        channels: usize,
        sections: &[usize],
    ) -> Result<Vec<Self>> {
        let mut moments = vec![Moments::default(); channels];
        for_pages(stack, channels, sections, |c, page| moments[c].add(page))?;
        Ok(moments.iter().map(Moments::stats).collect())
    }
}

/// Calls `f(channel, page)` for every channel plane of the given sections (`channels` pages a
/// section), after checking the arguments.
fn for_pages<T>(
    stack: &Stack<T>,
    channels: usize,
    sections: &[usize],
    mut f: impl FnMut(usize, &[T]),
) -> Result<()> {
    if sections.is_empty() {
        return Err(Error::Shape("statistics of no page".into()));
    }
    if channels == 0 || !stack.pages().is_multiple_of(channels) {
        return Err(Error::Shape(format!(
            "{} pages are not sections of {channels} channels",
            stack.pages()
        )));
    }
    let n = stack.pages() / channels;
    if let Some(&bad) = sections.iter().find(|&&s| s >= n) {
        return Err(Error::Shape(format!(
            "page {bad} asked for, the stack has {n} pages"
        )));
    }
    for &s in sections {
        for c in 0..channels {
            f(c, stack.page(s * channels + c));
        }
    }
    Ok(())
}

/// Running sums for a mean and a standard deviation.
#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    sum: f64,
    sum_sq: f64,
    n: usize,
}

impl Moments {
    fn add<T: Copy + Into<f64>>(&mut self, values: &[T]) {
        for &v in values {
            let v: f64 = v.into();
            self.sum += v;
            self.sum_sq += v * v;
        }
        self.n += values.len();
    }

    fn stats(&self) -> GreyStats {
        let n = self.n.max(1) as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        GreyStats {
            mean,
            std: var.sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_checked() {
        assert!(Stack::new(2, 2, 2, vec![0u8; 8]).is_ok());
        assert!(matches!(
            Stack::new(2, 2, 2, vec![0u8; 7]),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Stack::<u8>::new(0, 2, 2, vec![]),
            Err(Error::Shape(_))
        ));
    }

    #[test]
    fn pages_and_select() {
        let s = Stack::new(3, 1, 2, vec![1u8, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(s.page(1), &[3, 4]);
        let t = s.select(&[2, 0]).unwrap();
        assert_eq!(t.as_slice(), &[5, 6, 1, 2]);
        assert!(s.select(&[3]).is_err());
        assert_eq!(s.iter_pages().count(), 3);
    }

    #[test]
    fn unit_floats_scale_integers_only() {
        let u8s = AnyStack::U8(Stack::new(1, 1, 2, vec![0u8, 255]).unwrap());
        assert_eq!(u8s.to_unit_f32().as_slice(), &[0.0, 1.0]);
        let u16s = AnyStack::U16(Stack::new(1, 1, 2, vec![0u16, 65535]).unwrap());
        assert_eq!(u16s.to_unit_f32().as_slice(), &[0.0, 1.0]);
        let f = AnyStack::F32(Stack::new(1, 1, 2, vec![-0.5f32, 2.0]).unwrap());
        assert_eq!(f.to_unit_f32().as_slice(), &[-0.5, 2.0]);
    }

    #[test]
    fn grey_stats() {
        let s = Stack::new(2, 1, 2, vec![0u8, 2, 4, 6]).unwrap();
        let st = GreyStats::of_pages(&s, &[0]).unwrap();
        assert_eq!(st.mean, 1.0);
        assert_eq!(st.std, 1.0);
        let all = GreyStats::of_pages(&s, &[0, 1]).unwrap();
        assert_eq!(all.mean, 3.0);
        assert!((all.std - 5f64.sqrt()).abs() < 1e-12);
        // Two channels: pages 0 and 1 are section 0's channels.
        let per = GreyStats::per_channel(&s, 2, &[0]).unwrap();
        assert_eq!(per, vec![st, GreyStats::of_pages(&s, &[1]).unwrap()]);
        assert_eq!(GreyStats::per_channel(&s, 1, &[0, 1]).unwrap(), vec![all]);
        assert!(GreyStats::per_channel(&s, 2, &[1]).is_err());
        assert!(GreyStats::per_channel(&s, 3, &[0]).is_err());
        assert!(GreyStats::per_channel(&s, 2, &[]).is_err());
    }
}
