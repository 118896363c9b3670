//! unet-rs models out: the U-Net as an ONNX graph ([`onnx::onnx_model`]) and as a BioImage
//! Model Zoo package ([`package::package`]) that Fiji (deepImageJ), napari, ilastik and
//! QuPath run, and the checkpoint back out of such a package ([`package::read_package`]) for
//! `unet predict`.
//!
//! The ONNX file is written from prost message types of our own ([`onnx::proto`]), with no
//! protoc; the package's rdf.yaml by a small YAML writer ([`yaml`]); its test tensors in
//! NumPy's format ([`npy`]).

mod error;
pub mod npy;
pub mod onnx;
pub mod package;
pub mod yaml;

pub use error::{Error, Result};
pub use onnx::onnx_model;
pub use package::{
    load_model_or_package, package, read_package, read_package_bytes, CheckpointBytes,
    PackageOptions, Sample,
};
