//! What `unet evaluate` and `unet calibrate` work on: a run directory or a checkpoint, the
//! sections and the device.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use unet_data::LabelledSections;

use crate::data::DataArgs;
use crate::device::DeviceArg;

/// The checkpoint a command works on, the data and the device (`unet evaluate`, `unet calibrate`).
#[derive(Debug, Args)]
pub struct CheckpointTarget {
    /// A run directory: its `best` checkpoint and the run's own split of the sections.
    #[arg(
        long,
        conflicts_with = "checkpoint",
        required_unless_present = "checkpoint"
    )]
    pub run: Option<PathBuf>,
    /// A checkpoint's weights file (with its .json sidecar beside it).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Sections to use with --checkpoint, e.g. 27,28,29 [default: the reference split's:
    /// validation 27-29 to evaluate, training 0-26 to calibrate].
    #[arg(long, value_delimiter = ',')]
    pub sections: Vec<usize>,
    /// The sections to score on.
    #[command(flatten)]
    pub data: DataArgs,
    /// The compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

impl CheckpointTarget {
    /// The data (with `--run` and no data flag, the sections the run recorded) and the device.
    pub fn open(&self) -> Result<(LabelledSections, Device)> {
        let data = match &self.run {
            Some(run) => self.data.load_for_run(run)?.0,
            None => self.data.load()?,
        };
        crate::data::require_binary(&data, "unet evaluate and unet calibrate")?;
        Ok((data, self.device.open()?))
    }

    /// `--sections`, else `default`.
    pub fn sections_or(&self, default: Vec<usize>) -> Vec<usize> {
        if self.sections.is_empty() {
            default
        } else {
            self.sections.clone()
        }
    }
}
