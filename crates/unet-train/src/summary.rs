//! A run directory at a glance ([`RunSummary`], `unet info --run`): its settings, its data, how
//! far it got, its best epoch, whether a process trains there now, and its files.

use std::fmt;
use std::path::{Path, PathBuf};

use unet_model::read_checkpoint_meta;

use crate::calibrate::Calibration;
use crate::error::io_error;
use crate::run_dir::{files, lock_holder, DataRecord, EpochRecord, TrainState};
use crate::{Error, Result, TrainConfig};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// A live process holds the run's lock.
    Training {
        /// Its process id.
        pid: u32,
    },
    /// All its epochs are done.
    Finished,
    /// Stopped (or killed) before its last epoch; `unet train --resume` continues it.
    Interrupted,
    /// No epoch was saved yet.
    NotStarted,
}

/// One run directory, summarised.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Its settings (`config.json`).
    pub config: TrainConfig,
    /// Where its sections came from (`data.json`; `None` for runs of before it was kept).
    pub data: Option<DataRecord>,
    /// Epochs saved in `last`.
    pub epochs_done: usize,
    /// The log line of the best epoch so far.
    pub best: Option<EpochRecord>,
    /// The decision calibration of `best`, once fitted.
    pub calibration: Option<Calibration>,
    /// Training now, finished, interrupted or not started.
    pub state: RunState,
    /// The files of the directory and their sizes in bytes, by name (a folder counts the files
    /// in it).
    pub files: Vec<(String, u64)>,
}

impl RunSummary {
    /// Reads the summary of the run in `run_dir`.
    pub fn read(run_dir: impl AsRef<Path>) -> Result<Self> {
        let run_dir = run_dir.as_ref();
        let config_path = run_dir.join(files::CONFIG);
        if !config_path.is_file() {
            return Err(Error::Config(format!(
                "{} is not a run directory (no {})",
                run_dir.display(),
                files::CONFIG
            )));
        }
        let config = TrainConfig::load(&config_path)?;
        let last = run_dir.join(files::LAST);
        let state: Option<TrainState> = match last.exists() {
            true => {
                let meta = read_checkpoint_meta(&last)?;
                serde_json::from_value(meta.metrics["state"].clone()).ok()
            }
            false => None,
        };
        let epochs_done = state.as_ref().map_or(0, |s| s.epochs_done);
        let best = read_log(&run_dir.join(files::LOG))?
            .into_iter()
            .rfind(|r| r.best && r.epoch <= epochs_done);
        let best_path = run_dir.join(files::BEST);
        let calibration = match best_path.exists() {
            true => Calibration::of(&read_checkpoint_meta(&best_path)?),
            false => None,
        };
        let state = match lock_holder(run_dir) {
            Some(pid) => RunState::Training { pid },
            None if state.is_none() => RunState::NotStarted,
            None if epochs_done >= config.epochs => RunState::Finished,
            None => RunState::Interrupted,
        };
        Ok(RunSummary {
            run_dir: run_dir.to_path_buf(),
            data: DataRecord::read(run_dir)?,
            config,
            epochs_done,
            best,
            calibration,
            state,
            files: directory_sizes(run_dir)?,
        })
    }
}

/// The epoch log's records (none when there is no log yet).
fn read_log(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(path)(e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Json {
                path: path.to_path_buf(),
                reason: format!("line {} is not an epoch record: {e}", i + 1),
            })
        })
        .collect()
}

/// Each entry of `dir` with its size (a folder: the sum of its files), by name.
fn directory_sizes(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let size = match path.is_dir() {
            true => std::fs::read_dir(&path)
                .map_err(io_error(&path))?
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum(),
            false => entry.metadata().map_err(io_error(&path))?.len(),
        };
        out.push((entry.file_name().to_string_lossy().into_owned(), size));
    }
    out.sort();
    Ok(out)
}

/// A size in bytes, kB or MB.
fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1_000 => format!("{b} B"),
        b if b < 1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let m = &c.model;
        writeln!(
            f,
            "run {}: recipe {}, {} epochs; {} tile(s) of {}^2 per section per epoch in batches \
             of {}; {} lr {}; seed {}",
            self.run_dir.display(),
            c.recipe,
            c.epochs,
            c.crops_per_section,
            c.input_tile,
            c.batch_size,
            match c.optimizer {
                crate::OptimizerConfig::Adam { .. } => "Adam",
                crate::OptimizerConfig::Sgd { .. } => "SGD",
            },
            c.optimizer.lr(),
            c.seed
        )?;
        writeln!(
            f,
            "  net: depth {}, base width {}, {} padding, {}, {} classes",
            m.depth,
            m.base_width,
            match m.padding {
                unet_model::Padding::Same => "same",
                unet_model::Padding::Valid => "valid",
            },
            if m.batch_norm {
                "batch norm"
            } else {
                "no batch norm"
            },
            m.n_classes
        )?;
        match &self.data {
            Some(d) => writeln!(f, "  data: {} (SHA-256 {})", d.absolute, d.sha256)?,
            None => writeln!(f, "  data: not recorded (a run of before data.json)")?,
        }
        let dir = self.run_dir.display();
        match self.state {
            RunState::Training { pid } => writeln!(
                f,
                "  state: training now (process {pid}), {} of {} epochs done",
                self.epochs_done, c.epochs
            )?,
            RunState::Finished => {
                writeln!(f, "  state: finished, {} of {} epochs", self.epochs_done, c.epochs)?
            }
            RunState::Interrupted => writeln!(
                f,
                "  state: interrupted after {} of {} epochs; continue with: unet train --resume {dir}",
                self.epochs_done, c.epochs
            )?,
            RunState::NotStarted => writeln!(f, "  state: no epoch saved yet")?,
        }
        match self.best.as_ref().and_then(|r| Some((r, r.validation.as_ref()?))) {
            Some((r, v)) => writeln!(
                f,
                "  best: epoch {}, mean IoU {:.4}{}, pixel accuracy {:.4}, V-Rand {:.4}, V-Info {:.4}",
                r.epoch,
                v.mean_iou,
                v.calibrated
                    .as_ref()
                    .map_or(String::new(), |c| format!(" ({:.4} at P > {:.3})", c.mean_iou, c.threshold)),
                v.pixel_accuracy,
                v.v_rand,
                v.v_info
            )?,
            None => writeln!(f, "  best: none yet")?,
        }
        if let Some(cal) = &self.calibration {
            writeln!(
                f,
                "  calibrated: logit offset {:+.3} on {} training sections",
                cal.logit_offset,
                cal.sections.len()
            )?;
        }
        let listed: Vec<String> = self
            .files
            .iter()
            .map(|(name, size)| format!("{name} {}", human_size(*size)))
            .collect();
        write!(f, "  files: {}", listed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(7_850_000), "7.8 MB");
    }
}
