//! The `--device` flag shared by `unet train`, `evaluate`, `predict` and `bench`.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::ValueEnum;
use unet_model::kernels::{cpu_path, winograd};

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

/// What computes a prediction on `device`, for summary lines: `the CPU (AMD EPYC 9R14, avx2
/// kernels, Winograd from 32 channels ...)` (the forward products' path: a prediction runs no
/// other), or `a CUDA GPU`.
pub fn describe(device: &Device) -> String {
    describe_with(device, cpu_path::kernel_paths().forward)
}

/// What computes a training run on `device`: as [`describe`], with the paths of all three
/// products (`the CPU (AMD EPYC, forward avx512, input gradient avx512, weight gradient avx2
/// kernels, Winograd ...)`, or one name where they agree).
pub fn describe_training(device: &Device) -> String {
    describe_with(device, cpu_path::kernel_paths())
}

/// `the CPU (<brand string, else vendor>, <paths> kernels, <convolution algorithm>)`, or `a
/// CUDA GPU`.
fn describe_with(device: &Device, paths: impl std::fmt::Display) -> String {
    if !device.is_cpu() {
        return "a CUDA GPU".to_string();
    }
    let cpu = cpu_path::cpu_info();
    let name = match cpu.model.is_empty() {
        true => &cpu.vendor,
        false => &cpu.model,
    };
    let conv = winograd::describe_conv_choice();
    format!("the CPU ({name}, {paths} kernels, {conv})")
}

/// The CPU, the kernel paths its products run on and the convolution algorithm (`{"cpu": ...,
/// "cpu_kernels": ..., "cpu_conv": ...}`), or nothing off the CPU: the fields JSON summaries
/// merge in, so every figure says where it came from.
pub fn kernel_fields(device: &Device) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    if device.is_cpu() {
        fields.insert("cpu".into(), cpu_path::cpu_info().to_json());
        fields.insert("cpu_kernels".into(), cpu_path::kernel_paths().to_json());
        fields.insert("cpu_conv".into(), winograd::conv_choice_json());
    }
    fields
}
