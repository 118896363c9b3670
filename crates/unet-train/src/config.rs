//! The settings of a training run: [`TrainConfig`] and its parts, the named [`Recipe`]s, and
//! their checks. A run saves its configuration as `config.json`; the low crates' own types
//! (`unet_weights::WeightMapParams`, `unet_augment::Preset`, `unet_model::UNetConfig`) are its
//! fields, serialised by their `serde` features.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use unet_augment::Preset as AugmentPreset;
use unet_data::{LabelClasses, Split};
use unet_model::{
    Adam, AdamParams, Loss, LossScaler, LrSchedule, Normalisation, Optimizer, Precision, Preset,
    Sgd, SgdParams, UNet, UNetConfig,
};
use unet_weights::{ClassWeight, WeightMapParams};

use crate::error::io_error;
use crate::{Error, Result};

/// The named recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// Sized for a 2-core CPU (docs/TRAINING.md): the `small` net (same padding), Adam 1e-3 with
    /// cosine decay, 256 x 256 crops in batches of 4, the reference's augmentation, border weights.
    Default,
    /// The reference implementation's recipe with the border weights it meant to use: its net
    /// (valid padding, batch norm), Adam 5e-4, batch 3, 50 epochs, 572 -> 388 tiles, 27/3 split.
    Reference,
    /// The paper's: its net, SGD momentum 0.99, one 572 -> 388 tile per batch, its augmentation.
    Paper,
}

impl Recipe {
    /// All recipes.
    pub const ALL: [Recipe; 3] = [Recipe::Default, Recipe::Reference, Recipe::Paper];

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
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Recipe::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown recipe {s:?}; known: default, reference, paper"
                ))
            })
    }
}

/// The optimizer and its base learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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

    /// The optimizer over `model`'s parameters.
    pub fn build(&self, model: &UNet) -> unet_model::Result<Box<dyn Optimizer>> {
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
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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

/// Which sections train and which validate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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
                    return Err(Error::Config("no training section".into()));
                }
                if let Some(bad) = train.iter().chain(validation).find(|&&i| i >= n) {
                    return Err(Error::Config(format!(
                        "section {bad} does not exist (the stack has {n})"
                    )));
                }
                if let Some(both) = train.iter().find(|i| validation.contains(i)) {
                    return Err(Error::Config(format!(
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

/// Every setting of a training run; saved as `config.json` in the run directory. An unknown key
/// (a misspelt setting) is an error, not a silent default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The recipe this configuration started from (informational).
    pub recipe: String,
    /// The network.
    pub model: UNetConfig,
    /// Epochs to train.
    pub epochs: usize,
    /// Tiles per batch.
    pub batch_size: usize,
    /// Side of the network's input tile in pixels (for valid padding the label tile the net
    /// predicts is smaller); `tile_size` in the configurations of earlier versions.
    #[serde(alias = "tile_size")]
    pub input_tile: usize,
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
    /// Per-pixel loss weights w(x) (`null`: weight 1 everywhere); fields left out take
    /// [`WeightMapParams::default`]'s values (the paper's).
    pub weights: Option<WeightMapParams>,
    /// Augmentation of training tiles.
    pub augmentation: AugmentPreset,
    /// The input normalisation (`null`: the training sections' mean and standard deviation,
    /// [`Normalisation::Dataset`]); stored in every checkpoint for prediction.
    #[serde(default)]
    pub normalisation: Option<Normalisation>,
    /// How the label stack reads: the ISBI convention (binary, the default) or K class indices
    /// with an optional ignored value; set from the data, and checked against
    /// `model.n_classes`.
    #[serde(default)]
    pub labels: LabelClasses,
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
    /// ([`unet_model::resnet::load_torchvision_encoder`]); the decoder keeps its He initialisation.
    #[serde(default)]
    pub encoder_weights: Option<PathBuf>,
    /// Also write the epoch scalars as TensorBoard event files under `run_dir/tb/`.
    #[serde(default)]
    pub tensorboard: bool,
    /// Validation sections predicted per forward pass (the reference's `--test-batch-size`);
    /// only memory and speed change, not the scores.
    #[serde(default = "one")]
    pub validation_batch_size: usize,
    /// The format of the training forward and backward passes ([`unet_model::precision`]); the
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
#[serde(deny_unknown_fields)]
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
                // Sized for the 2 cores (timings in docs/RESULTS.md).
                epochs: 100,
                batch_size: 4,
                input_tile: 256,
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
                weights: Some(WeightMapParams {
                    class_weight: ClassWeight::None,
                    ..WeightMapParams::default()
                }),
                // Robust to other microscopes: each image standardised by its own statistics,
                // and the grey values and pixel sizes of other instruments in the augmentation
                // (chosen on held-out training sections, docs/RESULTS.md).
                augmentation: AugmentPreset::Robust,
                normalisation: Some(Normalisation::PerImage),
                labels: LabelClasses::Binary,
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
            // The full-width recipes share the default's bookkeeping settings.
            Recipe::Reference => TrainConfig {
                recipe: "reference".into(),
                model: UNetConfig::reference(),
                epochs: 50,
                batch_size: 3,
                input_tile: 572,
                crops_per_section: 1,
                optimizer: OptimizerConfig::Adam {
                    lr: 5e-4,
                    weight_decay: 0.0,
                },
                schedule: ScheduleConfig::Constant,
                grad_clip: None,
                weights: Some(WeightMapParams::default()),
                augmentation: AugmentPreset::Reference,
                normalisation: None,
                run_dir: PathBuf::from("runs/reference"),
                ..TrainConfig::recipe(Recipe::Default)
            },
            Recipe::Paper => TrainConfig {
                recipe: "paper".into(),
                model: UNetConfig::paper(),
                optimizer: OptimizerConfig::Sgd {
                    lr: 1e-2,
                    momentum: 0.99,
                    nesterov: false,
                    weight_decay: 0.0,
                },
                batch_size: 1,
                augmentation: AugmentPreset::Paper,
                run_dir: PathBuf::from("runs/paper"),
                ..TrainConfig::recipe(Recipe::Reference)
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
        self.model.validate()?;
        let bad = |m: String| Err(Error::Config(m));
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
            w.validate()?;
        }
        if let Some(n) = &self.normalisation {
            n.clone()
                .validated()?
                .check_channels(self.model.in_channels)?;
        }
        unet_model::size::checked_output_size(&self.model, self.input_tile, "input tile")?;
        if self.calibrate && self.model.n_classes != 2 {
            return bad(format!(
                "calibrate needs a two-class net, the model has {} classes (set \"calibrate\": false)",
                self.model.n_classes
            ));
        }
        if self.labels.n_classes() != self.model.n_classes {
            return bad(format!(
                "the labels have {} classes but the model has {} (\"model\": {{\"n_classes\": {}}})",
                self.labels.n_classes(),
                self.model.n_classes,
                self.labels.n_classes()
            ));
        }
        if self.calibrate && self.labels != LabelClasses::Binary {
            return bad(
                "calibrate fits P(cell) on binary labels; these labels are class indices (set \
                 \"calibrate\": false)"
                    .into(),
            );
        }
        if self.labels.ignores() && self.loss != Loss::CrossEntropy {
            return bad(format!(
                "the {:?} loss cannot leave out ignored pixels: with an ignore label, train with \
                 \"loss\": \"cross_entropy\"",
                self.loss
            ));
        }
        Ok(())
    }

    /// Reads a configuration from a JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            reason: format!("not a training configuration: {e}"),
        })
    }

    /// The configuration as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a TrainConfig always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_setting_is_an_error_naming_it() {
        let json = TrainConfig::recipe(Recipe::Default).to_json();
        for (from, to) in [
            ("\"epochs\"", "\"epoch\""),
            ("\"min_lr\"", "\"min_rate\""),
            ("\"class_weight\"", "\"class_weigth\""),
            ("\"base_width\"", "\"width\""),
        ] {
            let err = serde_json::from_str::<TrainConfig>(&json.replacen(from, to, 1))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("unknown field") && err.contains(&to[1..to.len() - 1]),
                "{err}"
            );
        }
    }

    #[test]
    fn configurations_of_earlier_versions_still_read() {
        // `tile_size` was the input tile's name, and weights had only three fields.
        let mut old: serde_json::Value =
            serde_json::from_str(&TrainConfig::recipe(Recipe::Default).to_json()).unwrap();
        let map = old.as_object_mut().unwrap();
        let tile = map.remove("input_tile").unwrap();
        map.insert("tile_size".into(), tile);
        map.insert(
            "weights".into(),
            serde_json::json!({"w0": 10.0, "sigma": 5.0, "class_weight": "none"}),
        );
        let back: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back, TrainConfig::recipe(Recipe::Default));
    }

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
            unet_model::Padding::Same
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
                input_tile: 250,
                ..ok.clone()
            },
            TrainConfig {
                optimizer: ok.optimizer.with_lr(f64::NAN),
                ..ok.clone()
            },
            TrainConfig {
                weights: Some(WeightMapParams {
                    sigma: 0.0,
                    ..WeightMapParams::default()
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
        let err = TrainConfig {
            input_tile: 250,
            ..ok.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("input tile 250"), "{err}");
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
}
