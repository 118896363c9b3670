//! The committed default model, `models/default`, built into the library by the `builtin-model`
//! feature: one definition for every front end (the `unet` binary, the Python package), so a
//! program that uses it works from any directory without the repository beside it.

use candle_core::Device;

use crate::checkpoint::{load_model_from_bytes, CheckpointMeta};
use crate::error::Result;
use crate::unet::UNet;

/// How messages name the built-in model.
pub const NAME: &str = "the built-in default model (models/default)";

/// The bytes of the built-in checkpoint: its JSON sidecar and its safetensors weights.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinCheckpoint {
    /// `models/default.json`.
    pub sidecar: &'static [u8],
    /// `models/default.safetensors`.
    pub weights: &'static [u8],
}

#[cfg(feature = "builtin-model")]
const BUILTIN: Option<BuiltinCheckpoint> = Some(BuiltinCheckpoint {
    sidecar: include_bytes!("../../../models/default.json"),
    weights: include_bytes!("../../../models/default.safetensors"),
});
#[cfg(not(feature = "builtin-model"))]
const BUILTIN: Option<BuiltinCheckpoint> = None;

/// The built-in checkpoint's bytes; `None` when this build left it out (the `builtin-model`
/// feature is off), so callers can say how to get one.
pub fn builtin_checkpoint() -> Option<BuiltinCheckpoint> {
    BUILTIN
}

/// The built-in model on `device`, with its sidecar; `None` when this build left it out.
pub fn builtin_model(device: &Device) -> Option<Result<(UNet, CheckpointMeta)>> {
    builtin_checkpoint().map(|checkpoint| {
        load_model_from_bytes(
            "models/default.safetensors",
            checkpoint.sidecar,
            checkpoint.weights,
            device,
        )
    })
}

#[cfg(all(test, feature = "builtin-model"))]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_model_loads() {
        let (net, meta) = builtin_model(&Device::Cpu)
            .expect("built in")
            .expect("loads");
        assert_eq!(net.config().in_channels, 1);
        assert!(meta.normalisation.is_some());
    }
}
