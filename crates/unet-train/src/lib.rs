//! Training and evaluation of unet-rs U-Nets, in the manner of burn's `burn-train`: the model
//! gives a step ([`unet_model::UNet::train_step`]), this crate owns the loop.
//!
//! - [`TrainConfig`] and the named [`Recipe`]s (`default`, `reference`, `paper`): every setting
//!   of a run, saved as the run's `config.json`.
//! - [`loader`]: seeded, shuffled, augmented tiles of the training sections with their weight
//!   maps, prepared on a background thread.
//! - [`train`]: the loop over the run directory ([`run_dir`]: `log.jsonl`, `best` and `last`
//!   checkpoints, exact resume, a clean stop, a clear stop on a NaN loss).
//! - [`validation`]: whole-section scores every epoch; [`calibrate`]: the decision point of
//!   `best` fitted on the training sections; [`evaluate_run`] / [`evaluate_checkpoint`]: the
//!   scores of a run or a checkpoint; [`tensorboard`]: event files; [`RunSummary`]: a run
//!   directory at a glance; [`robustness`]: scores under the shifts of other microscopes.
//!
//! The input normalisation is the model's ([`unet_model::Normalisation`]): fitted on the
//! training sections, applied by the loader, validation and calibration, stored in every
//! checkpoint for prediction.

pub mod calibrate;
mod config;
mod error;
mod evaluate;
pub mod loader;
pub mod robustness;
pub mod run_dir;
mod summary;
pub mod tensorboard;
mod trainer;
pub mod validation;

pub use calibrate::{apply_calibration, calibrate_checkpoint, fit_calibration, Calibration};
pub use config::{
    LossScaleConfig, OptimizerConfig, Recipe, ScheduleConfig, SplitConfig, TrainConfig,
};
pub use error::{Error, Result};
pub use evaluate::{evaluate_checkpoint, evaluate_run, Evaluation};
pub use loader::{Batch, Loader, LoaderConfig, SectionSet};
pub use run_dir::{files, lock_holder, DataRecord, EpochRecord, RunLock, TrainState};
pub use summary::{RunState, RunSummary};
pub use trainer::{best_or_last, train, TrainControl, TrainEvent, TrainOutcome};
pub use validation::{CalibratedScores, ValidationScores};
