//! Training and evaluation: [`TrainConfig`] (recipes `default`, `reference`, `paper`),
//! [`train`] (epochs of batches from the [`unet_data::Loader`], validation on the full sections,
//! `log.jsonl`, checkpoints `best` and `last`, resume, clean stop) and [`evaluate_checkpoint`] /
//! [`evaluate_run`] (scores JSON on the validation sections).
//!
//! A run directory holds:
//! - `config.json`: the [`TrainConfig`];
//! - `log.jsonl`: one [`EpochRecord`] per line;
//! - `last.safetensors` (+ `last.json` sidecar, `last.optim.safetensors`): the state after the
//!   latest completed step that was saved (every epoch end and on a stop), with the optimizer
//!   state and the position in the data stream, so a resumed run continues exactly;
//! - `best.safetensors` (+ `best.json`): the epoch with the highest validation mean IoU.
//!
//! Checkpoint sidecars carry, under `metrics`, the grey-value normalisation (`normalisation`:
//! `mean`, `std` of the [0, 1] grey values of the training sections) that inference must apply
//! before the network: `x = (grey / 255 - mean) / std`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use unet_augment::{Pipeline, Preset as AugmentPreset};
use unet_data::{GreyStats, Loader, LoaderConfig, SectionSet, Split, Stack};
use unet_metrics::{
    score_stack, sweep_decision_thresholds, IsbiOptions, ScoreOptions, ScoreReport,
};
use unet_weights::{ClassWeight, Connectivity, WeightMapParams};

use crate::calibrate::{calibrate_checkpoint, Calibration};
use crate::checkpoint::{
    load_checkpoint, load_checkpoint_for_fine_tuning, load_optimizer_state, read_checkpoint_meta,
};
use crate::optim::{clip_grad_norm, Adam, AdamParams, LrSchedule, Optimizer, Sgd, SgdParams};
use crate::precision::{backward_with, LossScaler, Precision};
use crate::tensorboard::EventWriter;
use crate::tiling::predict_whole_logits;
use crate::{save_checkpoint, Loss, Preset, UNet, UNetConfig};

/// Everything that can stop a training run or an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model, loss, optimizer or a checkpoint failed (boxed: the model error is large).
    #[error(transparent)]
    Model(Box<crate::Error>),
    /// Tensor maths failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The data or the loader failed (boxed: the data error is large).
    #[error(transparent)]
    Data(Box<unet_data::Error>),
    /// Scoring failed.
    #[error("scores: {0}")]
    Metrics(#[from] unet_metrics::Error),
    /// The augmentation preset could not be built.
    #[error("augmentation: {0}")]
    Augment(#[from] unet_augment::Error),
    /// A setting is impossible.
    #[error("bad training setting: {0}")]
    Config(String),
    /// A file of the run could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file of the run is not what it should be.
    #[error("{}: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TensorBoard event file could not be written.
    #[error(transparent)]
    TensorBoard(#[from] crate::tensorboard::TensorBoardError),
    /// A checkpoint cannot be calibrated.
    #[error("cannot calibrate {}: {reason}", checkpoint.display())]
    Calibration {
        /// The checkpoint's weights file.
        checkpoint: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The run cannot be resumed (no `last` checkpoint, another configuration, ...).
    #[error("cannot resume {}: {reason}", run_dir.display())]
    Resume {
        /// The run directory.
        run_dir: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The loss became NaN or infinite; the step was not applied and the checkpoints on disk
    /// are those of the last good epoch.
    #[error(
        "the training loss became {value} at epoch {epoch}, step {step}: stopped without applying \
         the step; the checkpoints in {} are kept (try a lower learning rate or gradient clipping)",
        run_dir.display()
    )]
    NonFiniteLoss {
        /// The epoch (1-based).
        epoch: usize,
        /// The step within the epoch (1-based).
        step: usize,
        /// The loss value.
        value: f64,
        /// The run directory.
        run_dir: PathBuf,
    },
}

impl From<crate::Error> for TrainError {
    fn from(e: crate::Error) -> Self {
        TrainError::Model(Box::new(e))
    }
}

impl From<unet_data::Error> for TrainError {
    fn from(e: unet_data::Error) -> Self {
        TrainError::Data(Box::new(e))
    }
}

/// The result type of training and evaluation.
pub type Result<T> = std::result::Result<T, TrainError>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The named recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// Sized for about an hour on a 2-core CPU: the `small` net (same padding), Adam 1e-3 with
    /// cosine decay, 256 x 256 crops in batches of 4, the reference's augmentation, border weights.
    Default,
    /// The reference implementation's recipe with the border weights it meant to use: its net
    /// (valid padding, batch norm), Adam 5e-4, batch 3, 50 epochs, 572 -> 388 tiles, 27/3 split.
    Reference,
    /// The paper's: its net, SGD momentum 0.99, one 572 -> 388 tile per batch, its augmentation.
    Paper,
}

impl Recipe {
    /// All recipes, in the order of [`Recipe::NAMES`].
    pub const ALL: [Recipe; 3] = [Recipe::Default, Recipe::Reference, Recipe::Paper];
    /// The names as spelled on the command line.
    pub const NAMES: [&'static str; 3] = ["default", "reference", "paper"];

    /// The recipe's name.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Default => "default",
            Recipe::Reference => "reference",
            Recipe::Paper => "paper",
        }
    }
}

impl std::str::FromStr for Recipe {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        Recipe::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                TrainError::Config(format!(
                    "unknown recipe {s:?}; known: default, reference, paper"
                ))
            })
    }
}

/// The optimizer and its base learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// Adam (AdamW when `weight_decay` > 0).
    Adam {
        /// Base learning rate.
        lr: f64,
        /// Decoupled weight decay.
        #[serde(default)]
        weight_decay: f64,
    },
    /// SGD with momentum.
    Sgd {
        /// Base learning rate.
        lr: f64,
        /// Momentum (the paper: 0.99).
        momentum: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 weight decay.
        #[serde(default)]
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerConfig::Adam { lr, .. } | OptimizerConfig::Sgd { lr, .. } => lr,
        }
    }

    /// The same optimizer with another base learning rate.
    pub fn with_lr(self, new_lr: f64) -> Self {
        match self {
            OptimizerConfig::Adam { weight_decay, .. } => OptimizerConfig::Adam {
                lr: new_lr,
                weight_decay,
            },
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => OptimizerConfig::Sgd {
                lr: new_lr,
                momentum,
                nesterov,
                weight_decay,
            },
        }
    }

    fn build(&self, model: &UNet) -> crate::Result<Box<dyn Optimizer>> {
        Ok(match *self {
            OptimizerConfig::Adam { lr, weight_decay } => Box::new(Adam::new(
                model.parameters(),
                AdamParams {
                    lr,
                    weight_decay,
                    ..AdamParams::default()
                },
            )?),
            OptimizerConfig::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            } => Box::new(Sgd::new(
                model.parameters(),
                SgdParams {
                    lr,
                    momentum,
                    nesterov,
                    weight_decay,
                },
            )?),
        })
    }
}

/// The learning-rate schedule over the whole run (its length is `epochs x steps per epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleConfig {
    /// The base rate throughout.
    Constant,
    /// Cosine decay to `min_lr` at the end of the run.
    Cosine {
        /// The final rate.
        min_lr: f64,
    },
    /// Poly decay `(1 - t / T)^power` (nnU-Net: 0.9).
    Poly {
        /// The exponent.
        power: f64,
    },
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Factor per decay.
        gamma: f64,
    },
}

impl ScheduleConfig {
    /// The schedule in steps for a run of `total_steps` steps of `steps_per_epoch` each.
    pub fn schedule(&self, total_steps: usize, steps_per_epoch: usize) -> LrSchedule {
        let total_steps = total_steps.max(1);
        match *self {
            ScheduleConfig::Constant => LrSchedule::Constant,
            ScheduleConfig::Cosine { min_lr } => LrSchedule::Cosine {
                total_steps,
                min_lr,
            },
            ScheduleConfig::Poly { power } => LrSchedule::Poly { total_steps, power },
            ScheduleConfig::Step {
                every_epochs,
                gamma,
            } => LrSchedule::Step {
                every: (every_epochs * steps_per_epoch).max(1),
                gamma,
            },
        }
    }
}

/// The class-balancing term of the weight map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeightConfig {
    /// `H * W / count(class)` per tile (the reference's).
    Balanced,
    /// Balanced, scaled to average 1.
    Mean1,
    /// 1 everywhere.
    None,
}

/// The per-pixel loss weights w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightsConfig {
    /// Height of the border term (0 switches it off; the paper: 10).
    pub w0: f32,
    /// Width of the border term in pixels (the paper: 5).
    pub sigma: f32,
    /// The class-balancing term.
    pub class_weight: ClassWeightConfig,
}

impl WeightsConfig {
    /// The paper's values: w0 10, sigma 5, balanced classes.
    pub fn paper() -> Self {
        WeightsConfig {
            w0: 10.0,
            sigma: 5.0,
            class_weight: ClassWeightConfig::Balanced,
        }
    }

    /// The unet-weights parameters (4-connected cells, border term on the background).
    pub fn params(&self) -> WeightMapParams {
        WeightMapParams {
            w0: self.w0,
            sigma: self.sigma,
            connectivity: Connectivity::Four,
            class_weight: match self.class_weight {
                ClassWeightConfig::Balanced => ClassWeight::Balanced,
                ClassWeightConfig::Mean1 => ClassWeight::Mean1,
                ClassWeightConfig::None => ClassWeight::None,
            },
            ..WeightMapParams::default()
        }
    }
}

/// The augmentation of training tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentationConfig {
    /// None: tiles are plain crops.
    None,
    /// The reference's (flips, dense elastic, brightness, noise), with a real vertical flip.
    Reference,
    /// The paper's (shift, rotation, coarse-grid elastic, grey values).
    Paper,
}

impl AugmentationConfig {
    /// The pipeline.
    pub fn pipeline(&self) -> Result<Pipeline> {
        Ok(match self {
            AugmentationConfig::None => Pipeline::builder().build()?,
            AugmentationConfig::Reference => AugmentPreset::reference().pipeline()?,
            AugmentationConfig::Paper => AugmentPreset::Paper.pipeline()?,
        })
    }
}

/// Which sections train and which validate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitConfig {
    /// The reference's: the first 90% train (0-26 of 30), the rest validate.
    Reference,
    /// The first `ceil(train_fraction * n)` train.
    Fraction {
        /// In (0, 1].
        train_fraction: f64,
    },
    /// Contiguous fold `fold` of `k` validates.
    KFold {
        /// Folds.
        k: usize,
        /// The validating fold (from 0).
        fold: usize,
    },
    /// Explicit section lists.
    Sections {
        /// Training sections.
        train: Vec<usize>,
        /// Validation sections.
        validation: Vec<usize>,
    },
}

impl SplitConfig {
    /// The split of `n` sections.
    pub fn resolve(&self, n: usize) -> Result<Split> {
        Ok(match self {
            SplitConfig::Reference => Split::reference(n)?,
            SplitConfig::Fraction { train_fraction } => Split::fraction(n, *train_fraction)?,
            SplitConfig::KFold { k, fold } => Split::k_fold(n, *k, *fold)?,
            SplitConfig::Sections { train, validation } => {
                if train.is_empty() {
                    return Err(TrainError::Config("no training section".into()));
                }
                if let Some(bad) = train.iter().chain(validation).find(|&&i| i >= n) {
                    return Err(TrainError::Config(format!(
                        "section {bad} does not exist (the stack has {n})"
                    )));
                }
                if let Some(both) = train.iter().find(|i| validation.contains(i)) {
                    return Err(TrainError::Config(format!(
                        "section {both} is both a training and a validation section"
                    )));
                }
                Split {
                    train: train.clone(),
                    validation: validation.clone(),
                }
            }
        })
    }
}

/// Every setting of a training run; saved as `config.json` in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The recipe this configuration started from (informational).
    pub recipe: String,
    /// The network.
    pub model: UNetConfig,
    /// Epochs to train.
    pub epochs: usize,
    /// Tiles per batch.
    pub batch_size: usize,
    /// Side of the network's input tile (for valid padding the label tile is smaller).
    pub tile_size: usize,
    /// Tiles drawn per training section per epoch.
    pub crops_per_section: usize,
    /// Optimizer and base learning rate.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Clip the global gradient norm to this (none when `null`).
    pub grad_clip: Option<f64>,
    /// The loss.
    pub loss: Loss,
    /// Per-pixel loss weights (`null`: weight 1 everywhere).
    pub weights: Option<WeightsConfig>,
    /// Augmentation of training tiles.
    pub augmentation: AugmentationConfig,
    /// Training and validation sections.
    pub split: SplitConfig,
    /// Seed of the initialisation and of the data stream.
    pub seed: u64,
    /// Validate every this many epochs (and always after the last).
    pub validate_every: usize,
    /// Batches the loader prepares ahead.
    pub prefetch: usize,
    /// After the last epoch, fit a decision calibration of `best` on the training sections
    /// ([`crate::calibrate`]) so that `P(cell) = 0.5` is its best decision point.
    #[serde(default = "calibrate_by_default")]
    pub calibrate: bool,
    /// Start from this checkpoint's weights (fine-tuning) instead of the He initialisation; a
    /// fresh optimizer. When only the class count differs, the classifier starts fresh.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// A torchvision ResNet state dict (safetensors) to start a ResNet encoder from
    /// ([`crate::resnet::load_torchvision_encoder`]); the decoder keeps its He initialisation.
    #[serde(default)]
    pub encoder_weights: Option<PathBuf>,
    /// Also write the epoch scalars as TensorBoard event files under `run_dir/tb/`.
    #[serde(default)]
    pub tensorboard: bool,
    /// Validation sections predicted per forward pass (the reference's `--test-batch-size`);
    /// only memory and speed change, not the scores.
    #[serde(default = "one")]
    pub validation_batch_size: usize,
    /// The format of the training forward and backward passes ([`crate::precision`]); the
    /// master weights, batch normalisation, the loss, validation and the saved checkpoints stay
    /// in f32.
    #[serde(default)]
    pub precision: Precision,
    /// Dynamic loss scaling, used when `precision` is f16.
    #[serde(default)]
    pub loss_scale: LossScaleConfig,
    /// Where the run writes its files.
    pub run_dir: PathBuf,
}

/// The settings of f16 training's [`LossScaler`] (PyTorch's `GradScaler` defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaleConfig {
    /// The scale of the first step.
    pub initial: f64,
    /// Clean steps in a row after which the scale doubles.
    pub growth_interval: usize,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            initial: LossScaler::DEFAULT_INITIAL_SCALE,
            growth_interval: LossScaler::DEFAULT_GROWTH_INTERVAL,
        }
    }
}

impl LossScaleConfig {
    /// A scaler with these settings.
    pub fn scaler(&self) -> LossScaler {
        LossScaler::new(self.initial, self.growth_interval)
    }
}

fn calibrate_by_default() -> bool {
    true
}

fn one() -> usize {
    1
}

impl TrainConfig {
    /// The configuration of a recipe, writing to `runs/<recipe>`.
    pub fn recipe(recipe: Recipe) -> Self {
        match recipe {
            Recipe::Default => TrainConfig {
                recipe: "default".into(),
                model: UNetConfig::small(),
                // About an hour on 2 idle cores: an epoch (27 steps of 4 x 256^2 and the
                // validation) took 34 s with the fast kernels (docs/RESULTS.md).
                epochs: 100,
                batch_size: 4,
                tile_size: 256,
                crops_per_section: 4,
                optimizer: OptimizerConfig::Adam {
                    lr: 1e-3,
                    weight_decay: 0.0,
                },
                schedule: ScheduleConfig::Cosine { min_lr: 1e-5 },
                grad_clip: Some(5.0),
                loss: Loss::CrossEntropy,
                // Border term on, no class balancing: balanced classes make the net predict too
                // much membrane at P = 0.5 (see docs/TRAINING.md).
                weights: Some(WeightsConfig {
                    class_weight: ClassWeightConfig::None,
                    ..WeightsConfig::paper()
                }),
                augmentation: AugmentationConfig::Reference,
                split: SplitConfig::Reference,
                seed: 2015,
                validate_every: 1,
                prefetch: 2,
                calibrate: true,
                init: None,
                encoder_weights: None,
                tensorboard: false,
                validation_batch_size: 1,
                precision: Precision::F32,
                loss_scale: LossScaleConfig::default(),
                run_dir: PathBuf::from("runs/default"),
            },
            Recipe::Reference => TrainConfig {
                recipe: "reference".into(),
                model: UNetConfig::reference(),
                epochs: 50,
                batch_size: 3,
                tile_size: 572,
                crops_per_section: 1,
                optimizer: OptimizerConfig::Adam {
                    lr: 5e-4,
                    weight_decay: 0.0,
                },
                schedule: ScheduleConfig::Constant,
                grad_clip: None,
                loss: Loss::CrossEntropy,
                weights: Some(WeightsConfig::paper()),
                augmentation: AugmentationConfig::Reference,
                split: SplitConfig::Reference,
                seed: 2015,
                validate_every: 1,
                prefetch: 2,
                calibrate: true,
                init: None,
                encoder_weights: None,
                tensorboard: false,
                validation_batch_size: 1,
                precision: Precision::F32,
                loss_scale: LossScaleConfig::default(),
                run_dir: PathBuf::from("runs/reference"),
            },
            Recipe::Paper => TrainConfig {
                recipe: "paper".into(),
                model: UNetConfig::paper(),
                epochs: 50,
                batch_size: 1,
                tile_size: 572,
                crops_per_section: 1,
                optimizer: OptimizerConfig::Sgd {
                    lr: 1e-2,
                    momentum: 0.99,
                    nesterov: false,
                    weight_decay: 0.0,
                },
                schedule: ScheduleConfig::Constant,
                grad_clip: None,
                loss: Loss::CrossEntropy,
                weights: Some(WeightsConfig::paper()),
                augmentation: AugmentationConfig::Paper,
                split: SplitConfig::Reference,
                seed: 2015,
                validate_every: 1,
                prefetch: 2,
                calibrate: true,
                init: None,
                encoder_weights: None,
                tensorboard: false,
                validation_batch_size: 1,
                precision: Precision::F32,
                loss_scale: LossScaleConfig::default(),
                run_dir: PathBuf::from("runs/paper"),
            },
        }
    }

    /// The model of a named preset with this configuration's other settings.
    pub fn with_preset(mut self, preset: Preset) -> Self {
        self.model = preset.config();
        self
    }

    /// Checks the settings that do not need the data.
    pub fn validate(&self) -> Result<()> {
        self.model.validate().map_err(crate::Error::from)?;
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 || self.batch_size == 0 || self.crops_per_section == 0 {
            return bad(format!(
                "epochs ({}), batch size ({}) and crops per section ({}) must be positive",
                self.epochs, self.batch_size, self.crops_per_section
            ));
        }
        if self.validate_every == 0 || self.validation_batch_size == 0 {
            return bad(format!(
                "validate_every ({}) and validation_batch_size ({}) must be positive",
                self.validate_every, self.validation_batch_size
            ));
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("learning rate {lr} must be finite and > 0"));
        }
        let scale = self.loss_scale;
        if !(scale.initial.is_finite() && scale.initial > 0.0) || scale.growth_interval == 0 {
            return bad(format!(
                "loss_scale: initial ({}) must be finite and > 0 and growth_interval ({}) >= 1",
                scale.initial, scale.growth_interval
            ));
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("grad_clip {c} must be finite and > 0"));
            }
        }
        self.schedule.schedule(1, 1).validate()?;
        if let Some(w) = &self.weights {
            w.params()
                .validate()
                .map_err(|e| TrainError::Config(format!("weights: {e}")))?;
        }
        crate::size::checked_output_size(&self.model, self.tile_size, "tile size")
            .map_err(crate::Error::from)?;
        if self.calibrate && self.model.n_classes != 2 {
            return bad(format!(
                "calibrate needs a two-class net, the model has {} classes (set \"calibrate\": false)",
                self.model.n_classes
            ));
        }
        Ok(())
    }

    /// Reads a configuration from a JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Json {
            path: path.to_path_buf(),
            reason: format!("not a training configuration: {e}"),
        })
    }

    /// The configuration as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a TrainConfig always serialises")
    }
}

/// Validation scores of one epoch (on the full validation sections).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationScores {
    /// The training loss (with the run's weights) over the validation sections.
    pub loss: f64,
    /// Pixel accuracy at P(cell) > 0.5, mean over sections.
    pub pixel_accuracy: f64,
    /// Mean over the two classes of IoU, mean over sections.
    pub mean_iou: f64,
    /// Dice of the cell class.
    pub dice: f64,
    /// ISBI V-Rand (thinned, best threshold).
    pub v_rand: f64,
    /// ISBI V-Info (thinned, best threshold).
    pub v_info: f64,
    /// The pixel scores at the decision point fitted on a few training sections, when the run
    /// calibrates: what `best` is chosen by, since the trained net's own P = 0.5 drifts as
    /// the border weights push it towards membrane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<CalibratedScores>,
}

/// Validation pixel scores at a decision threshold fitted on training sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedScores {
    /// The `P(cell)` threshold with the best mean IoU on the training sections used.
    pub threshold: f64,
    /// Pixel accuracy on the validation sections at that threshold.
    pub pixel_accuracy: f64,
    /// Mean IoU on the validation sections at that threshold.
    pub mean_iou: f64,
}

impl ValidationScores {
    /// What `best` is chosen by: the calibrated mean IoU when there is one, else the mean IoU
    /// at P = 0.5.
    pub fn selection_iou(&self) -> f64 {
        self.calibrated
            .as_ref()
            .map_or(self.mean_iou, |c| c.mean_iou)
    }
}

/// The training sections whose predictions fit the per-epoch decision point: about five,
/// evenly spread (all of them when there are at most five).
fn calibration_sections(train: &[usize]) -> Vec<usize> {
    train
        .iter()
        .copied()
        .step_by(train.len().div_ceil(5).max(1))
        .collect()
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Optimizer steps so far in the run.
    pub global_step: usize,
    /// Mean training loss over the epoch's samples.
    pub train_loss: f64,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Validation scores, when validated this epoch.
    pub validation: Option<ValidationScores>,
    /// Whether this epoch became the `best` checkpoint.
    pub best: bool,
    /// Wall time of the epoch's training steps, in seconds.
    pub train_seconds: f64,
    /// Wall time of the validation, in seconds.
    pub validation_seconds: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
    /// f16 training: the loss scale at the epoch's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// f16 training: steps of the epoch skipped because their gradients overflowed.
    #[serde(default)]
    pub skipped_steps: usize,
}

/// Where a run is in its data stream; kept in the `last` checkpoint to resume exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Steps done in the current (unfinished) epoch.
    pub step_in_epoch: usize,
    /// Steps done in the run.
    pub global_step: usize,
    /// Sum of the sample losses of the unfinished epoch.
    pub partial_loss_sum: f64,
    /// Samples of the unfinished epoch.
    pub partial_samples: usize,
    /// Training seconds of the unfinished epoch.
    pub partial_seconds: f64,
    /// Best validation mean IoU so far ([`ValidationScores::selection_iou`]).
    pub best_iou: Option<f64>,
    /// Its epoch (1-based).
    pub best_epoch: Option<usize>,
    /// f16 training's loss scaler (its scale carries over a resume).
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
    /// Steps of the unfinished epoch skipped by the loss scaler.
    #[serde(default)]
    pub partial_skipped: usize,
    /// The training stacks' [`unet_data::pair_sha256`]: a resume on other sections is refused
    /// (absent in runs written before it was kept).
    #[serde(default)]
    pub data_sha256: Option<String>,
}

/// How to run: the device, resume or not, and the stop flag (set it from a Ctrl-C handler; the
/// trainer finishes the current step, saves `last` and returns).
#[derive(Debug, Clone)]
pub struct TrainControl {
    /// Where the network runs.
    pub device: Device,
    /// Continue the run in `run_dir` from its `last` checkpoint.
    pub resume: bool,
    /// Set to stop cleanly.
    pub stop: Arc<AtomicBool>,
}

impl Default for TrainControl {
    fn default() -> Self {
        TrainControl {
            device: Device::Cpu,
            resume: false,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What the trainer reports as it goes (for progress bars).
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent<'a> {
    /// The run starts (or resumes).
    Start {
        /// The configuration.
        config: &'a TrainConfig,
        /// Steps per epoch.
        steps_per_epoch: usize,
        /// Epochs already done (resume).
        epochs_done: usize,
        /// Trainable parameters.
        parameters: usize,
        /// Training / validation sections.
        sections: (usize, usize),
    },
    /// A new run started from another checkpoint's weights (`init`).
    Initialised {
        /// The checkpoint.
        from: &'a Path,
        /// The epochs that checkpoint had trained.
        epochs: usize,
        /// Tensors that kept their fresh initialisation (the classifier, when the class
        /// counts differ).
        reinitialised: &'a [String],
    },
    /// A new run's ResNet encoder was loaded from a torchvision state dict.
    EncoderLoaded {
        /// The file.
        from: &'a Path,
        /// Tensors loaded.
        tensors: usize,
    },
    /// An epoch starts (1-based), at step `first_step` (0 unless resumed mid-epoch).
    EpochStart {
        /// The epoch.
        epoch: usize,
        /// Steps in the epoch.
        steps: usize,
        /// The first step to run.
        first_step: usize,
    },
    /// A step finished.
    Step {
        /// The epoch (1-based).
        epoch: usize,
        /// The step within the epoch (1-based).
        step: usize,
        /// The batch loss.
        loss: f64,
        /// The learning rate used.
        lr: f64,
        /// Samples per second over this step (including any wait for data).
        samples_per_second: f64,
    },
    /// Validation starts.
    Validating {
        /// The epoch (1-based).
        epoch: usize,
    },
    /// An epoch finished and was logged.
    EpochEnd(&'a EpochRecord),
    /// All epochs are done; the decision calibration of `best` is being fitted.
    Calibrating {
        /// Training sections it is fitted on.
        sections: usize,
    },
    /// `best` is calibrated (now, or by an earlier call of a resumed run).
    Calibrated(&'a Calibration),
    /// The stop flag was seen: `last` was saved after this step.
    Stopped {
        /// The epoch (1-based).
        epoch: usize,
        /// Steps done in it.
        step: usize,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Stopped by the stop flag before the last epoch finished.
    pub interrupted: bool,
    /// The records of the epochs run in this call.
    pub records: Vec<EpochRecord>,
    /// Best validation mean IoU and its epoch.
    pub best: Option<(f64, usize)>,
    /// The decision calibration of `best` (when the run finished and calibrates).
    pub calibration: Option<Calibration>,
}

/// The run's file names.
pub mod files {
    /// The configuration.
    pub const CONFIG: &str = "config.json";
    /// The epoch log.
    pub const LOG: &str = "log.jsonl";
    /// The latest checkpoint's weights.
    pub const LAST: &str = "last.safetensors";
    /// The best checkpoint's weights.
    pub const BEST: &str = "best.safetensors";
    /// The directory of the TensorBoard event files.
    pub const TENSORBOARD: &str = "tb";
}

/// Training sections and validation data held in memory.
struct Validation {
    /// Normalised sections, each `[1, 1, h, w]`.
    images: Vec<Tensor>,
    /// Labels 0/255, all sections.
    labels: Vec<u8>,
    /// Class ids `[1, h, w]` u32.
    targets: Vec<Tensor>,
    /// Loss weights `[1, h, w]`, if the run uses weights.
    weights: Vec<Option<Tensor>>,
    height: usize,
    width: usize,
}

pub(crate) fn normalised_section(page: &[u8], stats: GreyStats) -> Vec<f32> {
    let (mean, std) = (stats.mean as f32, stats.std as f32);
    page.iter()
        .map(|&v| (f32::from(v) / 255.0 - mean) / std)
        .collect()
}

impl Validation {
    fn new(
        images: &Stack<u8>,
        labels: &Stack<u8>,
        sections: &[usize],
        stats: GreyStats,
        weights: Option<&WeightsConfig>,
        device: &Device,
    ) -> Result<Self> {
        let (h, w) = (images.height(), images.width());
        let params = weights.map(|w| w.params().validate()).transpose();
        let params = params.map_err(|e| TrainError::Config(format!("weights: {e}")))?;
        let mut v = Validation {
            images: Vec::new(),
            labels: Vec::new(),
            targets: Vec::new(),
            weights: Vec::new(),
            height: h,
            width: w,
        };
        for &s in sections {
            let image = normalised_section(images.page(s), stats);
            v.images
                .push(Tensor::from_vec(image, (1, 1, h, w), device)?);
            let label = labels.page(s);
            v.labels.extend_from_slice(label);
            let ids: Vec<u32> = label.iter().map(|&l| u32::from(l > 0)).collect();
            v.targets.push(Tensor::from_vec(ids, (1, h, w), device)?);
            v.weights.push(match &params {
                Some(p) => {
                    let map = p
                        .weight_map(label, h, w)
                        .map_err(|e| TrainError::Config(format!("weights: {e}")))?;
                    Some(Tensor::from_vec(map, (1, h, w), device)?)
                }
                None => None,
            });
        }
        Ok(v)
    }
}

/// P(cell) (softmax channel 1) of logits `[1, C, h, w]`, as a flat vector.
fn cell_probability(logits: &Tensor) -> Result<Vec<f32>> {
    let p = candle_nn::ops::softmax(logits, 1)?.narrow(1, 1, 1)?;
    Ok(p.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Predicts and scores the validation sections: (loss, P(cell) of all sections).
/// Predicts the sections `batch` at a time; the loss is still averaged per section.
fn predict_validation(
    model: &UNet,
    v: &Validation,
    loss: Loss,
    batch: usize,
) -> Result<(f64, Vec<f32>)> {
    let mut total = 0.0;
    let mut probs = Vec::with_capacity(v.labels.len());
    for (first, images) in v.images.chunks(batch.max(1)).enumerate() {
        let logits = predict_whole_logits(model, &Tensor::cat(images, 0)?)?;
        for i in 0..images.len() {
            let k = first * batch.max(1) + i;
            let one = logits.narrow(0, i, 1)?;
            let value = loss.compute(&one, &v.targets[k], v.weights[k].as_ref())?;
            total += value.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            probs.extend(cell_probability(&one)?);
        }
    }
    Ok((total / v.images.len().max(1) as f64, probs))
}

fn validation_options() -> ScoreOptions {
    ScoreOptions {
        isbi: IsbiOptions {
            unthinned: false,
            ..IsbiOptions::default()
        },
        ..ScoreOptions::default()
    }
}

/// Scores the validation sections; with `calibration` (some training sections), also at the
/// decision threshold that is best on those.
fn validate(
    model: &UNet,
    v: &Validation,
    loss: Loss,
    batch: usize,
    calibration: Option<&Validation>,
) -> Result<ValidationScores> {
    let (loss, probs) = predict_validation(model, v, loss, batch)?;
    let (pages, h, w) = (v.images.len(), v.height, v.width);
    let report = score_stack(&probs, &v.labels, pages, h, w, &validation_options())?;
    let calibrated = match calibration {
        Some(c) => {
            // The same fit as the final calibration, on a few training sections.
            let margins = crate::calibrate::section_margins(model, &c.images)?;
            let shape = (c.images.len(), h, w);
            let best = crate::calibrate::fit_margin_threshold(&margins, &c.labels, shape)?;
            // P(cell) > sigmoid(t) exactly where the margin is > t.
            let threshold = 1.0 / (1.0 + (-best.threshold).exp());
            let at = sweep_decision_thresholds(&probs, &v.labels, pages, h, w, &[threshold])?;
            Some(CalibratedScores {
                threshold,
                pixel_accuracy: at[0].pixel_accuracy,
                mean_iou: at[0].mean_iou,
            })
        }
        None => None,
    };
    Ok(ValidationScores {
        loss,
        pixel_accuracy: report.pixel_accuracy,
        mean_iou: report.mean_iou,
        dice: report.dice,
        v_rand: report.v_rand,
        v_info: report.v_info,
        calibrated,
    })
}

/// The epoch's scalars, step = epoch.
fn write_scalars(writer: &mut EventWriter, record: &EpochRecord) -> Result<()> {
    let step = record.epoch as i64;
    let mut scalars = vec![
        ("train/loss", record.train_loss),
        ("train/lr", record.lr),
        ("train/samples_per_second", record.samples_per_second),
    ];
    if let Some(scale) = record.loss_scale {
        scalars.extend([
            ("train/loss_scale", scale),
            ("train/skipped_steps", record.skipped_steps as f64),
        ]);
    }
    if let Some(v) = &record.validation {
        scalars.extend([
            ("val/loss", v.loss),
            ("val/pixel_accuracy", v.pixel_accuracy),
            ("val/mean_iou", v.mean_iou),
            ("val/dice", v.dice),
            ("val/v_rand", v.v_rand),
            ("val/v_info", v.v_info),
        ]);
        if let Some(c) = &v.calibrated {
            scalars.extend([
                ("val/calibrated_threshold", c.threshold),
                ("val/calibrated_pixel_accuracy", c.pixel_accuracy),
                ("val/calibrated_mean_iou", c.mean_iou),
            ]);
        }
    }
    for (tag, value) in scalars {
        writer.write_scalar(tag, step, value as f32)?;
    }
    writer.flush()?;
    Ok(())
}

fn write_json_atomically(path: &Path, text: &str) -> Result<()> {
    unet_data::write_atomically(path, text.as_bytes())?;
    Ok(())
}

fn append_log(path: &Path, record: &EpochRecord) -> Result<()> {
    let line = serde_json::to_string(record).expect("a record always serialises");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))?;
    writeln!(file, "{line}")
        .and_then(|_| file.sync_data())
        .map_err(io_error(path))
}

/// The metrics stored with a checkpoint.
fn checkpoint_metrics(
    config: &TrainConfig,
    state: &TrainState,
    stats: GreyStats,
    record: Option<&EpochRecord>,
) -> serde_json::Value {
    serde_json::json!({
        "normalisation": { "mean": stats.mean, "std": stats.std },
        "state": state,
        "record": record,
        "train_config": config,
    })
}

/// The grey-value normalisation recorded in a checkpoint's sidecar.
pub fn checkpoint_normalisation(weights: impl AsRef<Path>) -> Result<GreyStats> {
    let weights = weights.as_ref();
    let meta = read_checkpoint_meta(weights)?;
    let n = &meta.metrics["normalisation"];
    match (n["mean"].as_f64(), n["std"].as_f64()) {
        (Some(mean), Some(std)) if std > 0.0 => Ok(GreyStats { mean, std }),
        _ => Err(TrainError::Json {
            path: crate::checkpoint::sidecar_path(weights),
            reason: "no grey-value normalisation (metrics.normalisation.mean / std) recorded"
                .into(),
        }),
    }
}

/// The net of the checkpoint at `checkpoint` (weights file with its sidecar) on `device`, with
/// its sidecar and the grey-value normalisation it was trained with.
pub fn model_from_checkpoint(
    checkpoint: &Path,
    device: &Device,
) -> Result<(UNet, crate::CheckpointMeta, GreyStats)> {
    let meta = read_checkpoint_meta(checkpoint)?;
    let stats = checkpoint_normalisation(checkpoint)?;
    let varmap = VarMap::new();
    let model = UNet::new(
        &meta.config,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    load_checkpoint(checkpoint, &model)?;
    Ok((model, meta, stats))
}

/// Trains as `config` says on the 8-bit `images` and their 0/255 `labels` (e.g. ISBI's
/// `train-volume.tif` and `train-labels.tif`), writing the run to `config.run_dir`.
///
/// With `control.resume`, continues the run in `config.run_dir` from its `last` checkpoint
/// (weights, optimizer state, position in the data stream); the saved `config.json` must match
/// `config` except for `epochs`, which may grow. Without it, refuses a directory that already
/// holds a run. Returns when all epochs are done or when `control.stop` was set (after saving
/// `last`).
pub fn train(
    config: &TrainConfig,
    images: &Stack<u8>,
    labels: &Stack<u8>,
    control: &TrainControl,
    observer: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<TrainOutcome> {
    config.validate()?;
    let run_dir = config.run_dir.clone();
    let split = config.split.resolve(images.pages())?;
    if split.validation.is_empty() {
        return Err(TrainError::Config(format!(
            "the split leaves no validation section: all {} sections train (a lower train \
             fraction leaves some to validate)",
            split.train.len()
        )));
    }
    let device = &control.device;
    config.precision.check_device(device)?;
    let model = UNet::seeded(&config.model, config.seed, device)?;
    let mut optimizer = config.optimizer.build(&model)?;

    let input = config.tile_size;
    let (output, _) = model.output_size(input, input)?;
    let train_set = SectionSet::from_stacks(images, labels, &split.train)?;
    let stats = train_set.stats();
    let loader_config = LoaderConfig {
        input_size: input,
        output_size: output,
        batch_size: config.batch_size,
        samples_per_epoch: split.train.len() * config.crops_per_section,
        seed: config.seed,
        weights: config.weights.map(|w| w.params()),
        normalisation: Some(stats),
        prefetch: config.prefetch,
        threads: 0,
    };
    let steps_per_epoch = loader_config.batches_per_epoch();
    let loader = Loader::new(train_set, &config.augmentation.pipeline()?, loader_config)?;
    let schedule = config
        .schedule
        .schedule(config.epochs * steps_per_epoch, steps_per_epoch);
    let base_lr = config.optimizer.lr();

    let last_path = run_dir.join(files::LAST);
    let best_path = run_dir.join(files::BEST);
    let config_path = run_dir.join(files::CONFIG);
    let log_path = run_dir.join(files::LOG);
    let data_sha256 = unet_data::pair_sha256(images, labels);
    let mut state = if control.resume {
        resume_state(config, &run_dir, &data_sha256, &model, optimizer.as_mut())?
    } else {
        if config_path.exists() || last_path.exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run; resume it (--resume) or choose another run directory",
                run_dir.display()
            )));
        }
        TrainState {
            data_sha256: Some(data_sha256),
            ..TrainState::default()
        }
    };
    if config.precision.needs_loss_scaling() && state.loss_scaler.is_none() {
        state.loss_scaler = Some(config.loss_scale.scaler());
    }
    // Training steps compute in the configured precision; validation, calibration and the
    // checkpoints use the f32 master weights through `model` (the two share their tensors).
    let train_model = model.clone().with_precision(config.precision);
    // Fine-tuning starts from another checkpoint's weights (not on resume: `last` has them).
    let init = match &config.init {
        Some(path) if !control.resume => Some((
            path,
            // Its errors name the checkpoint's files.
            load_checkpoint_for_fine_tuning(path, &model)?,
        )),
        _ => None,
    };
    let encoder_tensors = match &config.encoder_weights {
        Some(path) if !control.resume => {
            Some((path, crate::resnet::load_torchvision_encoder(path, &model)?))
        }
        _ => None,
    };
    std::fs::create_dir_all(&run_dir).map_err(io_error(&run_dir))?;
    write_json_atomically(&config_path, &config.to_json())?;
    let mut tensorboard = match config.tensorboard {
        true => Some(EventWriter::create(run_dir.join(files::TENSORBOARD))?),
        false => None,
    };

    let validation = Validation::new(
        images,
        labels,
        &split.validation,
        stats,
        config.weights.as_ref(),
        device,
    )?;
    let calibration_set = match config.calibrate {
        true => Some(Validation::new(
            images,
            labels,
            &calibration_sections(&split.train),
            stats,
            None,
            device,
        )?),
        false => None,
    };
    observer(TrainEvent::Start {
        config,
        steps_per_epoch,
        epochs_done: state.epochs_done,
        parameters: model.parameter_count(),
        sections: (split.train.len(), split.validation.len()),
    });
    if let Some((from, tensors)) = encoder_tensors {
        observer(TrainEvent::EncoderLoaded {
            from: from.as_path(),
            tensors,
        });
    }
    if let Some((from, (meta, reinitialised))) = &init {
        observer(TrainEvent::Initialised {
            from: from.as_path(),
            epochs: meta.epoch,
            reinitialised,
        });
    }

    let mut records = Vec::new();
    let stop = &control.stop;
    let save_last = |state: &TrainState,
                     record: Option<&EpochRecord>,
                     optimizer: &dyn Optimizer|
     -> Result<()> {
        save_checkpoint(
            &last_path,
            &model,
            state.epochs_done,
            checkpoint_metrics(config, state, stats, record),
            Some(optimizer),
        )?;
        Ok(())
    };
    let mut lr = schedule.lr(base_lr, state.global_step);
    while state.epochs_done < config.epochs {
        let epoch = state.epochs_done + 1;
        let first = state.step_in_epoch;
        if stop.load(Ordering::SeqCst) {
            save_last(&state, records.last(), optimizer.as_ref())?;
            observer(TrainEvent::Stopped { epoch, step: first });
            return Ok(outcome(&run_dir, &state, true, records));
        }
        observer(TrainEvent::EpochStart {
            epoch,
            steps: steps_per_epoch,
            first_step: first,
        });
        let mut step_clock = Instant::now();
        for batch in loader.epoch(epoch - 1, first) {
            let batch = batch?;
            lr = schedule.lr(base_lr, state.global_step);
            optimizer.set_learning_rate(lr);
            let (n, si, so) = (batch.size, batch.input_size, batch.output_size);
            let x = Tensor::from_vec(batch.images, (n, 1, si, si), device)?;
            let ids: Vec<u32> = batch.labels.iter().map(|&l| u32::from(l)).collect();
            let y = Tensor::from_vec(ids, (n, so, so), device)?;
            let w = match config.weights {
                Some(_) => Some(Tensor::from_vec(batch.weights, (n, so, so), device)?),
                None => None,
            };
            let loss_of = |logits: &Tensor| config.loss.compute(logits, &y, w.as_ref());
            // The direct step where it applies (no loss scaling there: it is f32 only), the
            // same loss and gradients as autograd's, faster.
            let direct = match state.loss_scaler {
                Some(_) => None,
                None => train_model.direct_train_step(&x, loss_of)?,
            };
            let (loss, direct_grads) = match direct {
                Some((loss, grads)) => (loss, Some(grads)),
                None => (loss_of(&train_model.forward_t(&x, true)?)?, None),
            };
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    step: state.step_in_epoch + 1,
                    value,
                    run_dir,
                });
            }
            let grads = match direct_grads {
                Some(grads) => Some(grads),
                None => backward_with(state.loss_scaler.as_mut(), &loss, model.parameters())?,
            };
            match grads {
                Some(mut grads) => {
                    if let Some(max_norm) = config.grad_clip {
                        clip_grad_norm(&mut grads, model.parameters(), max_norm)?;
                    }
                    optimizer.step(&grads)?;
                }
                None => state.partial_skipped += 1,
            }
            let seconds = step_clock.elapsed().as_secs_f64();
            step_clock = Instant::now();
            state.step_in_epoch += 1;
            state.global_step += 1;
            state.partial_loss_sum += value * n as f64;
            state.partial_samples += n;
            state.partial_seconds += seconds;
            observer(TrainEvent::Step {
                epoch,
                step: state.step_in_epoch,
                loss: value,
                lr,
                samples_per_second: n as f64 / seconds.max(1e-9),
            });
            if stop.load(Ordering::SeqCst) && state.step_in_epoch < steps_per_epoch {
                save_last(&state, records.last(), optimizer.as_ref())?;
                observer(TrainEvent::Stopped {
                    epoch,
                    step: state.step_in_epoch,
                });
                return Ok(outcome(&run_dir, &state, true, records));
            }
        }

        let train_seconds = state.partial_seconds;
        let validate_now = epoch % config.validate_every == 0 || epoch == config.epochs;
        let clock = Instant::now();
        let scores = if validate_now {
            observer(TrainEvent::Validating { epoch });
            Some(validate(
                &model,
                &validation,
                config.loss,
                config.validation_batch_size,
                calibration_set.as_ref(),
            )?)
        } else {
            None
        };
        let is_best = scores
            .as_ref()
            .is_some_and(|s| state.best_iou.is_none_or(|b| s.selection_iou() > b));
        let record = EpochRecord {
            epoch,
            global_step: state.global_step,
            train_loss: state.partial_loss_sum / state.partial_samples.max(1) as f64,
            lr,
            validation: scores,
            best: is_best,
            train_seconds,
            validation_seconds: clock.elapsed().as_secs_f64(),
            samples_per_second: state.partial_samples as f64 / train_seconds.max(1e-9),
            loss_scale: state.loss_scaler.map(|s| s.scale()),
            skipped_steps: state.partial_skipped,
        };
        state.epochs_done = epoch;
        state.step_in_epoch = 0;
        state.partial_loss_sum = 0.0;
        state.partial_samples = 0;
        state.partial_seconds = 0.0;
        state.partial_skipped = 0;
        if is_best {
            state.best_iou = record
                .validation
                .as_ref()
                .map(ValidationScores::selection_iou);
            state.best_epoch = Some(epoch);
            save_checkpoint(
                &best_path,
                &model,
                epoch,
                checkpoint_metrics(config, &state, stats, Some(&record)),
                None,
            )?;
        }
        save_last(&state, Some(&record), optimizer.as_ref())?;
        append_log(&log_path, &record)?;
        if let Some(writer) = tensorboard.as_mut() {
            write_scalars(writer, &record)?;
        }
        observer(TrainEvent::EpochEnd(&record));
        records.push(record);
    }
    let mut done = outcome(&run_dir, &state, false, records);
    if config.calibrate && best_path.exists() {
        let meta = read_checkpoint_meta(&best_path)?;
        done.calibration = Some(match Calibration::of(&meta) {
            // A resumed run whose best epoch was already calibrated.
            Some(calibration) => calibration,
            None => {
                observer(TrainEvent::Calibrating {
                    sections: split.train.len(),
                });
                calibrate_checkpoint(&best_path, images, labels, &split.train, device)?
            }
        });
        observer(TrainEvent::Calibrated(
            done.calibration.as_ref().expect("just set"),
        ));
    }
    Ok(done)
}

fn outcome(
    run_dir: &Path,
    state: &TrainState,
    interrupted: bool,
    records: Vec<EpochRecord>,
) -> TrainOutcome {
    TrainOutcome {
        run_dir: run_dir.to_path_buf(),
        epochs_done: state.epochs_done,
        interrupted,
        records,
        best: state.best_iou.zip(state.best_epoch),
        calibration: None,
    }
}

/// Loads `last` into the model and optimizer; returns the saved position in the data stream.
fn resume_state(
    config: &TrainConfig,
    run_dir: &Path,
    data_sha256: &str,
    model: &UNet,
    optimizer: &mut dyn Optimizer,
) -> Result<TrainState> {
    let fail = |reason: String| TrainError::Resume {
        run_dir: run_dir.to_path_buf(),
        reason,
    };
    let saved = TrainConfig::load(run_dir.join(files::CONFIG))?;
    let comparable = TrainConfig {
        epochs: config.epochs,
        run_dir: config.run_dir.clone(),
        ..saved
    };
    if &comparable != config {
        return Err(fail(format!(
            "its config.json differs from the settings given (only `epochs` may change); saved:\n{}",
            comparable.to_json()
        )));
    }
    let last = run_dir.join(files::LAST);
    if !last.exists() {
        return Err(fail(format!("no checkpoint {}", last.display())));
    }
    let meta = load_checkpoint(&last, model)?;
    if !load_optimizer_state(&last, optimizer)? {
        return Err(fail(format!("{} holds no optimizer state", last.display())));
    }
    let mut state: TrainState = serde_json::from_value(meta.metrics["state"].clone())
        .map_err(|e| fail(format!("the checkpoint holds no training state: {e}")))?;
    match &state.data_sha256 {
        Some(saved) if saved != data_sha256 => {
            return Err(fail(format!(
                "the training sections given are not the ones the run trained on (their \
                 pixels' SHA-256 {data_sha256}, the run's {saved}); give the run the \
                 sections it started with"
            )))
        }
        Some(_) => {}
        None => state.data_sha256 = Some(data_sha256.to_string()),
    }
    if state.epochs_done >= config.epochs {
        return Err(fail(format!(
            "all {} epochs are done; give more epochs to continue",
            state.epochs_done
        )));
    }
    Ok(state)
}

/// Scores of a checkpoint on validation sections.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The checkpoint's weights file.
    pub checkpoint: PathBuf,
    /// Epochs it was trained for.
    pub epoch: usize,
    /// The sections scored.
    pub sections: Vec<usize>,
    /// Scores on the full sections (pixel scores at P(cell) > 0.5; V-Rand, V-Info best over
    /// thresholds 0.0-0.9, thinned).
    pub full: ScoreReport,
    /// The same on the centre `size x size` of each section (the reference scored the centre
    /// 388 x 388 only), when asked for and smaller than the sections.
    pub centre: Option<(usize, ScoreReport)>,
    /// The checkpoint's decision calibration, if it has one (already folded into its weights).
    pub calibration: Option<Calibration>,
}

impl Evaluation {
    /// The evaluation as a JSON object: `checkpoint`, `epoch`, `sections`, `full` (the
    /// [`ScoreReport::to_json`] object), `centre` (`{"size", "scores"}` or null) and
    /// `calibration` (the [`Calibration`] or null).
    pub fn to_json(&self) -> String {
        let centre = match &self.centre {
            Some((size, r)) => format!("{{\"size\": {size}, \"scores\": {}}}", r.to_json()),
            None => "null".into(),
        };
        format!(
            "{{\"checkpoint\": {}, \"epoch\": {}, \"sections\": {}, \"full\": {}, \"centre\": {}, \"calibration\": {}}}",
            serde_json::to_string(&self.checkpoint.display().to_string())
                .expect("a string serialises"),
            self.epoch,
            serde_json::to_string(&self.sections).expect("a list serialises"),
            self.full.to_json(),
            centre,
            serde_json::to_string(&self.calibration).expect("a calibration serialises"),
        )
    }
}

/// The centre `size x size` of each `h x w` page of a stack.
fn centre_pages<T: Copy>(data: &[T], pages: usize, h: usize, w: usize, size: usize) -> Vec<T> {
    let (top, left) = ((h - size) / 2, (w - size) / 2);
    let mut out = Vec::with_capacity(pages * size * size);
    for p in 0..pages {
        for y in top..top + size {
            let row = p * h * w + y * w;
            out.extend_from_slice(&data[row + left..row + left + size]);
        }
    }
    out
}

/// Scores the checkpoint at `checkpoint` (weights file with its sidecar) on the given sections
/// of `images` / `labels`, predicting each full section; with `centre`, also on the centre
/// `centre x centre` of each section.
pub fn evaluate_checkpoint(
    checkpoint: impl AsRef<Path>,
    images: &Stack<u8>,
    labels: &Stack<u8>,
    sections: &[usize],
    device: &Device,
    centre: Option<usize>,
) -> Result<Evaluation> {
    let checkpoint = checkpoint.as_ref();
    if sections.is_empty() {
        return Err(TrainError::Config("no section to evaluate".into()));
    }
    let (model, meta, stats) = model_from_checkpoint(checkpoint, device)?;
    let validation = Validation::new(images, labels, sections, stats, None, device)?;
    let (_, probs) = predict_validation(&model, &validation, Loss::CrossEntropy, 1)?;
    let (h, w, n) = (images.height(), images.width(), sections.len());
    let options = ScoreOptions::default();
    let full = score_stack(&probs, &validation.labels, n, h, w, &options)?;
    let centre = match centre {
        Some(size) if size > 0 && size < h.min(w) => {
            let p = centre_pages(&probs, n, h, w, size);
            let l = centre_pages(&validation.labels, n, h, w, size);
            Some((size, score_stack(&p, &l, n, size, size, &options)?))
        }
        _ => None,
    };
    Ok(Evaluation {
        checkpoint: checkpoint.to_path_buf(),
        epoch: meta.epoch,
        sections: sections.to_vec(),
        full,
        centre,
        calibration: Calibration::of(&meta),
    })
}

/// Scores a run's `best` checkpoint (its `last` when it has no `best`) on the run's validation
/// sections, with the centre 388 x 388 too; writes `scores.json` in the run directory.
pub fn evaluate_run(
    run_dir: impl AsRef<Path>,
    images: &Stack<u8>,
    labels: &Stack<u8>,
    device: &Device,
) -> Result<Evaluation> {
    let run_dir = run_dir.as_ref();
    let config = TrainConfig::load(run_dir.join(files::CONFIG))?;
    let split = config.split.resolve(images.pages())?;
    let best = run_dir.join(files::BEST);
    let checkpoint = if best.exists() {
        best
    } else {
        run_dir.join(files::LAST)
    };
    let evaluation = evaluate_checkpoint(
        &checkpoint,
        images,
        labels,
        &split.validation,
        device,
        Some(388),
    )?;
    write_json_atomically(&run_dir.join("scores.json"), &evaluation.to_json())?;
    Ok(evaluation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_validate_and_round_trip() {
        for recipe in Recipe::ALL {
            let cfg = TrainConfig::recipe(recipe);
            cfg.validate().unwrap();
            let back: TrainConfig = serde_json::from_str(&cfg.to_json()).unwrap();
            assert_eq!(back, cfg);
            assert_eq!(recipe.name().parse::<Recipe>().unwrap(), recipe);
        }
        let reference = TrainConfig::recipe(Recipe::Reference);
        assert_eq!(reference.batch_size, 3);
        assert_eq!(reference.optimizer.lr(), 5e-4);
        assert!(matches!(
            TrainConfig::recipe(Recipe::Paper).optimizer,
            OptimizerConfig::Sgd { momentum, .. } if momentum == 0.99
        ));
        assert_eq!(
            TrainConfig::recipe(Recipe::Default).model.padding,
            crate::Padding::Same
        );
        assert!("fast".parse::<Recipe>().is_err());
    }

    #[test]
    fn bad_settings_are_errors() {
        let ok = TrainConfig::recipe(Recipe::Default);
        let cases = [
            TrainConfig {
                epochs: 0,
                ..ok.clone()
            },
            TrainConfig {
                tile_size: 250,
                ..ok.clone()
            },
            TrainConfig {
                optimizer: ok.optimizer.with_lr(f64::NAN),
                ..ok.clone()
            },
            TrainConfig {
                weights: Some(WeightsConfig {
                    sigma: 0.0,
                    ..WeightsConfig::paper()
                }),
                ..ok.clone()
            },
            TrainConfig {
                grad_clip: Some(-1.0),
                ..ok.clone()
            },
        ];
        for cfg in cases {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        let split = SplitConfig::Sections {
            train: vec![0, 1],
            validation: vec![1],
        };
        assert!(split.resolve(3).is_err());
        assert!(SplitConfig::Sections {
            train: vec![0],
            validation: vec![5]
        }
        .resolve(3)
        .is_err());
        assert_eq!(SplitConfig::Reference.resolve(30).unwrap().train.len(), 27);
    }

    #[test]
    fn about_five_evenly_spread_sections_fit_the_epoch_decision_point() {
        let train: Vec<usize> = (0..27).collect();
        assert_eq!(calibration_sections(&train), vec![0, 6, 12, 18, 24]);
        assert_eq!(calibration_sections(&[3, 4]), vec![3, 4]);
        assert!(calibration_sections(&[]).is_empty());
    }

    #[test]
    fn centre_pages_crops_each_page() {
        let data: Vec<u32> = (0..32).collect();
        assert_eq!(
            centre_pages(&data, 2, 4, 4, 2),
            vec![5, 6, 9, 10, 21, 22, 25, 26]
        );
    }
}
