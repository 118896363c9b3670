//! The error type of `unet-data`.

use std::path::PathBuf;

/// Everything that can go wrong reading, checking or fetching data.
///
/// Every variant that concerns a file names it, and a page where one is involved, so a
/// message reads like "train-labels.tif page 12: value 37 is not a label (expected 0 or 255)".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is empty (zero bytes) or holds no image page.
    #[error("{}: empty file, no image page in it", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file does not start with a TIFF header.
    #[error("{}: not a TIFF file (it starts with {magic:02x?}, expected \"II*\\0\" or \"MM\\0*\")", path.display())]
    NotTiff {
        /// The file.
        path: PathBuf,
        /// Its first bytes.
        magic: Vec<u8>,
    },
    /// The file declares more pixels than the readers' bound, or than its size can hold.
    #[error(
        "{} page {page}: declares {declared} pixel values, more than {why}; refused before \
         reading (raise the bound with --max-pixels or UNET_MAX_PIXELS if the file is real)",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The page that went over.
        page: usize,
        /// Pixel values (all pages so far, all samples) it declares.
        declared: u64,
        /// The bound it exceeds, in words.
        why: String,
    },
    /// The file ends before the data its header promises.
    #[error("{} page {page}: the file is truncated ({detail})", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The page being read when the data ran out.
        page: usize,
        /// What the decoder said.
        detail: String,
    },
    /// The TIFF decoder or encoder rejected the file.
    #[error("{} page {page}: {detail}", path.display())]
    Tiff {
        /// The file.
        path: PathBuf,
        /// The page concerned.
        page: usize,
        /// What the TIFF library said.
        detail: String,
    },
    /// A page's pixel type is not one we read (8/16-bit unsigned or 32-bit float samples, grey,
    /// RGB or N per pixel).
    #[error("{} page {page}: unsupported pixel type {pixel} (expected 8-bit, 16-bit or 32-bit float grey, RGB or N samples a pixel)", path.display())]
    UnsupportedPixelType {
        /// The file.
        path: PathBuf,
        /// The page.
        page: usize,
        /// The pixel type found.
        pixel: String,
    },
    /// Pages of one stack differ in size or pixel type.
    #[error("{} page {page}: {found} differs from page 0 ({expected}); all pages of a stack must match", path.display())]
    PageMismatch {
        /// The file.
        path: PathBuf,
        /// The first page that differs.
        page: usize,
        /// What page 0 is (e.g. "512x512 8-bit").
        expected: String,
        /// What this page is.
        found: String,
    },
    /// A stack of the wrong pixel type for its role (e.g. float labels).
    #[error("{}: {found} pages where {expected} pages are needed", path.display())]
    WrongPixelType {
        /// The file.
        path: PathBuf,
        /// What the role needs.
        expected: &'static str,
        /// What the file has.
        found: &'static str,
    },
    /// A label page holds a value that is not a class.
    #[error(
        "{} page {page}: value {value} is not a label (expected {expected}; labels of class \
         indices 0..K-1 are read when the number of classes is given, `--classes K`)",
        path.display()
    )]
    NotALabel {
        /// The label file.
        path: PathBuf,
        /// The page.
        page: usize,
        /// The offending value.
        value: u16,
        /// The values allowed, in words.
        expected: &'static str,
    },
    /// A class-index label holds a value that is neither a class (0..K-1) nor the ignore value.
    #[error(
        "{} page {page} (counting from 0), row {row}, column {column}: value {value} is not a \
         class index (expected 0..={} for {classes} classes{}); give the right --classes or \
         --ignore-label",
        path.display(),
        classes.saturating_sub(1),
        ignore_note(ignore)
    )]
    ClassOutOfRange {
        /// The label file.
        path: PathBuf,
        /// The page (0-based).
        page: usize,
        /// The row of the first such pixel in the page.
        row: usize,
        /// Its column.
        column: usize,
        /// The offending value.
        value: u16,
        /// The number of classes K.
        classes: usize,
        /// The ignore value, if any.
        ignore: Option<u16>,
    },
    /// Options for reading class labels that cannot hold (fewer than 2 classes, an ignore value
    /// that is also a class of the binary convention).
    #[error("{}: {detail}", path.display())]
    LabelOptions {
        /// The label file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An image has another number of channels than the model takes.
    #[error(
        "{}: {found} channel(s) per section, but the model takes {expected}",
        path.display()
    )]
    ChannelMismatch {
        /// The image file.
        path: PathBuf,
        /// Channels in the file.
        found: usize,
        /// Channels the model takes.
        expected: usize,
    },
    /// Two stacks that must match (images and labels) do not.
    #[error("{} and {}: {what}", first.display(), second.display())]
    StackMismatch {
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
        /// How they differ.
        what: String,
    },
    /// Stack dimensions and buffer length disagree, or a dimension is zero.
    #[error("bad stack shape: {0}")]
    Shape(String),
    /// A split was asked for with impossible parameters.
    #[error("bad split: {0}")]
    Split(String),
    /// The data directory could not be found.
    #[error("{0}")]
    DataNotFound(String),
    /// A downloaded or local file's pixels do not have the expected checksum.
    #[error("{}: pixel checksum {found} does not match the expected {expected}; the file is not the ISBI 2012 data", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The expected SHA-256 of the pixel bytes.
        expected: String,
        /// The SHA-256 found.
        found: String,
    },
    /// A PNG could not be decoded, or is not an 8-bit grey image.
    #[error("{source_name}: {detail}")]
    Png {
        /// The URL or file the PNG came from.
        source_name: String,
        /// What is wrong.
        detail: String,
    },
    /// A download failed.
    #[error("download of {url} failed: {detail}")]
    Download {
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// A Zarr or N5 store, array or dataset could not be read or written, or is not a volume
    /// unet can use.
    #[error("{}: {detail}", path.display())]
    Zarr {
        /// The store, array or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An output store was made by another job (another model or other options).
    #[error(
        "{}: this store was written by another job ({detail}); finish it with the same model and \
         options, or choose another --out",
        path.display()
    )]
    StoreMismatch {
        /// The store.
        path: PathBuf,
        /// The first difference, in words.
        detail: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// ", or the ignore value V" when there is one.
fn ignore_note(ignore: &Option<u16>) -> String {
    match ignore {
        Some(v) => format!(", or the ignore value {v}"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
