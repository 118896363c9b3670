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
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use unet_data::{DataSource, LabelledSections};
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
    /// Where the run's sections came from ([`super::DataRecord`]).
    pub const DATA: &str = "data.json";
    /// Held while a process trains in the directory ([`super::RunLock`]): its process id.
    pub const LOCK: &str = "train.lock";
}

/// Where a run's training sections came from, kept as `data.json`: the source as given (the
/// `--data` directory or the `--images` / `--labels` pair), the same made absolute, and the
/// stacks' [`unet_data::pair_sha256`]. `unet train --resume`, `unet evaluate --run` and
/// `unet calibrate --run` read the sections from it when no data flag is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord {
    /// The source as it was given.
    pub given: DataSource,
    /// The source with absolute paths.
    pub absolute: DataSource,
    /// SHA-256 of the training stacks' shapes and pixels.
    pub sha256: String,
}

impl DataRecord {
    /// The record of `source`, whose stacks hash to `sha256`.
    pub fn new(source: &DataSource, sha256: &str) -> Result<Self> {
        let absolute = source.absolute().map_err(|e| {
            Error::Config(format!(
                "cannot make the data paths of {source} absolute: {e}"
            ))
        })?;
        Ok(DataRecord {
            given: source.clone(),
            absolute,
            sha256: sha256.to_string(),
        })
    }

    /// The record in `run_dir`, if the run keeps one (runs of before it was kept do not).
    pub fn read(run_dir: &Path) -> Result<Option<Self>> {
        let path = run_dir.join(files::DATA);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Json {
                path,
                reason: format!("not a data record: {e}"),
            })
    }

    /// Writes the record into `run_dir` (atomically).
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a data record serialises");
        write_json_atomically(&run_dir.join(files::DATA), &text)
    }

    /// Loads the recorded sections (from the absolute paths) and checks that they are the ones
    /// the run trained on. When they are gone or changed, the error names the recorded place,
    /// the digest and the flags that give the sections' new place.
    pub fn load(&self, run_dir: &Path) -> Result<LabelledSections> {
        let flags = match &self.given {
            DataSource::Directory(_) => "--data DIR",
            DataSource::Files { .. } => "--images STACK --labels STACK",
        };
        let fail = |what: String| Error::RecordedData {
            run_dir: run_dir.to_path_buf(),
            reason: format!(
                "it trained on {} (SHA-256 {}), which {what}; give the sections' new place with \
                 {flags}",
                self.absolute, self.sha256
            ),
        };
        let data = self
            .absolute
            .load()
            .map_err(|e| fail(format!("cannot be read ({e})")))?;
        let digest = unet_data::pair_sha256(&data.train_images, &data.train_labels);
        if digest != self.sha256 {
            return Err(fail(format!("has changed (its SHA-256 is now {digest})")));
        }
        Ok(data)
    }
}

/// The lock of a run directory while a process trains there: `train.lock` holds the process id
/// and is removed when the lock is dropped. A second training on the same directory is refused
/// with the first one's process id; a lock left by a killed process (its id no longer runs) is
/// taken over.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir` (which must exist) for this process.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(files::LOCK);
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    write!(file, "{}", std::process::id())
                        .and_then(|_| file.sync_all())
                        .map_err(io_error(&path))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match lock_holder(run_dir) {
                        Some(pid) => {
                            return Err(Error::RunLocked {
                                run_dir: run_dir.to_path_buf(),
                                pid,
                                lock: path,
                            })
                        }
                        // Stale: its process is gone (another process may take it over first).
                        None => match std::fs::remove_file(&path) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                return Err(io_error(&path)(e))
                            }
                            _ => {}
                        },
                    }
                }
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        Err(Error::Config(format!(
            "cannot take the lock {} (another process keeps creating it)",
            path.display()
        )))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The id of the live process that holds `run_dir`'s lock, if any.
pub fn lock_holder(run_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(run_dir.join(files::LOCK)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    unet_data::process_is_running(pid).then_some(pid)
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

/// Makes the epoch log hold exactly one record for each epoch `last` saved, before a resume
/// appends more: a process killed after saving `last` but before appending that epoch's line
/// leaves the line missing (it is taken from `last`'s sidecar, which keeps the record), and one
/// killed while appending leaves a torn last line (dropped).
pub(crate) fn reconcile_log(
    path: &Path,
    epochs_done: usize,
    saved_record: Option<EpochRecord>,
) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_error(path)(e)),
    };
    let mut records: Vec<EpochRecord> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<EpochRecord>(line) {
            Ok(r) if r.epoch <= epochs_done && r.epoch == records.len() + 1 => records.push(r),
            Ok(_) => {}
            // A torn line from a killed append; the loop rewrites the log without it.
            Err(_) => {}
        }
    }
    if let Some(r) = saved_record.filter(|r| r.epoch == epochs_done && r.epoch == records.len() + 1)
    {
        records.push(r);
    }
    let mut fixed = String::new();
    for r in &records {
        fixed.push_str(&serde_json::to_string(r).expect("a record always serialises"));
        fixed.push('\n');
    }
    if fixed != text {
        write_json_atomically(path, &fixed)?;
    }
    Ok(())
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
    let saved_record = serde_json::from_value(meta.metrics["record"].clone()).ok();
    reconcile_log(&run_dir.join(files::LOG), state.epochs_done, saved_record)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            global_step: epoch * 4,
            train_loss: 1.0 / epoch as f64,
            lr: 1e-3,
            validation: None,
            best: false,
            train_seconds: 1.0,
            validation_seconds: 0.5,
            samples_per_second: 4.0,
            loss_scale: None,
            skipped_steps: 0,
        }
    }

    #[test]
    fn the_log_holds_one_record_per_saved_epoch_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(files::LOG);
        for r in [record(1), record(2)] {
            append_log(&log, &r).unwrap();
        }
        // Killed while appending epoch 3's line, which `last` had saved already.
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("{\"epoch\":3,\"glob");
        std::fs::write(&log, &text).unwrap();
        reconcile_log(&log, 3, Some(record(3))).unwrap();
        let lines: Vec<EpochRecord> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![record(1), record(2), record(3)]);
        // A log ahead of `last` (epoch 3 logged, `last` of epoch 2) is cut back.
        reconcile_log(&log, 2, Some(record(2))).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
        // A whole log is left as it is.
        let before = std::fs::read(&log).unwrap();
        reconcile_log(&log, 2, Some(record(2))).unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), before);
    }
}
