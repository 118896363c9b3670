//! The ISBI 2012 EM segmentation data set: loading, checking, locating and summarising it.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{
    read_channels, read_class_labels, read_u8_stack, AnyStack, ChannelStack, Error, GreyStats,
    LabelClasses, LabelOptions, Result, Split, Stack,
};

/// File name of the training images.
pub const TRAIN_VOLUME: &str = "train-volume.tif";
/// File name of the training labels (255 = cell, 0 = membrane).
pub const TRAIN_LABELS: &str = "train-labels.tif";
/// File name of the test images (no public labels).
pub const TEST_VOLUME: &str = "test-volume.tif";
/// The environment variable naming the data directory.
pub const DATA_ENV: &str = "UNET_DATA";
/// The data directory inside a checkout, relative to its root.
pub const DEFAULT_DATA_DIR: &str = "data/isbi2012";

/// The label value of a cell pixel after [`read_labels`] (the ISBI convention).
pub const CELL: u8 = 255;
/// The label value of a membrane pixel.
pub const MEMBRANE: u8 = 0;

/// Read a label stack and check that it is binary: values {0, 255}, or {0, 1}.
///
/// The result always uses {0, 255} ([`MEMBRANE`], [`CELL`]). A 16-bit stack with only those values
/// is accepted too. Any other value is an error naming the file, page and value.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Stack<u8>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_labels(&bytes, path)
}

/// [`read_labels`] of TIFF bytes; `path` is only used in error messages.
pub fn decode_labels(bytes: &[u8], path: &Path) -> Result<Stack<u8>> {
    let stack = match crate::decode_stack(bytes, path)? {
        crate::AnyStack::U8(s) => s.map(u16::from),
        crate::AnyStack::U16(s) => s,
        other => {
            return Err(Error::WrongPixelType {
                path: path.to_path_buf(),
                expected: "8-bit or 16-bit label",
                found: other.pixel_type(),
            })
        }
    };
    // {0, 1} when nothing exceeds 1, else {0, 255}.
    let max = stack.as_slice().iter().copied().max().unwrap_or(0);
    let (high, expected) = if max <= 1 {
        (1u16, "0 or 1")
    } else {
        (255u16, "0 or 255")
    };
    for (page, values) in stack.iter_pages().enumerate() {
        if let Some(&value) = values.iter().find(|&&v| v != 0 && v != high) {
            return Err(Error::NotALabel {
                path: path.to_path_buf(),
                page,
                value,
                expected,
            });
        }
    }
    Ok(stack.map(|v| if v == 0 { MEMBRANE } else { CELL }))
}

/// The shape of sections that must pair up with others: a [`Stack`] (its pages), an
/// [`AnyStack`](crate::AnyStack), a [`ChannelStack`](crate::ChannelStack) (its sections of channel
/// planes) or [`ClassLabels`](crate::ClassLabels).
pub trait Sections {
    /// Sections: pages, or channel planes a section for channel stacks.
    fn sections(&self) -> usize;
    /// Rows of a section.
    fn section_height(&self) -> usize;
    /// Columns of a section.
    fn section_width(&self) -> usize;
    /// Values per pixel of a page (1 but for stacks with interleaved samples).
    fn samples_per_pixel(&self) -> usize {
        1
    }
    /// What a section is called in messages ("pages", or "sections" of several channels).
    fn sections_word(&self) -> &'static str {
        "pages"
    }
}

impl<T> Sections for Stack<T> {
    fn sections(&self) -> usize {
        self.pages()
    }
    fn section_height(&self) -> usize {
        self.height()
    }
    fn section_width(&self) -> usize {
        self.width()
    }
    fn samples_per_pixel(&self) -> usize {
        self.samples()
    }
}

impl Sections for crate::AnyStack {
    fn sections(&self) -> usize {
        self.dims().0
    }
    fn section_height(&self) -> usize {
        self.dims().1
    }
    fn section_width(&self) -> usize {
        self.dims().2
    }
    fn samples_per_pixel(&self) -> usize {
        self.dims().3
    }
}

impl Sections for crate::ChannelStack {
    fn sections(&self) -> usize {
        crate::ChannelStack::sections(self)
    }
    fn section_height(&self) -> usize {
        self.height()
    }
    fn section_width(&self) -> usize {
        self.width()
    }
    fn sections_word(&self) -> &'static str {
        if self.channels() > 1 {
            "sections"
        } else {
            "pages"
        }
    }
}

impl Sections for crate::ClassLabels {
    fn sections(&self) -> usize {
        self.labels().pages()
    }
    fn section_height(&self) -> usize {
        self.labels().height()
    }
    fn section_width(&self) -> usize {
        self.labels().width()
    }
}

/// Check that images and labels pair up: as many sections, of the same size, and labels of one
/// sample per pixel. The error names both files and how they differ.
pub fn check_pair(
    images_path: &Path,
    images: &impl Sections,
    labels_path: &Path,
    labels: &impl Sections,
) -> Result<()> {
    let mismatch = |what: String| Error::StackMismatch {
        first: images_path.to_path_buf(),
        second: labels_path.to_path_buf(),
        what,
    };
    if images.sections() != labels.sections() {
        return Err(mismatch(format!(
            "{} image {} but {} label {}",
            images.sections(),
            images.sections_word(),
            labels.sections(),
            labels.sections_word()
        )));
    }
    let size = |s: &dyn Sections| (s.section_height(), s.section_width());
    if size(images) != size(labels) {
        return Err(mismatch(format!(
            "images are {}x{} but labels are {}x{}",
            images.section_height(),
            images.section_width(),
            labels.section_height(),
            labels.section_width()
        )));
    }
    if labels.samples_per_pixel() != 1 {
        return Err(mismatch(format!(
            "labels have {} samples per pixel, expected 1",
            labels.samples_per_pixel()
        )));
    }
    Ok(())
}

/// Where training sections were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum DataSource {
    /// A directory in the ISBI 2012 layout (`train-volume.tif`, `train-labels.tif`).
    Directory(PathBuf),
    /// A pair of stacks under any names.
    Files {
        /// The images.
        images: PathBuf,
        /// Their labels.
        labels: PathBuf,
        /// How the labels are read (`--classes`, `--ignore-label`; absent in records of runs
        /// from before class labels: the default).
        #[cfg_attr(
            feature = "serde",
            serde(default, skip_serializing_if = "LabelOptions::is_default")
        )]
        label_options: LabelOptions,
    },
}

impl DataSource {
    /// The same source with its paths made absolute (against the working directory; links are
    /// kept as they are), so a record of it still finds the files from another directory.
    pub fn absolute(&self) -> std::io::Result<DataSource> {
        let abs = |p: &Path| std::path::absolute(p);
        Ok(match self {
            DataSource::Directory(dir) => DataSource::Directory(abs(dir)?),
            DataSource::Files {
                images,
                labels,
                label_options,
            } => DataSource::Files {
                images: abs(images)?,
                labels: abs(labels)?,
                label_options: *label_options,
            },
        })
    }

    /// Loads the sections from this source ([`LabelledSections::load`] or
    /// [`LabelledSections::load_files`]).
    pub fn load(&self) -> Result<LabelledSections> {
        match self {
            DataSource::Directory(dir) => LabelledSections::load(dir),
            DataSource::Files {
                images,
                labels,
                label_options,
            } => LabelledSections::load_files_with(images, labels, label_options),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Directory(dir) => write!(f, "ISBI 2012 data in {}", dir.display()),
            DataSource::Files {
                images,
                labels,
                label_options,
            } => {
                write!(
                    f,
                    "sections {} with labels {}",
                    images.display(),
                    labels.display()
                )?;
                if let Some(k) = label_options.classes {
                    write!(f, ", {k} classes")?;
                }
                match label_options.ignore {
                    Some(v) => write!(f, ", label {v} ignored"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Labelled sections for training and scoring, loaded and checked: the ISBI 2012 stacks
/// ([`LabelledSections::load`]) or a user's own pair of stacks ([`LabelledSections::load_files`]).
#[derive(Debug, Clone)]
pub struct LabelledSections {
    /// Where they were read from.
    pub source: DataSource,
    /// Training images: one channel (grey) or several, 8-bit, 16-bit or float. The ISBI stacks
    /// are 8-bit grey ([`LabelledSections::grey_u8`]).
    pub train_images: ChannelStack,
    /// Training labels, 8-bit: {0, 255}, or class indices (see `label_classes`).
    pub train_labels: Stack<u8>,
    /// How `train_labels` reads.
    pub label_classes: LabelClasses,
    /// Test images, when `test-volume.tif` is present.
    pub test_images: Option<Stack<u8>>,
}

impl LabelledSections {
    /// Load `train-volume.tif`, `train-labels.tif` and, if present, `test-volume.tif` from `dir`,
    /// and check that images and labels pair up.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let (images, labels) = (dir.join(TRAIN_VOLUME), dir.join(TRAIN_LABELS));
        let mut data = Self::load_files(&images, &labels)?;
        // The ISBI stacks are 8-bit grey; a directory of other images is no ISBI directory.
        data.grey_u8()?;
        data.source = DataSource::Directory(dir.to_path_buf());
        let test_path = dir.join(TEST_VOLUME);
        if test_path.exists() {
            data.test_images = Some(read_u8_stack(&test_path)?);
        }
        Ok(data)
    }

    /// Load a training pair under any names (a user's own sections): images with one channel
    /// or several ([`read_channels`]: RGB, N samples per pixel, ImageJ or OME-TIFF channels;
    /// 8-bit, 16-bit or float) and their labels (0 = membrane or background, 255 or 1 = cell),
    /// checked to pair up section by section. There is no test stack.
    pub fn load_files(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Self> {
        Self::load_files_with(images, labels, &LabelOptions::default())
    }

    /// [`LabelledSections::load_files`] with the labels read under `options`: with the
    /// default options, binary labels only ([`read_labels`]); with a class count or an ignored
    /// value, class indices ([`crate::read_class_labels`]: K given or from the data, binary
    /// stacks still read as binary, [`crate::ClassLabels::to_training`]).
    pub fn load_files_with(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        options: &LabelOptions,
    ) -> Result<Self> {
        let (images, labels) = (images.as_ref(), labels.as_ref());
        let train_images = read_channels(images)?;
        // Without a class count or an ignored value, labels are binary, strictly: a stack of
        // any other values (grey images given as labels, say) is refused, not read as classes.
        let (train_labels, label_classes) = if options.is_default() {
            let binary = read_labels(labels)?;
            check_pair(images, &train_images, labels, &binary)?;
            (binary, LabelClasses::Binary)
        } else {
            let classes = read_class_labels(labels, options)?;
            check_pair(images, &train_images, labels, &classes)?;
            classes.to_training(labels)?
        };
        Ok(LabelledSections {
            source: DataSource::Files {
                images: images.to_path_buf(),
                labels: labels.to_path_buf(),
                label_options: *options,
            },
            train_images,
            train_labels,
            label_classes,
            test_images: None,
        })
    }

    /// The training images as the 8-bit grey stack that ISBI's stacks are: for the commands
    /// that score and study the ISBI recipe (evaluate, calibrate, robustness, figures). Images
    /// with channels, or of 16 bits or float, are an error naming the file.
    pub fn grey_u8(&self) -> Result<&Stack<u8>> {
        let path = match &self.source {
            DataSource::Directory(dir) => dir.join(TRAIN_VOLUME),
            DataSource::Files { images, .. } => images.clone(),
        };
        match self.train_images.planes() {
            AnyStack::U8(s) if self.train_images.channels() == 1 => Ok(s),
            AnyStack::U8(_) => Err(Error::WrongPixelType {
                path,
                expected: "grey (one channel)",
                found: "an image with channels",
            }),
            other => Err(Error::WrongPixelType {
                path,
                expected: "8-bit",
                found: other.pixel_type(),
            }),
        }
    }

    /// What a user wants to see first about the data under a split.
    pub fn summary(&self, split: &Split) -> Result<DataSummary> {
        let split_summary = |name: &'static str, pages: &[usize]| -> Result<SplitSummary> {
            let channels = self.train_images.channel_stats(pages)?;
            let classes = self.label_classes;
            let mut counts = vec![0u64; classes.n_classes()];
            for &p in pages {
                for &v in self.train_labels.page(p) {
                    if let Some(c) = classes.class_of(v) {
                        counts[usize::from(c)] += 1;
                    }
                }
            }
            let counted = counts.iter().sum::<u64>().max(1) as f64;
            let class_fractions: Vec<f64> = counts.iter().map(|&n| n as f64 / counted).collect();
            Ok(SplitSummary {
                name,
                sections: pages.to_vec(),
                channels,
                cell_fraction: class_fractions[1..].iter().sum(),
                class_fractions,
            })
        };
        let mut splits = vec![split_summary("train", &split.train)?];
        if !split.validation.is_empty() {
            splits.push(split_summary("validation", &split.validation)?);
        }
        let test = match &self.test_images {
            Some(t) => Some((
                t.pages(),
                GreyStats::of_pages(t, &(0..t.pages()).collect::<Vec<_>>())?,
            )),
            None => None,
        };
        Ok(DataSummary {
            source: self.source.clone(),
            pages: self.train_images.sections(),
            height: self.train_images.height(),
            width: self.train_images.width(),
            channels: self.train_images.channels(),
            pixel_type: self.train_images.pixel_type(),
            label_classes: self.label_classes,
            splits,
            test,
        })
    }
}

/// Statistics of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSummary {
    /// "train" or "validation".
    pub name: &'static str,
    /// Its sections.
    pub sections: Vec<usize>,
    /// Grey-value statistics of its images, one per channel, in stored units (0-255 for 8-bit).
    pub channels: Vec<GreyStats>,
    /// Fraction of its (not ignored) label pixels that are cell, or of any class but 0.
    pub cell_fraction: f64,
    /// Each class's fraction of its label pixels that are not ignored.
    pub class_fractions: Vec<f64>,
}

/// The summary `unet info` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSummary {
    /// Where the sections were read from.
    pub source: DataSource,
    /// Training sections.
    pub pages: usize,
    /// Section height.
    pub height: usize,
    /// Section width.
    pub width: usize,
    /// Channels a section.
    pub channels: usize,
    /// The pixel type in words ("8-bit", ...).
    pub pixel_type: &'static str,
    /// How the labels read.
    pub label_classes: LabelClasses,
    /// One entry per non-empty split.
    pub splits: Vec<SplitSummary>,
    /// Test pages and their grey statistics, if the test volume is present.
    pub test: Option<(usize, GreyStats)>,
}

fn ranges(sections: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sections.len() {
        let mut j = i;
        while j + 1 < sections.len() && sections[j + 1] == sections[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            format!("{}", sections[i])
        } else {
            format!("{}-{}", sections[i], sections[j])
        });
        i = j + 1;
    }
    out.join(",")
}

impl fmt::Display for DataSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.source)?;
        let channels = match self.channels {
            1 => String::new(),
            c => format!(", {c} channels"),
        };
        writeln!(
            f,
            "  training stack: {} sections of {}x{}, {}{channels}",
            self.pages, self.height, self.width, self.pixel_type
        )?;
        writeln!(
            f,
            "  {:<11} {:>9} {:>9} {:>9} {:>13}",
            "split",
            "sections",
            "grey mean",
            "grey std",
            match self.label_classes {
                LabelClasses::Binary => "cell fraction",
                LabelClasses::Indexed { .. } => "not class 0",
            }
        )?;
        for s in &self.splits {
            writeln!(
                f,
                "  {:<11} {:>9} {:>9.2} {:>9.2} {:>12.1}%",
                s.name,
                ranges(&s.sections),
                s.channels[0].mean,
                s.channels[0].std,
                100.0 * s.cell_fraction
            )?;
        }
        if self.channels > 1 {
            writeln!(
                f,
                "  grey mean / std of each channel (the columns above are channel 0's):"
            )?;
            for s in &self.splits {
                let each: Vec<String> = s
                    .channels
                    .iter()
                    .enumerate()
                    .map(|(c, g)| format!("{c}: {:.2} / {:.2}", g.mean, g.std))
                    .collect();
                writeln!(f, "  {:<11} {}", s.name, each.join("   "))?;
            }
        }
        if let LabelClasses::Indexed { classes, ignore } = self.label_classes {
            writeln!(
                f,
                "  labels: {classes} classes{}; each class's share of the labelled pixels \
                 (class 0, 1, ...):",
                if ignore { ", some pixels ignored" } else { "" }
            )?;
            for s in &self.splits {
                let shares: Vec<String> = s
                    .class_fractions
                    .iter()
                    .map(|f| format!("{:.1}%", 100.0 * f))
                    .collect();
                writeln!(f, "  {:<11} {}", s.name, shares.join(" "))?;
            }
        }
        match &self.test {
            Some((n, g)) => writeln!(
                f,
                "  test stack: {n} pages, grey mean {:.2}, std {:.2} (no public labels)",
                g.mean, g.std
            ),
            None => writeln!(f, "  test stack: not present"),
        }
    }
}

/// Find the data directory: the flag if given, else `$UNET_DATA`, else `data/isbi2012` in the
/// current directory, else `data/isbi2012` in the source checkout this was built from.
///
/// The flag and the variable are taken as given (an error if they hold no training stack); the
/// error for missing data says how to get it.
pub fn locate_data_dir(flag: Option<&Path>) -> Result<PathBuf> {
    let has_data = |d: &Path| d.join(TRAIN_VOLUME).is_file() && d.join(TRAIN_LABELS).is_file();
    let how = "get the data with `cargo xtask fetch-data` (downloads into data/isbi2012/), \
               or point --data or UNET_DATA at a directory holding train-volume.tif and train-labels.tif";
    if let Some(dir) = flag {
        return if has_data(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(Error::DataNotFound(format!(
                "--data {}: no {TRAIN_VOLUME} and {TRAIN_LABELS} there; {how}",
                dir.display()
            )))
        };
    }
    if let Some(dir) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_data(&dir) {
            Ok(dir)
        } else {
            Err(Error::DataNotFound(format!(
                "{DATA_ENV}={}: no {TRAIN_VOLUME} and {TRAIN_LABELS} there; {how}",
                dir.display()
            )))
        };
    }
    let candidates = [
        PathBuf::from(DEFAULT_DATA_DIR),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(DEFAULT_DATA_DIR),
    ];
    for c in &candidates {
        if has_data(c) {
            return Ok(c.clone());
        }
    }
    Err(Error::DataNotFound(format!(
        "no ISBI 2012 data found (no --data flag, {DATA_ENV} unset, nothing in {DEFAULT_DATA_DIR}/); {how}"
    )))
}

/// SHA-256 (hex) of a stack's pixel bytes, page after page: the same for any lossless encoding
/// of the same pixels (TIFF, PNG pages, compressed or not).
pub fn pixel_sha256(stack: &Stack<u8>) -> String {
    hex(&Sha256::digest(stack.as_slice()))
}

/// SHA-256 (hex) identifying a training pair: the images' and the labels' shapes and pixel
/// bytes. A run keeps it so that a resume on other sections is refused.
pub fn pair_sha256(images: &ChannelStack, labels: &Stack<u8>) -> String {
    fn shape<T>(hasher: &mut Sha256, stack: &Stack<T>) {
        for dim in [
            stack.pages(),
            stack.height(),
            stack.width(),
            stack.samples(),
        ] {
            hasher.update((dim as u64).to_le_bytes());
        }
    }
    let mut hasher = Sha256::new();
    // 8-bit grey images hash as they always have, so the digests of earlier runs still match;
    // other images add their channel count and pixel type.
    match images.planes() {
        AnyStack::U8(s) => {
            shape(&mut hasher, s);
            hasher.update(s.as_slice());
        }
        AnyStack::U16(s) => {
            shape(&mut hasher, s);
            s.as_slice()
                .iter()
                .for_each(|v| hasher.update(v.to_le_bytes()));
        }
        AnyStack::F32(s) => {
            shape(&mut hasher, s);
            s.as_slice()
                .iter()
                .for_each(|v| hasher.update(v.to_le_bytes()));
        }
    }
    if images.channels() > 1 || !matches!(images.planes(), AnyStack::U8(_)) {
        hasher.update(format!(
            "{} channels, {}",
            images.channels(),
            images.pixel_type()
        ));
    }
    shape(&mut hasher, labels);
    hasher.update(labels.as_slice());
    hex(&hasher.finalize())
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_digest_tells_pixels_shapes_and_roles_apart() {
        let a = Stack::new(
            2,
            2,
            3,
            vec![0u8, 255, 0, 255, 0, 255, 0, 0, 255, 255, 0, 0],
        )
        .unwrap();
        let b = Stack::new(2, 3, 2, a.as_slice().to_vec()).unwrap();
        let mut c_pixels = a.as_slice().to_vec();
        c_pixels[11] = 255;
        let c = Stack::new(2, 2, 3, c_pixels).unwrap();
        let grey = |s: &Stack<u8>| ChannelStack::new(1, s.clone()).unwrap();
        let ab = pair_sha256(&grey(&a), &b);
        assert_eq!(ab, pair_sha256(&grey(&a), &b));
        assert_eq!(ab.len(), 64);
        assert_ne!(ab, pair_sha256(&grey(&b), &a));
        assert_ne!(pair_sha256(&grey(&a), &a), pair_sha256(&grey(&b), &b));
        assert_ne!(pair_sha256(&grey(&a), &a), pair_sha256(&grey(&a), &c));
        // 8-bit grey pairs hash as before channels existed (digests in earlier runs' records).
        let mut before = Sha256::new();
        for stack in [&a, &b] {
            for dim in [stack.pages(), stack.height(), stack.width(), 1] {
                before.update((dim as u64).to_le_bytes());
            }
            before.update(stack.as_slice());
        }
        assert_eq!(ab, hex(&before.finalize()));
        // The same planes as two channels of one section are other data.
        let two = ChannelStack::new(2, a.clone()).unwrap();
        let labels = Stack::new(1, 2, 3, vec![0u8; 6]).unwrap();
        assert_ne!(pair_sha256(&two, &labels), pair_sha256(&grey(&a), &labels));
    }

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(ranges(&[27, 28, 29]), "27-29");
    }

    #[test]
    fn pixel_checksum_is_of_pixels() {
        let s = Stack::new(1, 1, 3, vec![b'a', b'b', b'c']).unwrap();
        // sha256("abc")
        assert_eq!(
            pixel_sha256(&s),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
