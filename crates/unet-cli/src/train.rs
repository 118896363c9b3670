//! `unet train`: train a U-Net on the ISBI 2012 sections or a user's own, with progress bars.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use unet_data::LabelClasses;
use unet_model::{Precision, Preset};
use unet_train::{files, train, Recipe, SplitConfig, TrainConfig, TrainControl, TrainEvent};

use crate::calibrate::describe_calibration;
use crate::data::DataArgs;
use crate::device::DeviceArg;

/// Flags of `unet train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The recipe to start from: default (the small net, sized for 2 CPU cores), reference,
    /// paper.
    #[arg(long, default_value = "default")]
    pub recipe: String,
    /// A JSON training configuration (as written to runs/NAME/config.json); replaces the recipe.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The training and validation sections.
    #[command(flatten)]
    pub data: DataArgs,
    /// Where the run writes config.json, log.jsonl and checkpoints. [default: runs/<recipe>]
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its `last` checkpoint.
    #[arg(long, conflicts_with_all = ["config", "run_dir"])]
    pub resume: Option<PathBuf>,
    /// Epochs (on --resume: the new total). [default: the recipe's: default 100, reference 50,
    /// paper 50]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Tiles per batch. [default: the recipe's: default 4, reference 3, paper 1]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Side of the network's input tile in pixels. [default: the recipe's: default 256,
    /// reference and paper 572]
    #[arg(long, alias = "tile-size")]
    pub input_tile: Option<usize>,
    /// Tiles per training section per epoch. [default: the recipe's: default 4, reference and
    /// paper 1]
    #[arg(long)]
    pub crops_per_section: Option<usize>,
    /// Base learning rate. [default: the recipe's: default 1e-3 (Adam, cosine), reference 5e-4
    /// (Adam), paper 1e-2 (SGD, momentum 0.99)]
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// The network preset (paper, reference, small, resnet18, resnet34). [default: the
    /// recipe's: default small, reference reference, paper paper]
    #[arg(long)]
    pub preset: Option<String>,
    /// Augmentation: none, reference, paper, robust (the reference's with zoom, contrast,
    /// gamma, blur and noise). [default: the recipe's: default and reference reference, paper
    /// paper]
    #[arg(long)]
    pub augmentation: Option<String>,
    /// The input normalisation: dataset (the training sections' mean and std), per-image (each
    /// image's own), percentile (each image's p1 and p99.8 to 0 and 1). [default: the recipe's:
    /// dataset]
    #[arg(long)]
    pub normalisation: Option<String>,
    /// Fraction of the sections that train (the first ones); the rest validate. [default:
    /// sections 0-26 train, 27-29 validate, as the reference]
    #[arg(long, allow_negative_numbers = true)]
    pub train_fraction: Option<f64>,
    /// Seed of the initialisation and the data stream. [default: 2015]
    #[arg(long)]
    pub seed: Option<u64>,
    /// No per-pixel weights (plain cross-entropy). [default: the paper's border term, w0 10,
    /// sigma 5]
    #[arg(long)]
    pub no_weights: bool,
    /// Start from this checkpoint's weights (fine-tuning, the reference's `--model`) with a
    /// fresh optimizer; with another class count the classifier starts fresh. [default: He
    /// initialisation]
    #[arg(long, value_name = "CHECKPOINT")]
    pub init: Option<PathBuf>,
    /// Start a ResNet encoder (`--preset resnet18|resnet34`) from a torchvision state dict
    /// saved as safetensors (`conv1.weight`, `layer1.0.bn1.weight`, ...; `fc.*` ignored).
    /// [default: He initialisation]
    #[arg(long, value_name = "FILE")]
    pub encoder_weights: Option<PathBuf>,
    /// Also write TensorBoard event files (losses, IoU, accuracy, V-Rand, V-Info, learning rate,
    /// samples/s per epoch) under RUN_DIR/tb/.
    #[arg(long)]
    pub tensorboard: bool,
    /// Validation sections per forward pass (memory against speed; the scores do not change;
    /// the reference's `--test-batch-size`). [default: 1]
    #[arg(long, alias = "test-batch-size")]
    pub validation_batch_size: Option<usize>,
    /// Also print a line with the loss every this many steps (the reference's `--log-interval`).
    /// [default: only the per-epoch lines]
    #[arg(long)]
    pub log_interval: Option<usize>,
    /// Keep `best` as trained: no decision calibration on the training sections after the
    /// last epoch (see `unet calibrate`).
    #[arg(long)]
    pub no_calibration: bool,
    /// The format of the training forward and backward passes (the reference's `--amp`):
    /// f32, bf16 or f16. Master weights, batch norm, the loss, validation and checkpoints stay
    /// in f32; f16 uses dynamic loss scaling. On the CPU only f32 and f16 run (candle has no
    /// CPU bf16 matrix product), and f16 is slower there than f32. [default: f32]
    #[arg(long)]
    pub precision: Option<String>,
    /// The compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// No progress bars (one line per epoch instead).
    #[arg(long)]
    pub quiet: bool,
}

/// The configuration the flags describe.
fn config_from(args: &TrainArgs) -> Result<(TrainConfig, bool)> {
    let (mut cfg, resume) = if let Some(run) = &args.resume {
        let mut cfg = TrainConfig::load(run.join(files::CONFIG))
            .with_context(|| format!("--resume {}: reading its configuration", run.display()))?;
        cfg.run_dir = run.clone();
        (cfg, true)
    } else if let Some(path) = &args.config {
        (TrainConfig::load(path)?, false)
    } else {
        let recipe: Recipe = args.recipe.parse()?;
        (TrainConfig::recipe(recipe), false)
    };
    if resume {
        let changed = args.batch_size.is_some()
            || args.input_tile.is_some()
            || args.crops_per_section.is_some()
            || args.lr.is_some()
            || args.preset.is_some()
            || args.augmentation.is_some()
            || args.normalisation.is_some()
            || args.train_fraction.is_some()
            || args.seed.is_some()
            || args.no_weights
            || args.no_calibration
            || args.init.is_some()
            || args.encoder_weights.is_some()
            || args.tensorboard
            || args.validation_batch_size.is_some()
            || args.precision.is_some();
        if changed {
            bail!("--resume continues a run with its own settings; only --epochs may change");
        }
    }
    if let Some(dir) = &args.run_dir {
        cfg.run_dir = dir.clone();
    }
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.batch_size {
        cfg.batch_size = v;
    }
    if let Some(v) = args.input_tile {
        cfg.input_tile = v;
    }
    if let Some(v) = args.crops_per_section {
        cfg.crops_per_section = v;
    }
    if let Some(v) = args.lr {
        cfg.optimizer = cfg.optimizer.with_lr(v);
    }
    if let Some(p) = &args.preset {
        let preset: Preset = p.parse()?;
        cfg = cfg.with_preset(preset);
    }
    if let Some(a) = &args.augmentation {
        cfg.augmentation = a.parse()?;
    }
    if let Some(n) = &args.normalisation {
        cfg.normalisation = unet_model::Normalisation::for_mode(n)?;
    }
    if let Some(f) = args.train_fraction {
        cfg.split = SplitConfig::Fraction { train_fraction: f };
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if args.no_weights {
        cfg.weights = None;
    }
    if args.no_calibration {
        cfg.calibrate = false;
    }
    if let Some(init) = &args.init {
        cfg.init = Some(init.clone());
    }
    if args.tensorboard {
        cfg.tensorboard = true;
    }
    if let Some(path) = &args.encoder_weights {
        cfg.encoder_weights = Some(path.clone());
    }
    if let Some(n) = args.validation_batch_size {
        cfg.validation_batch_size = n;
    }
    if let Some(p) = &args.precision {
        cfg.precision = p.parse::<Precision>()?;
    }
    Ok((cfg, resume))
}

/// Runs `unet train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let (mut cfg, resume) = config_from(args)?;
    let (data, recorded) = match &args.resume {
        Some(run) => args.data.load_for_run(run)?,
        None => (args.data.load()?, false),
    };
    let classes = data.label_classes;
    if resume {
        if cfg.labels != classes {
            bail!(
                "the run trained on labels read as {:?}, these read as {classes:?} (the same \
                 --classes and --ignore-label as the run's first start)",
                cfg.labels
            );
        }
    } else {
        // The net takes as many channels as the images have.
        let channels = data.train_images.channels();
        if cfg.model.in_channels != channels {
            if args.config.is_some() {
                eprintln!(
                    "note: the configuration's model takes {} input channel(s); the images \
                     have {channels}, so it takes {channels}",
                    cfg.model.in_channels
                );
            }
            cfg.model.in_channels = channels;
        }
    }
    if !resume && classes != LabelClasses::Binary {
        cfg.labels = classes;
        cfg.model.n_classes = classes.n_classes();
        if cfg.calibrate {
            eprintln!(
                "note: calibration fits P(cell) of binary labels; these labels hold {} classes, \
                 so the run trains without it",
                classes.n_classes()
            );
            cfg.calibrate = false;
        }
    }
    let control = TrainControl {
        device: args.device.open()?,
        resume,
        // Sections read from the run's record keep that record as it is.
        data: (!recorded).then(|| data.source.clone()),
        ..TrainControl::default()
    };
    let stop = control.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: the user does not want to wait for the step.
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)...");
    })
    .context("installing the Ctrl-C handler")?;

    let mut bars = Bars::new(
        args.quiet,
        args.log_interval,
        crate::device::describe_training(&control.device),
    );
    let outcome = train(
        &cfg,
        &data.train_images,
        &data.train_labels,
        &control,
        &mut |event| bars.show(event),
    )
    .with_context(|| format!("training run {}", cfg.run_dir.display()))?;
    bars.finish();
    let dir = outcome.run_dir.display();
    if outcome.interrupted {
        println!(
            "stopped after {} epoch(s); continue with: unet train --resume {dir}",
            outcome.epochs_done
        );
    } else {
        println!("done: {} epochs in {dir}", outcome.epochs_done);
    }
    if let Some((iou, epoch)) = outcome.best {
        let at = if cfg.calibrate {
            " (at the decision point fitted on training sections)"
        } else {
            ""
        };
        println!("best validation mean IoU {iou:.4}{at} at epoch {epoch} ({dir}/best.safetensors)");
    }
    if let Some(c) = &outcome.calibration {
        println!("{}", describe_calibration(c));
    }
    Ok(())
}

/// Progress bars: one for the epochs, one for the steps of the current epoch.
struct Bars {
    quiet: bool,
    log_interval: Option<usize>,
    epochs: Option<ProgressBar>,
    steps: Option<ProgressBar>,
    multi: indicatif::MultiProgress,
    /// What the run computes on ([`crate::device::describe_training`]), for the start line.
    computed_on: String,
}

impl Bars {
    fn new(quiet: bool, log_interval: Option<usize>, computed_on: String) -> Self {
        Bars {
            computed_on,
            quiet,
            log_interval: log_interval.filter(|&n| n > 0),
            epochs: None,
            steps: None,
            multi: indicatif::MultiProgress::new(),
        }
    }

    /// A line above the bars; plain stdout when the bars are hidden (output not a terminal,
    /// e.g. a log file), where indicatif would drop it.
    fn line(&self, text: impl AsRef<str>) {
        if self.multi.is_hidden() {
            println!("{}", text.as_ref());
        } else {
            let _ = self.multi.println(text);
        }
    }

    fn show(&mut self, event: TrainEvent<'_>) {
        match event {
            TrainEvent::Start {
                config,
                steps_per_epoch,
                epochs_done,
                parameters,
                sections,
            } => {
                let msg = format!(
                    "{}: {} parameters, {} training / {} validation sections, {} steps per epoch, run {}, on {}",
                    config.recipe,
                    parameters,
                    sections.0,
                    sections.1,
                    steps_per_epoch,
                    config.run_dir.display(),
                    self.computed_on
                );
                self.line(msg);
                if !self.quiet {
                    let bar = self.multi.add(ProgressBar::new(config.epochs as u64));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "epoch {pos}/{len} [{elapsed_precise}<{eta_precise}] {wide_bar} {msg}",
                        )
                        .expect("a valid template"),
                    );
                    bar.set_position(epochs_done as u64);
                    self.epochs = Some(bar);
                }
            }
            TrainEvent::Initialised {
                from,
                epochs,
                reinitialised,
            } => {
                let fresh = if reinitialised.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; another class count, so {} start fresh",
                        reinitialised.join(", ")
                    )
                };
                self.line(format!(
                    "initialised from {} (trained {epochs} epochs){fresh}",
                    from.display()
                ));
            }
            TrainEvent::EncoderLoaded { from, tensors } => {
                self.line(format!(
                    "encoder: {tensors} tensors from {}",
                    from.display()
                ));
            }
            TrainEvent::EpochStart {
                epoch,
                steps,
                first_step,
            } => {
                if let Some(old) = self.steps.take() {
                    old.finish_and_clear();
                }
                if !self.quiet {
                    let bar = self.multi.add(ProgressBar::new(steps as u64));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "  step {pos}/{len} [{elapsed_precise}<{eta_precise}] {bar:30} {msg}",
                        )
                        .expect("a valid template"),
                    );
                    bar.set_position(first_step as u64);
                    bar.set_message(format!("epoch {epoch}"));
                    self.steps = Some(bar);
                }
            }
            TrainEvent::Step {
                epoch,
                step,
                loss,
                lr,
                samples_per_second,
            } => {
                if self.log_interval.is_some_and(|n| step % n == 0) {
                    self.line(format!(
                        "epoch {epoch:>3} step {step:>4}  loss {loss:.4}  lr {lr:.2e}  {samples_per_second:.2} samples/s"
                    ));
                }
                if let Some(bar) = &self.steps {
                    bar.inc(1);
                    bar.set_message(format!(
                        "loss {loss:.4}  lr {lr:.2e}  {samples_per_second:.2} samples/s"
                    ));
                }
            }
            TrainEvent::Validating { epoch } => {
                if let Some(bar) = &self.steps {
                    bar.set_message(format!("epoch {epoch}: validating"));
                }
            }
            TrainEvent::EpochEnd(record) => {
                let v = record.validation.as_ref();
                let line = format!(
                    "epoch {:>3}  train loss {:.4}  {}{}{}  ({:.0} s train, {:.0} s validation)",
                    record.epoch,
                    record.train_loss,
                    v.map_or("not validated".into(), |v| format!(
                        "val loss {:.4}  acc {:.4}  IoU {:.4}  Dice {:.4}  V-Rand {:.4}  V-Info {:.4}{}",
                        v.loss,
                        v.pixel_accuracy,
                        v.mean_iou,
                        v.dice,
                        v.v_rand,
                        v.v_info,
                        v.calibrated.as_ref().map_or(String::new(), |c| format!(
                            "  | at P > {:.3} (fitted on training sections): acc {:.4}  IoU {:.4}",
                            c.threshold, c.pixel_accuracy, c.mean_iou
                        )),
                    ) + &v.classes.as_ref().map_or(String::new(), |c| format!(
                        "  | IoU per class {}",
                        c.iou_per_class
                            .iter()
                            .map(|x| format!("{x:.3}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ))),
                    if record.best { "  best" } else { "" },
                    match record.loss_scale {
                        Some(scale) => format!(
                            "  loss scale {scale}, {} steps skipped",
                            record.skipped_steps
                        ),
                        None => String::new(),
                    },
                    record.train_seconds,
                    record.validation_seconds,
                );
                self.line(line);
                if let Some(bar) = &self.epochs {
                    bar.inc(1);
                    if let Some(v) = v {
                        bar.set_message(format!("val IoU {:.4}", v.selection_iou()));
                    }
                }
            }
            TrainEvent::Calibrating { sections } => {
                if let Some(bar) = &self.steps {
                    bar.set_message(format!("calibrating on {sections} training sections"));
                }
            }
            TrainEvent::Calibrated(_) => {}
            TrainEvent::Stopped { epoch, step } => {
                self.line(format!(
                    "stopped at epoch {epoch}, step {step}; `last` saved"
                ));
            }
        }
    }

    fn finish(&mut self) {
        for bar in [self.steps.take(), self.epochs.take()]
            .into_iter()
            .flatten()
        {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: TrainArgs,
    }

    #[test]
    fn flags_override_the_recipe() {
        let w = Wrap::parse_from([
            "x",
            "--recipe",
            "reference",
            "--epochs",
            "3",
            "--lr",
            "0.01",
            "--run-dir",
            "runs/a",
            "--no-weights",
        ]);
        let (cfg, resume) = config_from(&w.args).unwrap();
        assert!(!resume);
        assert_eq!(cfg.epochs, 3);
        assert_eq!(cfg.optimizer.lr(), 0.01);
        assert_eq!(cfg.batch_size, 3);
        assert_eq!(cfg.run_dir, PathBuf::from("runs/a"));
        assert!(cfg.weights.is_none());
        let bad = Wrap::parse_from(["x", "--recipe", "fast"]);
        assert!(config_from(&bad.args).is_err());
    }

    #[test]
    fn train_help_gives_every_option_a_default() {
        use clap::CommandFactory;
        let cmd = Wrap::command();
        let mut undocumented = Vec::new();
        for arg in cmd.get_arguments() {
            let takes_value = arg.get_action().takes_values();
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let has_default = !arg.get_default_values().is_empty() || help.contains("[default");
            // `--config`, `--resume` and `--data` name files whose absence is the default.
            let optional_file = ["config", "resume", "data"].contains(&arg.get_id().as_str());
            if takes_value && !has_default && !optional_file {
                undocumented.push(arg.get_id().to_string());
            }
        }
        assert!(
            undocumented.is_empty(),
            "no default given: {undocumented:?}"
        );
        let w = Wrap::parse_from([
            "x",
            "--init",
            "m.safetensors",
            "--tensorboard",
            "--test-batch-size",
            "3",
            "--precision",
            "f16",
        ]);
        let (cfg, _) = config_from(&w.args).unwrap();
        assert_eq!(cfg.precision, Precision::F16);
        let bad = Wrap::parse_from(["x", "--precision", "fp8"]);
        let err = config_from(&bad.args).unwrap_err().to_string();
        assert!(err.contains("unknown precision \"fp8\""), "{err}");
        assert_eq!(cfg.init, Some(PathBuf::from("m.safetensors")));
        assert!(cfg.tensorboard);
        assert_eq!(cfg.validation_batch_size, 3);
    }
}
