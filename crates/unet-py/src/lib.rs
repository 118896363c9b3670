//! `unet_rs`, the Python package of unet-rs: the paper's exact loss weight maps
//! ([`weights::weight_map`]), joint augmentation of image, label and weights
//! ([`augment::Augmenter`]), the ISBI 2012 scores ([`scores::scores`]) and overlap-tile
//! prediction ([`predict::predict`]) on numpy arrays, for PyTorch users.
//!
//! A thin layer: every result comes from the library crates (`unet-weights`, `unet-augment`,
//! `unet-metrics`, `unet-model`, `unet-export`); this crate converts arrays ([`convert`]),
//! releases the GIL while they compute, and turns every bad input into a Python exception that
//! names it. Built by maturin (`pip install ./crates/unet-py`) as an abi3 wheel for
//! CPython >= 3.9.

use pyo3::prelude::*;

pub mod augment;
pub mod convert;
pub mod predict;
pub mod scores;
pub mod weights;

/// Rust's allocations in this extension (the arrays handed to numpy included, which free them
/// through the same allocator): mimalloc keeps freed megabyte blocks for the next call, where
/// glibc returns them to the kernel and pays for fresh zeroed pages every sample. Python's own
/// allocations are not affected.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// U-Net for biomedical segmentation, from Rust (unet-rs): exact loss weight maps
/// (weight_map), joint augmentation of image, label and weights (Augmenter), the ISBI 2012
/// scores (scores) and overlap-tile prediction with the built-in model (predict), on numpy
/// arrays. Every function releases the GIL while it computes.
#[pymodule]
fn unet_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(weights::weight_map, m)?)?;
    m.add_function(wrap_pyfunction!(scores::scores, m)?)?;
    m.add_function(wrap_pyfunction!(predict::predict, m)?)?;
    m.add_class::<augment::Augmenter>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
