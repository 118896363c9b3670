//! The model `unet predict` uses without `--model`: the committed `models/default`, built into
//! the binary through `unet_model::builtin` (the default-on `builtin-model` feature), so an
//! installed `unet` works from any directory.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use unet_export::load_model_or_package;
use unet_export::package::{is_package_path, read_package, CheckpointBytes};
use unet_model::builtin::builtin_checkpoint;
use unet_model::checkpoint::sidecar_path;
use unet_model::{CheckpointMeta, UNet};

/// What `--model` names in messages when it was not given.
pub const BUILTIN_NAME: &str = unet_model::builtin::NAME;

/// The net of the checkpoint `model` (weights file with its sidecar, or a BioImage Model Zoo
/// package that `unet export` wrote), or of the built-in model when `model` is `None`, on
/// `device`; with its sidecar and a name for messages.
pub fn open_model(model: Option<&Path>, device: &Device) -> Result<(UNet, CheckpointMeta, String)> {
    match model {
        Some(path) => {
            if !path.is_file() {
                bail!("{}: no such checkpoint file", path.display());
            }
            let (net, meta) = load_model_or_package(path, device)
                .with_context(|| format!("loading {}", path.display()))?;
            Ok((net, meta, path.display().to_string()))
        }
        None => {
            let (net, meta) = builtin_model(device)?;
            Ok((net, meta, BUILTIN_NAME.to_string()))
        }
    }
}

/// The built-in model, or an error saying how to get one.
pub fn builtin_model(device: &Device) -> Result<(UNet, CheckpointMeta)> {
    let Some(loaded) = unet_model::builtin::builtin_model(device) else {
        bail!(
            "no --model given, and this unet was built without the built-in default model \
             (the `builtin-model` feature): pass --model PATH.safetensors"
        );
    };
    loaded.context("loading the built-in default model")
}

/// The sidecar's and weights' bytes of the checkpoint `model` (or of a package), or of the
/// built-in model when `model` is `None`; with a name for messages.
pub fn checkpoint_bytes(model: Option<&Path>) -> Result<(CheckpointBytes, String)> {
    match model {
        Some(path) if is_package_path(path) => {
            Ok((read_package(path)?, path.display().to_string()))
        }
        Some(path) => {
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let bytes = CheckpointBytes {
                weights: read(path)?,
                sidecar: read(&sidecar_path(path))?,
            };
            Ok((bytes, path.display().to_string()))
        }
        None => {
            let Some(builtin) = builtin_checkpoint() else {
                bail!(
                    "no --model given, and this unet was built without the built-in default \
                     model (the `builtin-model` feature): pass --model PATH.safetensors"
                );
            };
            let bytes = CheckpointBytes {
                sidecar: builtin.sidecar.to_vec(),
                weights: builtin.weights.to_vec(),
            };
            Ok((bytes, BUILTIN_NAME.to_string()))
        }
    }
}
