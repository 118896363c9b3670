//! Data for unet-rs: multi-page TIFF stacks, the ISBI 2012 EM data set, splits and its download.
//!
//! A [`Stack`] is pages of equal-sized images kept as one plain `Vec`, so the other crates borrow
//! pages as slices. [`read_stack`] / [`write_stack`] read and write 8-bit, 16-bit and 32-bit float
//! multi-page TIFFs as ImageJ/Fiji and the ISBI challenge use them; [`read_labels`] checks that a
//! label stack is binary; [`read_class_labels`] reads class-index labels (0..K-1, an ignore value,
//! the binary convention as classes 0 and 1); [`read_channels`] / [`write_channels`] read and
//! write images with channels (RGB, N samples, ImageJ hyperstacks, OME-TIFF) as a
//! [`ChannelStack`]; [`TiffSections`] / [`TiffSectionWriter`] read and write such stacks (TIFF
//! or BigTIFF) section by section, for stacks larger than memory; [`LabelledSections`] loads and checks the challenge's stacks; [`Split`] picks
//! training and validation sections. Errors name the file and page and say what is wrong.
//!
//! ```
//! use unet_data::{read_stack, write_stack, AnyStack, Split, Stack};
//!
//! # fn main() -> unet_data::Result<()> {
//! let dir = std::env::temp_dir().join(format!("unet-data-doc-{}", std::process::id()));
//! let stack = Stack::new(2, 3, 4, (0..24).map(|v| v as f32 / 24.0).collect())?;
//! write_stack(dir.join("p.tif"), &stack)?;
//! assert_eq!(read_stack(dir.join("p.tif"))?, AnyStack::F32(stack));
//!
//! let split = Split::reference(30)?;
//! assert_eq!((split.train.len(), split.validation.len()), (27, 3));
//! # std::fs::remove_dir_all(dir).ok();
//! # Ok(())
//! # }
//! ```

mod channels;
mod error;
mod fsutil;
mod isbi;
mod labels;
mod limits;
mod png_io;
mod split;
mod stack;
mod tiff_io;
mod tiff_stream;

#[cfg(feature = "download")]
pub mod download;

#[cfg(feature = "fuzzing")]
pub mod fuzz;

#[cfg(feature = "zarr")]
pub mod zarr;

pub use channels::{decode_channels, read_channels, write_channels, ChannelStack};
pub use error::{Error, Result};
pub use fsutil::{
    process_is_running, temp_path_for, temp_path_pid, write_all_atomically, write_atomically,
};
pub use isbi::{
    check_pair, decode_labels, locate_data_dir, pair_sha256, pixel_sha256, read_labels, DataSource,
    DataSummary, LabelledSections, Sections, SplitSummary, CELL, DATA_ENV, DEFAULT_DATA_DIR,
    MEMBRANE, TEST_VOLUME, TRAIN_LABELS, TRAIN_VOLUME,
};
pub use labels::{
    decode_class_labels, read_class_labels, ClassLabels, LabelClasses, LabelOptions, IGNORED,
};
pub use limits::{
    max_pixels, set_max_pixels, DEFAULT_MAX_PIXELS, MAX_COMPRESSION_RATIO, MAX_PIXELS_ENV,
};
pub use png_io::{decode_png_grey, encode_png_grey, read_png_grey, write_png_grey};
pub use split::Split;
pub use stack::{AnyStack, GreyStats, Stack, UnitValue};
pub use tiff_io::{decode_stack, read_stack, read_u8_stack, write_stack, TiffPixel};
pub use tiff_stream::{TiffSectionWriter, TiffSections};
