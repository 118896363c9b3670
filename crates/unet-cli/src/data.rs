//! Where the training sections come from: the ISBI 2012 directory, or a user's own pair of
//! stacks (`--images` and `--labels`), for every command that trains or scores on them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use unet_data::{locate_data_dir, LabelledSections};

/// Flags naming the training sections.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// The ISBI 2012 data directory, holding train-volume.tif and train-labels.tif (default:
    /// $UNET_DATA, then data/isbi2012).
    #[arg(long, conflicts_with_all = ["images", "labels"])]
    pub data: Option<PathBuf>,
    /// Your own sections instead of the ISBI data: an 8-bit grey TIFF stack (any page count and
    /// size; with --labels). [default: the ISBI data, as --data]
    #[arg(long, requires = "labels")]
    pub images: Option<PathBuf>,
    /// The labels of --images: a TIFF stack of the same pages and size, 0 = membrane or
    /// background, 255 or 1 = cell. [default: the ISBI data, as --data]
    #[arg(long, requires = "images")]
    pub labels: Option<PathBuf>,
}

impl DataArgs {
    /// Load and check the sections these flags name.
    pub fn load(&self) -> Result<LabelledSections> {
        if let (Some(images), Some(labels)) = (&self.images, &self.labels) {
            return LabelledSections::load_files(images, labels).with_context(|| {
                format!(
                    "loading the sections {} and their labels {}",
                    images.display(),
                    labels.display()
                )
            });
        }
        let dir = locate_data_dir(self.data.as_deref())?;
        LabelledSections::load(&dir)
            .with_context(|| format!("loading the data in {}", dir.display()))
    }
}
