//! The training loop: [`train`] runs a [`TrainConfig`] on labelled sections, in named steps
//! (set-up, one epoch, end of epoch, finish) over the run directory ([`crate::run_dir`]):
//! epochs of batches from the [`Loader`], one [`UNet::train_step`] per batch, validation on the
//! whole validation sections, `log.jsonl`, checkpoints `best` and `last`, exact resume, a clean
//! stop, and the decision calibration of `best` at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use unet_data::{ChannelStack, DataSource, Split, Stack};
use unet_model::checkpoint::load_checkpoint_for_fine_tuning;
use unet_model::{
    read_checkpoint_meta, save_checkpoint, LrSchedule, Normalisation, Optimizer, StepOptions,
    StepReport, UNet,
};

use crate::calibrate::{calibrate_checkpoint, Calibration};
use crate::loader::{Loader, LoaderConfig, SectionSet};
use crate::run_dir::{
    append_log, checkpoint_metrics, files, resume_state, write_json_atomically, DataRecord,
    EpochRecord, RunLock, TrainState,
};
use crate::tensorboard::{write_epoch, EventWriter};
use crate::validation::{calibration_sections, validate, Validation, ValidationScores};
use crate::{Error, Result, TrainConfig};

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
    /// Where the sections came from, recorded in the run's `data.json` ([`DataRecord`]) so a
    /// resume or an evaluation finds them by the run's path alone (`None`: not recorded).
    pub data: Option<DataSource>,
}

impl Default for TrainControl {
    fn default() -> Self {
        TrainControl {
            device: Device::Cpu,
            resume: false,
            stop: Arc::new(AtomicBool::new(false)),
            data: None,
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

impl TrainState {
    /// Counts one finished step of `samples` samples that took `seconds`: its loss into the
    /// epoch's mean, and a skipped step when the update was not applied (f16 overflow).
    pub fn record_step(&mut self, report: &StepReport, samples: usize, seconds: f64) {
        if !report.applied {
            self.partial_skipped += 1;
        }
        self.step_in_epoch += 1;
        self.global_step += 1;
        self.partial_loss_sum += report.loss * samples as f64;
        self.partial_samples += samples;
        self.partial_seconds += seconds;
    }

    /// Closes epoch `epoch` (1-based): its [`EpochRecord`] (mean loss, timings, `validation`,
    /// whether it is the new best by [`ValidationScores::selection_iou`]), the best so far
    /// updated, and the epoch's partial sums reset for the next.
    pub fn close_epoch(
        &mut self,
        epoch: usize,
        lr: f64,
        validation: Option<ValidationScores>,
        validation_seconds: f64,
        loss_scale: Option<f64>,
    ) -> EpochRecord {
        let is_best = validation
            .as_ref()
            .is_some_and(|s| self.best_iou.is_none_or(|b| s.selection_iou() > b));
        let train_seconds = self.partial_seconds;
        let record = EpochRecord {
            epoch,
            global_step: self.global_step,
            train_loss: self.partial_loss_sum / self.partial_samples.max(1) as f64,
            lr,
            validation,
            best: is_best,
            train_seconds,
            validation_seconds,
            samples_per_second: self.partial_samples as f64 / train_seconds.max(1e-9),
            loss_scale,
            skipped_steps: self.partial_skipped,
        };
        self.epochs_done = epoch;
        self.step_in_epoch = 0;
        self.partial_loss_sum = 0.0;
        self.partial_samples = 0;
        self.partial_seconds = 0.0;
        self.partial_skipped = 0;
        if is_best {
            self.best_iou = record
                .validation
                .as_ref()
                .map(ValidationScores::selection_iou);
            self.best_epoch = Some(epoch);
        }
        record
    }
}

/// How an epoch's steps ended.
enum EpochProgress {
    /// All its steps ran.
    Trained,
    /// The stop flag was seen; `last` is saved.
    Stopped,
}

/// A run in progress: everything [`train`]'s steps share.
struct Trainer<'a> {
    /// Held for the whole run: no second process trains here meanwhile.
    _lock: RunLock,
    config: &'a TrainConfig,
    images: &'a ChannelStack,
    labels: &'a Stack<u8>,
    control: &'a TrainControl,
    split: Split,
    /// The f32 master weights: validation, calibration and checkpoints use them.
    model: UNet,
    /// The same parameters computing in the configured precision: the training steps.
    train_model: UNet,
    optimizer: Box<dyn Optimizer>,
    loader: Loader,
    normalisation: Normalisation,
    schedule: LrSchedule,
    steps_per_epoch: usize,
    state: TrainState,
    validation: Validation,
    calibration_set: Option<Validation>,
    tensorboard: Option<EventWriter>,
    records: Vec<EpochRecord>,
    lr: f64,
}

impl<'a> Trainer<'a> {
    /// Set-up: checks the settings, builds the net, optimizer and loader, resumes or starts the
    /// run directory, loads the validation sections, and reports the start.
    fn set_up(
        config: &'a TrainConfig,
        images: &'a ChannelStack,
        labels: &'a Stack<u8>,
        control: &'a TrainControl,
        observer: &mut dyn FnMut(TrainEvent<'_>),
    ) -> Result<Self> {
        config.validate()?;
        let run_dir = &config.run_dir;
        let split = config.split.resolve(images.sections())?;
        if images.channels() != config.model.in_channels {
            return Err(Error::Config(format!(
                "the images have {} channel(s), the model takes {} input channel(s) \
                 (in_channels)",
                images.channels(),
                config.model.in_channels
            )));
        }
        if split.validation.is_empty() {
            return Err(Error::Config(format!(
                "the split leaves no validation section: all {} sections train (a lower train \
                 fraction leaves some to validate)",
                split.train.len()
            )));
        }
        let device = &control.device;
        config.precision.check_device(device)?;
        let model = UNet::seeded(&config.model, config.seed, device)?;
        let mut optimizer = config.optimizer.build(&model)?;

        let input = config.input_tile;
        let (output, _) = model.output_size(input, input)?;
        let train_set = SectionSet::from_stacks(images, labels, config.labels, &split.train)?;
        let normalisation = match &config.normalisation {
            Some(n) => n.clone().validated()?,
            None => train_set.normalisation()?,
        };
        let loader_config = LoaderConfig {
            input_size: input,
            output_size: output,
            batch_size: config.batch_size,
            samples_per_epoch: split.train.len() * config.crops_per_section,
            seed: config.seed,
            weights: config.weights,
            normalisation: Some(normalisation.clone()),
            prefetch: config.prefetch,
            threads: 0,
        };
        let steps_per_epoch = loader_config.batches_per_epoch();
        let loader = Loader::new(train_set, &config.augmentation.pipeline()?, loader_config)?;
        let schedule = config
            .schedule
            .schedule(config.epochs * steps_per_epoch, steps_per_epoch);

        let data_sha256 = unet_data::pair_sha256(images, labels);
        std::fs::create_dir_all(run_dir).map_err(crate::error::io_error(run_dir))?;
        let lock = RunLock::acquire(run_dir)?;
        let mut state = if control.resume {
            resume_state(config, run_dir, &data_sha256, &model, optimizer.as_mut())?
        } else {
            if run_dir.join(files::CONFIG).exists() || run_dir.join(files::LAST).exists() {
                return Err(Error::Config(format!(
                    "{} already holds a run; resume it (--resume) or choose another run directory",
                    run_dir.display()
                )));
            }
            TrainState {
                data_sha256: Some(data_sha256.clone()),
                ..TrainState::default()
            }
        };
        if config.precision.needs_loss_scaling() && state.loss_scaler.is_none() {
            state.loss_scaler = Some(config.loss_scale.scaler());
        }
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
            Some(path) if !control.resume => Some((
                path,
                unet_model::resnet::load_torchvision_encoder(path, &model)?,
            )),
            _ => None,
        };
        write_json_atomically(&run_dir.join(files::CONFIG), &config.to_json())?;
        if let Some(source) = &control.data {
            DataRecord::new(source, &data_sha256)?.write(run_dir)?;
        }
        let tensorboard = match config.tensorboard {
            true => Some(EventWriter::create(run_dir.join(files::TENSORBOARD))?),
            false => None,
        };

        let validation = Validation::new(
            images,
            labels,
            config.labels,
            &split.validation,
            &normalisation,
            config.weights.as_ref(),
            device,
        )?;
        let calibration_set = match config.calibrate {
            true => Some(Validation::new(
                images,
                labels,
                config.labels,
                &calibration_sections(&split.train),
                &normalisation,
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
        let lr = schedule.lr(config.optimizer.lr(), state.global_step);
        Ok(Trainer {
            _lock: lock,
            config,
            images,
            labels,
            control,
            split,
            model,
            train_model,
            optimizer,
            loader,
            normalisation,
            schedule,
            steps_per_epoch,
            state,
            validation,
            calibration_set,
            tensorboard,
            records: Vec::new(),
            lr,
        })
    }

    /// Saves `last`: the weights, the optimizer state, the position in the data stream.
    fn save_last(&self) -> Result<()> {
        save_checkpoint(
            self.config.run_dir.join(files::LAST),
            &self.model,
            self.state.epochs_done,
            Some(self.normalisation.clone()),
            checkpoint_metrics(self.config, &self.state, self.records.last()),
            Some(self.optimizer.as_ref()),
        )?;
        Ok(())
    }

    /// Saves `last` and reports the stop at `step` of `epoch`.
    fn stop(&self, epoch: usize, observer: &mut dyn FnMut(TrainEvent<'_>)) -> Result<()> {
        self.save_last()?;
        observer(TrainEvent::Stopped {
            epoch,
            step: self.state.step_in_epoch,
        });
        Ok(())
    }

    /// One epoch's steps, from where the state stands (mid-epoch after a resume).
    fn run_epoch(&mut self, observer: &mut dyn FnMut(TrainEvent<'_>)) -> Result<EpochProgress> {
        let config = self.config;
        let device = &self.control.device;
        let stop = &self.control.stop;
        let epoch = self.state.epochs_done + 1;
        let first = self.state.step_in_epoch;
        if stop.load(Ordering::SeqCst) {
            self.stop(epoch, observer)?;
            return Ok(EpochProgress::Stopped);
        }
        observer(TrainEvent::EpochStart {
            epoch,
            steps: self.steps_per_epoch,
            first_step: first,
        });
        let options = StepOptions {
            grad_clip: config.grad_clip,
            autograd: false,
        };
        let mut step_clock = Instant::now();
        for batch in self.loader.epoch(epoch - 1, first) {
            let batch = batch?;
            self.lr = self
                .schedule
                .lr(config.optimizer.lr(), self.state.global_step);
            self.optimizer.set_learning_rate(self.lr);
            let (n, si, so) = (batch.size, batch.input_size, batch.output_size);
            let x = Tensor::from_vec(batch.images, (n, batch.channels, si, si), device)?;
            let ids: Vec<u32> = batch.labels.iter().map(|&l| u32::from(l)).collect();
            let y = Tensor::from_vec(ids, (n, so, so), device)?;
            let w = match config.weights {
                Some(_) => Some(Tensor::from_vec(batch.weights, (n, so, so), device)?),
                None => None,
            };
            let report = self.train_model.train_step(
                &x,
                |logits: &Tensor| config.loss.compute(logits, &y, w.as_ref()),
                self.optimizer.as_mut(),
                self.state.loss_scaler.as_mut(),
                options,
            )?;
            if !report.loss.is_finite() {
                return Err(Error::NonFiniteLoss {
                    epoch,
                    step: self.state.step_in_epoch + 1,
                    value: report.loss,
                    run_dir: config.run_dir.clone(),
                });
            }
            let seconds = step_clock.elapsed().as_secs_f64();
            step_clock = Instant::now();
            self.state.record_step(&report, n, seconds);
            observer(TrainEvent::Step {
                epoch,
                step: self.state.step_in_epoch,
                loss: report.loss,
                lr: self.lr,
                samples_per_second: n as f64 / seconds.max(1e-9),
            });
            if stop.load(Ordering::SeqCst) && self.state.step_in_epoch < self.steps_per_epoch {
                self.stop(epoch, observer)?;
                return Ok(EpochProgress::Stopped);
            }
        }
        Ok(EpochProgress::Trained)
    }

    /// End of an epoch: validation (when due), the record, `best` and `last`, the log line,
    /// TensorBoard.
    fn end_epoch(&mut self, observer: &mut dyn FnMut(TrainEvent<'_>)) -> Result<()> {
        let config = self.config;
        let epoch = self.state.epochs_done + 1;
        let validate_now = epoch.is_multiple_of(config.validate_every) || epoch == config.epochs;
        let clock = Instant::now();
        let scores = if validate_now {
            observer(TrainEvent::Validating { epoch });
            Some(validate(
                &self.model,
                &self.validation,
                config.loss,
                config.validation_batch_size,
                self.calibration_set.as_ref(),
            )?)
        } else {
            None
        };
        let loss_scale = self.state.loss_scaler.map(|s| s.scale());
        let seconds = clock.elapsed().as_secs_f64();
        let record = self
            .state
            .close_epoch(epoch, self.lr, scores, seconds, loss_scale);
        let run_dir = &config.run_dir;
        if record.best {
            save_checkpoint(
                run_dir.join(files::BEST),
                &self.model,
                epoch,
                Some(self.normalisation.clone()),
                checkpoint_metrics(config, &self.state, Some(&record)),
                None,
            )?;
        }
        self.records.push(record);
        self.save_last()?;
        let record = self.records.last().expect("just pushed");
        append_log(&run_dir.join(files::LOG), record)?;
        if let Some(writer) = self.tensorboard.as_mut() {
            write_epoch(writer, record)?;
        }
        observer(TrainEvent::EpochEnd(record));
        Ok(())
    }

    /// How the run stands, as returned to the caller.
    fn outcome(&self, interrupted: bool) -> TrainOutcome {
        TrainOutcome {
            run_dir: self.config.run_dir.clone(),
            epochs_done: self.state.epochs_done,
            interrupted,
            records: self.records.clone(),
            best: self.state.best_iou.zip(self.state.best_epoch),
            calibration: None,
        }
    }

    /// After the last epoch: the decision calibration of `best` (once; a resumed run that
    /// already calibrated reports it).
    fn finish(self, observer: &mut dyn FnMut(TrainEvent<'_>)) -> Result<TrainOutcome> {
        let mut done = self.outcome(false);
        let best_path = self.config.run_dir.join(files::BEST);
        if self.config.calibrate && best_path.exists() {
            let meta = read_checkpoint_meta(&best_path)?;
            let calibration = match Calibration::of(&meta) {
                Some(calibration) => calibration,
                None => {
                    observer(TrainEvent::Calibrating {
                        sections: self.split.train.len(),
                    });
                    calibrate_checkpoint(
                        &best_path,
                        self.images,
                        self.labels,
                        &self.split.train,
                        &self.control.device,
                    )?
                }
            };
            observer(TrainEvent::Calibrated(&calibration));
            done.calibration = Some(calibration);
        }
        Ok(done)
    }
}

/// Trains as `config` says on `images` (grey or with channels, as many as the model's
/// `in_channels`) and their `labels` (0/255, or class indices as `config.labels` says; e.g.
/// ISBI's `train-volume.tif` and `train-labels.tif`), writing the run to `config.run_dir`.
///
/// With `control.resume`, continues the run in `config.run_dir` from its `last` checkpoint
/// (weights, optimizer state, position in the data stream); the saved `config.json` must match
/// `config` except for `epochs`, which may grow. Without it, refuses a directory that already
/// holds a run. Returns when all epochs are done or when `control.stop` was set (after saving
/// `last`).
pub fn train(
    config: &TrainConfig,
    images: &ChannelStack,
    labels: &Stack<u8>,
    control: &TrainControl,
    observer: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<TrainOutcome> {
    let mut trainer = Trainer::set_up(config, images, labels, control, observer)?;
    while trainer.state.epochs_done < config.epochs {
        match trainer.run_epoch(observer)? {
            EpochProgress::Stopped => return Ok(trainer.outcome(true)),
            EpochProgress::Trained => trainer.end_epoch(observer)?,
        }
    }
    trainer.finish(observer)
}

/// The path of a run's `best` checkpoint, else its `last` (what evaluation scores).
pub fn best_or_last(run_dir: &Path) -> PathBuf {
    let best = run_dir.join(files::BEST);
    if best.exists() {
        best
    } else {
        run_dir.join(files::LAST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::CalibratedScores;
    use unet_model::StepKind;

    fn step(loss: f64, applied: bool) -> StepReport {
        StepReport {
            loss,
            kind: StepKind::Direct,
            applied,
        }
    }

    fn scores(mean_iou: f64, calibrated: Option<f64>) -> ValidationScores {
        ValidationScores {
            loss: 0.3,
            pixel_accuracy: 0.9,
            mean_iou,
            dice: 0.9,
            v_rand: 0.9,
            v_info: 0.9,
            calibrated: calibrated.map(|iou| CalibratedScores {
                threshold: 0.4,
                pixel_accuracy: 0.91,
                mean_iou: iou,
            }),
            classes: None,
        }
    }

    #[test]
    fn an_epoch_averages_its_sample_losses_and_counts_skipped_steps() {
        let mut state = TrainState::default();
        state.record_step(&step(1.0, true), 4, 2.0);
        state.record_step(&step(0.5, false), 2, 1.0);
        assert_eq!((state.step_in_epoch, state.global_step), (2, 2));
        let record = state.close_epoch(1, 1e-3, None, 0.0, Some(1024.0));
        assert_eq!(record.train_loss, (4.0 * 1.0 + 2.0 * 0.5) / 6.0);
        assert_eq!(record.samples_per_second, 2.0);
        assert_eq!((record.skipped_steps, record.loss_scale), (1, Some(1024.0)));
        assert!(!record.best, "an epoch without validation is never best");
        assert_eq!((state.epochs_done, state.step_in_epoch), (1, 0));
        assert_eq!((state.partial_samples, state.partial_skipped), (0, 0));
        assert_eq!(state.global_step, 2, "the run's step count goes on");
    }

    #[test]
    fn best_follows_the_calibrated_iou_when_there_is_one() {
        let mut state = TrainState::default();
        assert!(
            state
                .close_epoch(1, 0.1, Some(scores(0.7, None)), 0.0, None)
                .best
        );
        assert_eq!((state.best_iou, state.best_epoch), (Some(0.7), Some(1)));
        // A higher raw IoU but a lower calibrated one is not better.
        let second = state.close_epoch(2, 0.1, Some(scores(0.9, Some(0.65))), 0.0, None);
        assert!(!second.best);
        let third = state.close_epoch(3, 0.1, Some(scores(0.6, Some(0.75))), 0.0, None);
        assert!(third.best);
        assert_eq!((state.best_iou, state.best_epoch), (Some(0.75), Some(3)));
        // Ties keep the earlier epoch.
        assert!(
            !state
                .close_epoch(4, 0.1, Some(scores(0.75, None)), 0.0, None)
                .best
        );
    }
}
