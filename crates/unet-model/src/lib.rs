//! The U-Net of Ronneberger, Fischer & Brox (MICCAI 2015) in candle: the network, its size
//! rules, the losses, the optimizers and checkpoints.
//!
//! - [`UNetConfig`] describes the net (presets [`UNetConfig::paper`], [`UNetConfig::reference`],
//!   [`UNetConfig::small`]); [`UNetConfig::validate`] gives typed errors for bad settings.
//! - [`output_size`] and [`nearest_valid_input_sizes`] are the size rules: a valid-padding U-Net
//!   needs an even size at every max-pool (572 -> 388 in the paper). [`UNet::forward_t`] checks
//!   the input size first and names the nearest valid sizes instead of failing deep in candle.
//! - [`UNet`] is built from a [`candle_nn::VarBuilder`]; its tensors have stable names
//!   ([`parameter_specs`]) so checkpoints load by name. [`parameter_count`] counts trainable
//!   parameters as PyTorch does (31,030,658 for the paper's net); [`layer_table`] prints the layers.
//! - Losses ([`cross_entropy`] with optional per-pixel weights, [`dice_loss`],
//!   [`cross_entropy_dice`]), optimizers ([`Adam`], [`Sgd`] with momentum or Nesterov), learning
//!   rate schedules ([`LrSchedule`]), gradient clipping ([`clip_grad_norm`]).
//! - One training step ([`UNet::train_step`]): the direct step or autograd, clipping and the
//!   update, for the trainer (`unet-train`) and `unet bench` alike.
//! - The input normalisation ([`Normalisation`]) a model is trained with and expects.
//! - Checkpoints ([`save_checkpoint`], [`load_checkpoint`], [`load_model`]): safetensors plus a
//!   JSON sidecar (config, normalisation, metrics), written atomically, checked for config,
//!   truncation and corruption when loaded.
//! - Overlap-tile prediction ([`overlap_tile_predict`], [`tiling`]): images of any size, tile by
//!   tile with mirrored context, seamless for valid padding, blended for same padding, with
//!   optional flip/rotation test-time augmentation.
//!
//! - The committed default model ([`builtin`], with the `builtin-model` feature), for every
//!   front end that predicts without a checkpoint of the user's.
//!
//! The forward pass is written from small layer structs ([`layers`]); on the CPU the fast custom
//! ops of [`kernels`] run them.
//!
//! # Example
//!
//! A tiny `small`-like net on the CPU:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use unet_model::{UNet, UNetConfig};
//!
//! # fn main() -> unet_model::Result<()> {
//! let cfg = UNetConfig { depth: 3, base_width: 4, ..UNetConfig::small() };
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = UNet::new(&cfg, vb)?;
//! model.init_seeded(42)?; // reproducible He initialisation
//!
//! let x = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu)?;
//! let logits = model.forward_t(&x, false)?;
//! assert_eq!(logits.dims(), &[1, 2, 32, 32]);
//!
//! // A size that does not divide by 2^(depth-1) is a clear error, not a shape panic.
//! let bad = Tensor::zeros((1, 1, 30, 32), DType::F32, &Device::Cpu)?;
//! let err = model.forward_t(&bad, false).unwrap_err();
//! assert!(err.to_string().contains("nearest valid input sizes: 28 (output 28) and 32 (output 32)"));
//! # Ok(())
//! # }
//! ```

mod arch;
pub mod builtin;
pub mod checkpoint;
pub mod config;
mod error;
pub mod kernels;
pub mod layers;
pub mod loss;
mod normalisation;
pub mod optim;
pub mod precision;
pub mod resnet;
pub mod size;
mod step;
pub mod tiling;
mod unet;

pub use arch::{
    buffer_count, conv_flops, layer_table, parameter_count, parameter_specs, ParamRole, ParamSpec,
};
pub use checkpoint::{
    load_checkpoint, load_model, load_model_from_bytes, load_optimizer_state, read_checkpoint_meta,
    save_checkpoint, CheckpointMeta,
};
pub use config::{Encoder, Padding, Preset, UNetConfig, Upsampling};
pub use error::{Error, Result};
pub use loss::{cross_entropy, cross_entropy_dice, dice_loss, Loss};
pub use normalisation::{Normalisation, PlaneStats};
pub use optim::{clip_grad_norm, Adam, AdamParams, LrSchedule, Optimizer, Sgd, SgdParams};
pub use precision::{LossScaler, Precision};
pub use size::{nearest_valid_input_sizes, output_size, NearestSizes, SizeError};
pub use step::{StepKind, StepOptions, StepReport};
pub use tiling::{
    overlap_tile_predict, overlap_tile_predict_probs, overlap_tile_predict_window,
    overlap_tile_predict_window_probs, Blend, TileOptions, Window,
};
pub use unet::UNet;
