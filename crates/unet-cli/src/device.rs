//! The `--device` flag shared by `unet train`, `evaluate`, `predict` and `bench`.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::ValueEnum;

/// The compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

impl DeviceArg {
    /// Opens the device; a CUDA request on a build or machine without CUDA is a clear error.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda => Device::new_cuda(0).context(
                "--device cuda: no CUDA device (build with `--features cuda` on a GPU machine)",
            ),
        }
    }
}
