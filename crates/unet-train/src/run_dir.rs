//! The run directory: its files ([`files`]), the epoch log (`log.jsonl`, one [`EpochRecord`] a
//! line), the resume state kept in the `last` checkpoint ([`TrainState`]) and the metrics stored
//! with each checkpoint.
//!
//! A run directory holds:
//! - `config.json`: the [`TrainConfig`];
//! - `log.jsonl`: one [`EpochRecord`] per line;
//! - `last.safetensors` (+ `last.json` sidecar, `last.optim.safetensors`): the state after the
//!   latest completed step that was saved (every epoch end and on a stop), with the optimizer
//!   state and the position in the data stream, so a resumed run continues exactly;
//! - `best.safetensors` (+ `best.json`): the epoch with the highest validation mean IoU;
//! - `scores.json` after `unet evaluate`, `tb/` with TensorBoard event files when asked for.
//!
//! Checkpoint sidecars carry the model's input normalisation as a typed field
//! (`unet_model::CheckpointMeta::normalisation`), and under `metrics` the [`TrainState`]
//! (`state`), the epoch's record (`record`) and the [`TrainConfig`] (`train_config`).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use unet_model::{load_checkpoint, load_optimizer_state, LossScaler, Optimizer, UNet};

use crate::error::io_error;
use crate::validation::ValidationScores;
use crate::{Error, Result, TrainConfig};

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
    /// The evaluation's scores.
    pub const SCORES: &str = "scores.json";
}

/// Writes a JSON text to `path` atomically and durably.
pub(crate) fn write_json_atomically(path: &Path, text: &str) -> Result<()> {
    unet_data::write_atomically(path, text.as_bytes())?;
    Ok(())
}

/// Appends one record to the epoch log and flushes it to disk.
pub(crate) fn append_log(path: &Path, record: &EpochRecord) -> Result<()> {
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
pub(crate) fn checkpoint_metrics(
    config: &TrainConfig,
    state: &TrainState,
    record: Option<&EpochRecord>,
) -> serde_json::Value {
    serde_json::json!({
        "state": state,
        "record": record,
        "train_config": config,
    })
}

/// Loads `last` into the model and optimizer; returns the saved position in the data stream.
pub(crate) fn resume_state(
    config: &TrainConfig,
    run_dir: &Path,
    data_sha256: &str,
    model: &UNet,
    optimizer: &mut dyn Optimizer,
) -> Result<TrainState> {
    let fail = |reason: String| Error::Resume {
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
