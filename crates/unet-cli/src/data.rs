//! Where the training sections come from: the ISBI 2012 directory, or a user's own pair of
//! stacks (`--images` and `--labels`), for every command that trains or scores on them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use unet_data::{locate_data_dir, LabelClasses, LabelOptions, LabelledSections};
use unet_train::DataRecord;

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
    /// background, 255 or 1 = cell; or class indices 0..K-1 (see --classes). [default: the
    /// ISBI data, as --data]
    #[arg(long, requires = "images")]
    pub labels: Option<PathBuf>,
    /// The number of classes K of --labels, which then hold class indices 0..K-1 (8- or
    /// 16-bit) [default: 2 for binary labels, else the largest label + 1].
    #[arg(long, value_name = "K", requires = "labels")]
    pub classes: Option<usize>,
    /// A label value that is no class: its pixels are left out of the loss and the scores.
    /// [default: none, every pixel counts]
    #[arg(long, value_name = "V", requires = "labels")]
    pub ignore_label: Option<u16>,
}

impl DataArgs {
    /// Load and check the sections these flags name.
    pub fn load(&self) -> Result<LabelledSections> {
        if let (Some(images), Some(labels)) = (&self.images, &self.labels) {
            let options = LabelOptions {
                classes: self.classes,
                ignore: self.ignore_label,
            };
            return LabelledSections::load_files_with(images, labels, &options).with_context(
                || {
                    format!(
                        "loading the sections {} and their labels {}",
                        images.display(),
                        labels.display()
                    )
                },
            );
        }
        let dir = locate_data_dir(self.data.as_deref())?;
        LabelledSections::load(&dir)
            .with_context(|| format!("loading the data in {}", dir.display()))
    }

    /// [`DataArgs::load`] for a command that scores P(cell) against binary labels (`what`
    /// names it in the error for labels of class indices).
    pub fn load_binary(&self, what: &str) -> Result<LabelledSections> {
        let data = self.load()?;
        require_binary(&data, what)?;
        Ok(data)
    }

    /// Whether a data flag was given.
    pub fn given(&self) -> bool {
        self.data.is_some() || self.images.is_some()
    }

    /// The sections of the run in `run_dir`: those the flags name when given, else those the
    /// run recorded (checked against its digest), else the default rule of [`DataArgs::load`]
    /// (runs of before the record). The second value says whether they came from the record.
    pub fn load_for_run(&self, run_dir: &Path) -> Result<(LabelledSections, bool)> {
        if !self.given() {
            if let Some(record) = DataRecord::read(run_dir)? {
                return Ok((record.load(run_dir)?, true));
            }
        }
        Ok((self.load()?, false))
    }
}

/// Refuses labels of class indices for `what`, a command that scores P(cell) of two-class
/// models against binary labels.
pub fn require_binary(data: &LabelledSections, what: &str) -> Result<()> {
    if data.label_classes != LabelClasses::Binary {
        bail!(
            "{what} scores P(cell) against binary labels; {} holds {} classes (for K classes: \
             unet predict --argmax, then unet score --classes K)",
            data.source,
            data.label_classes.n_classes()
        );
    }
    Ok(())
}
