//! Checkpoints: the model's tensors as safetensors, the optimizer state as a second safetensors
//! file, and a JSON sidecar with the config, epoch, the input [`Normalisation`], free-form
//! metrics and the size and checksum of each file. Every file is written to a temporary file in
//! the same directory, flushed to disk and renamed into place ([`unet_data::write_atomically`]);
//! the sidecar goes last, so a checkpoint with a sidecar is complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};

use crate::config::UNetConfig;
use crate::normalisation::Normalisation;
use crate::optim::Optimizer;
use crate::unet::UNet;
use crate::{Error, Result};

const FORMAT: &str = "unet-rs checkpoint";
const VERSION: u32 = 1;

/// A file of the checkpoint as the sidecar records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The file name, relative to the sidecar's directory.
    pub file: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// FNV-1a 64 of its contents, hex.
    pub fnv1a64: String,
}

/// The JSON sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Always "unet-rs checkpoint".
    pub format: String,
    /// The sidecar format version (1).
    pub version: u32,
    /// The network configuration.
    pub config: UNetConfig,
    /// Epochs completed.
    pub epoch: usize,
    /// The input normalisation the model was trained with (`None`: none recorded). Sidecars
    /// written before it was a field of its own keep it as `metrics.normalisation`
    /// (`{"mean", "std"}`), which [`read_checkpoint_meta`] reads into this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalisation: Option<Normalisation>,
    /// Anything the trainer wants to keep (losses, scores, the training settings).
    pub metrics: serde_json::Value,
    /// The weights file.
    pub weights: FileRecord,
    /// The optimizer kind ("adam", "sgd") and its state file, if saved.
    pub optimizer: Option<(String, FileRecord)>,
}

impl CheckpointMeta {
    /// The recorded input normalisation, or an error naming the sidecar of the checkpoint at
    /// `weights` when it records none.
    pub fn required_normalisation(&self, weights: &Path) -> Result<Normalisation> {
        self.normalisation.clone().ok_or_else(|| Error::Checkpoint {
            path: sidecar_path(weights),
            reason: "no input normalisation recorded (the `normalisation` field)".into(),
        })
    }
}

/// The sidecar path of a checkpoint whose weights are at `weights`: the same name with `.json`.
pub fn sidecar_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

fn optimizer_path(weights: &Path) -> PathBuf {
    weights.with_extension("optim.safetensors")
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "the path needs a UTF-8 file name".into(),
        })
}

/// Serialises tensors as safetensors in memory; returns the bytes and their sidecar record
/// under the file name of `path`.
fn tensor_bytes(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<(Vec<u8>, FileRecord)> {
    let cpu: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    // The serialiser candle's own `save` writes to a file with; the bytes are the same.
    let bytes = safetensors::serialize(&cpu, None).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("cannot serialise the tensors: {e}"),
    })?;
    let record = FileRecord {
        file: file_name(path)?,
        bytes: bytes.len() as u64,
        fnv1a64: fnv1a64(&bytes),
    };
    Ok((bytes, record))
}

/// Saves `model` (parameters and buffers) to `weights` (e.g. `runs/a/epoch-010.safetensors`),
/// the optimizer state (if any) beside it as `*.optim.safetensors`, and the sidecar `*.json`
/// with the input normalisation the model expects.
pub fn save_checkpoint(
    weights: impl AsRef<Path>,
    model: &UNet,
    epoch: usize,
    normalisation: Option<Normalisation>,
    metrics: serde_json::Value,
    optimizer: Option<&dyn Optimizer>,
) -> Result<()> {
    let weights = weights.as_ref();
    write_checkpoint(weights, model, epoch, normalisation, metrics, optimizer).map_err(|e| {
        let cause = match e {
            Error::Checkpoint { reason, .. } => reason,
            other => other.to_string(),
        };
        Error::Checkpoint {
            path: weights.to_path_buf(),
            reason: format!("not written, the previous checkpoint is kept: {cause}"),
        }
    })
}

/// [`save_checkpoint`]'s work; nothing is renamed into place unless every file was written.
fn write_checkpoint(
    weights: &Path,
    model: &UNet,
    epoch: usize,
    normalisation: Option<Normalisation>,
    metrics: serde_json::Value,
    optimizer: Option<&dyn Optimizer>,
) -> Result<()> {
    let sidecar = sidecar_path(weights);
    if sidecar == weights {
        return Err(Error::Checkpoint {
            path: weights.to_path_buf(),
            reason: "the weights file must not end in .json (that name is the sidecar's)".into(),
        });
    }
    let (weights_bytes, weights_record) = tensor_bytes(weights, &model.state())?;
    let optim_path = optimizer_path(weights);
    let optimizer_state = match optimizer {
        Some(opt) => Some((opt.kind(), tensor_bytes(&optim_path, &opt.state()?)?)),
        None => None,
    };
    let optimizer = optimizer_state
        .as_ref()
        .map(|(kind, (_, record))| (kind.to_string(), record.clone()));
    let meta = CheckpointMeta {
        format: FORMAT.into(),
        version: VERSION,
        config: model.config().clone(),
        epoch,
        normalisation,
        metrics,
        weights: weights_record,
        optimizer,
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Checkpoint {
        path: sidecar.clone(),
        reason: format!("cannot serialise the sidecar: {e}"),
    })?;
    // One unit: all files flushed before the first rename, the sidecar renamed last.
    let mut set: Vec<(&Path, &[u8])> = vec![(weights, &weights_bytes)];
    if let Some((_, (bytes, _))) = &optimizer_state {
        set.push((&optim_path, bytes));
    }
    set.push((&sidecar, &json));
    unet_data::write_all_atomically(&set).map_err(|e| Error::Checkpoint {
        path: weights.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads the sidecar of the checkpoint at `weights` (to build a model from its config), after
/// completing a save that a killed process left half done ([`complete_interrupted_save`]).
pub fn read_checkpoint_meta(weights: impl AsRef<Path>) -> Result<CheckpointMeta> {
    complete_interrupted_save(weights.as_ref());
    let sidecar = sidecar_path(weights.as_ref());
    let text = std::fs::read(&sidecar).map_err(io(&sidecar))?;
    parse_meta(&text, &sidecar)
}

/// Parses and checks a sidecar's bytes; `sidecar` names it in errors.
fn parse_meta(text: &[u8], sidecar: &Path) -> Result<CheckpointMeta> {
    let fail = |reason: String| Error::Checkpoint {
        path: sidecar.to_path_buf(),
        reason,
    };
    let mut meta: CheckpointMeta = serde_json::from_slice(text).map_err(|e| {
        fail(format!(
            "the sidecar is not a valid checkpoint description: {e}"
        ))
    })?;
    if meta.format != FORMAT || meta.version != VERSION {
        return Err(fail(format!(
            "unknown format {:?} version {} (expected {FORMAT:?} version {VERSION})",
            meta.format, meta.version
        )));
    }
    if meta.normalisation.is_none() {
        // Sidecars of before the typed field: `metrics.normalisation = {mean, std}`.
        let legacy = &meta.metrics["normalisation"];
        if let (Some(mean), Some(std)) = (legacy["mean"].as_f64(), legacy["std"].as_f64()) {
            meta.normalisation = Some(Normalisation::Dataset { mean, std });
        }
    }
    if let Some(n) = &meta.normalisation {
        n.clone()
            .validated()
            .and_then(|n| n.check_channels(meta.config.in_channels))
            .map_err(|e| {
                fail(format!(
                    "its normalisation: {e} (the model takes {} input channel(s))",
                    meta.config.in_channels
                ))
            })?;
    }
    Ok(meta)
}

/// Whether the file at `path` is the one `record` describes (its length and checksum).
fn file_matches(path: &Path, record: &FileRecord) -> bool {
    std::fs::read(path)
        .map(|b| b.len() as u64 == record.bytes && fnv1a64(&b) == record.fnv1a64)
        .unwrap_or(false)
}

/// Whether the checkpoint at `weights` is whole: its sidecar parses and its weights and
/// optimizer files are the ones the sidecar records.
fn checkpoint_is_whole(weights: &Path, sidecar: &Path) -> bool {
    let Ok(text) = std::fs::read(sidecar) else {
        return false;
    };
    let Ok(meta) = parse_meta(&text, sidecar) else {
        return false;
    };
    file_matches(weights, &meta.weights)
        && meta
            .optimizer
            .as_ref()
            .is_none_or(|(_, r)| file_matches(&optimizer_path(weights), r))
}

/// Completes the save of the checkpoint at `weights` that a killed process left half renamed.
///
/// [`save_checkpoint`] writes all files of the new checkpoint to temporaries (`.NAME.PID.tmp`)
/// and flushes them before it renames the weights, the optimizer state and, last, the sidecar
/// into place; a kill between those renames leaves new weights beside the old sidecar. When the
/// checkpoint is not whole and the temporaries of a process that no longer runs hold a whole
/// checkpoint, their remaining renames are done now. Best effort: nothing happens when the
/// checkpoint is whole, a writer still runs, or the directory cannot be written. Returns whether
/// a save was completed.
pub fn complete_interrupted_save(weights: &Path) -> bool {
    let sidecar = sidecar_path(weights);
    let dir = match weights.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return false;
    };
    let mut pending: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            Some((unet_data::temp_path_pid(&sidecar, &path)?, path))
        })
        .filter(|(pid, _)| !unet_data::process_is_running(*pid))
        .collect();
    if pending.is_empty() || checkpoint_is_whole(weights, &sidecar) {
        return false;
    }
    pending.sort();
    let optim = optimizer_path(weights);
    for (pid, temp_sidecar) in pending {
        let Ok(text) = std::fs::read(&temp_sidecar) else {
            continue;
        };
        let Ok(meta) = parse_meta(&text, &sidecar) else {
            continue;
        };
        let temp_of = |path: &Path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            path.with_file_name(format!(".{name}.{pid}.tmp"))
        };
        // Each file is in place already, or waits as this process's temporary.
        let mut renames = Vec::new();
        let mut whole = true;
        let mut records = vec![(weights.to_path_buf(), meta.weights.clone())];
        if let Some((_, record)) = &meta.optimizer {
            records.push((optim.clone(), record.clone()));
        }
        for (path, record) in records {
            if file_matches(&path, &record) {
                continue;
            }
            let temp = temp_of(&path);
            if file_matches(&temp, &record) {
                renames.push((temp, path));
            } else {
                whole = false;
            }
        }
        if !whole {
            continue;
        }
        renames.push((temp_sidecar, sidecar.clone()));
        if renames
            .iter()
            .all(|(from, to)| std::fs::rename(from, to).is_ok())
        {
            return true;
        }
    }
    false
}

/// Reads the file at `path` and checks its length and checksum against its sidecar record,
/// then parses the tensors. The record's file name is not used: a checkpoint pair copied or
/// renamed together (`best.*` to `default.*`) still loads.
fn read_tensors(
    path: &Path,
    record: &FileRecord,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    parse_tensors(&bytes, path, record, device)
}

/// Checks a tensor file's bytes against its sidecar record and parses them; `path` names it in
/// errors.
fn parse_tensors(
    bytes: &[u8],
    path: &Path,
    record: &FileRecord,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let path = path.to_path_buf();
    let fail = |reason: String| Error::Checkpoint {
        path: path.clone(),
        reason,
    };
    if bytes.len() as u64 != record.bytes {
        return Err(fail(format!(
            "truncated or altered: {} bytes, the sidecar records {}",
            bytes.len(),
            record.bytes
        )));
    }
    let sum = fnv1a64(bytes);
    if sum != record.fnv1a64 {
        return Err(fail(format!(
            "corrupted: checksum {sum}, the sidecar records {}",
            record.fnv1a64
        )));
    }
    candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| fail(format!("not a readable safetensors file: {e}")))
}

/// Loads the checkpoint at `weights` into `model`. A checkpoint of another configuration is
/// refused with [`Error::ConfigMismatch`] listing the differing fields; a truncated or corrupted
/// file is an [`Error::Checkpoint`]. Returns the sidecar.
pub fn load_checkpoint(weights: impl AsRef<Path>, model: &UNet) -> Result<CheckpointMeta> {
    let weights = weights.as_ref();
    let meta = read_checkpoint_meta(weights)?;
    check_config(weights, &meta.config, model)?;
    model.load_state(&read_model_tensors(weights, &meta, model)?)?;
    Ok(meta)
}

/// The net of the checkpoint at `weights` (with its sidecar beside it), built from the
/// sidecar's configuration on `device` and loaded; returns it with the sidecar.
pub fn load_model(weights: impl AsRef<Path>, device: &Device) -> Result<(UNet, CheckpointMeta)> {
    let weights = weights.as_ref();
    let meta = read_checkpoint_meta(weights)?;
    let model = build_model(&meta, weights, device)?;
    // Built from the sidecar's config, so no config check: only the tensors are read.
    model.load_state(&read_model_tensors(weights, &meta, &model)?)?;
    Ok((model, meta))
}

/// [`load_model`] from a checkpoint held in memory (its sidecar's and its weights' bytes, as
/// `include_bytes!` gives them); `name` stands for the checkpoint in errors.
pub fn load_model_from_bytes(
    name: &str,
    sidecar: &[u8],
    weights: &[u8],
    device: &Device,
) -> Result<(UNet, CheckpointMeta)> {
    let path = PathBuf::from(name);
    let meta = parse_meta(sidecar, &sidecar_path(&path))?;
    let model = build_model(&meta, &path, device)?;
    model.load_state(&parse_tensors(weights, &path, &meta.weights, device)?)?;
    Ok((model, meta))
}

/// A freshly initialised net of a sidecar's configuration, refused before it is built when its
/// tensors would not fit in the weights file the sidecar records (a damaged sidecar must not
/// make the loader allocate a net of any size).
fn build_model(meta: &CheckpointMeta, weights: &Path, device: &Device) -> Result<UNet> {
    meta.config.validate()?;
    let values = crate::parameter_count(&meta.config) + crate::buffer_count(&meta.config);
    let needed = (values as u64).saturating_mul(4);
    if needed > meta.weights.bytes {
        return Err(Error::Checkpoint {
            path: sidecar_path(weights),
            reason: format!(
                "its net has {values} parameters and buffers ({needed} bytes as f32), more \
                 than the {} bytes its weights file holds",
                meta.weights.bytes
            ),
        });
    }
    let varmap = VarMap::new();
    UNet::new(
        &meta.config,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )
}

/// Refuses a checkpoint whose net (`found`) is not the model's, naming the fields.
fn check_config(weights: &Path, found: &UNetConfig, model: &UNet) -> Result<()> {
    let differences = found.differences(model.config());
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::ConfigMismatch {
        path: sidecar_path(weights),
        differences,
    })
}

/// The checkpoint's tensors, checked against its sidecar, on the model's device.
fn read_model_tensors(
    weights: &Path,
    meta: &CheckpointMeta,
    model: &UNet,
) -> Result<HashMap<String, Tensor>> {
    let device = model
        .parameters()
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    read_tensors(weights, &meta.weights, &device)
}

/// The tensors a fine-tuning start took from another head: the classifier, when the class
/// counts differ.
const HEAD: [&str; 2] = ["classifier.weight", "classifier.bias"];

/// Starts `model` from the weights of the checkpoint at `weights` for fine-tuning: every tensor
/// is loaded, except that when only the class count differs, the 1x1 classifier keeps the
/// model's own (fresh) initialisation. Any other difference of configuration is an
/// [`Error::ConfigMismatch`]. Returns the sidecar and the names of the tensors not loaded.
pub fn load_checkpoint_for_fine_tuning(
    weights: impl AsRef<Path>,
    model: &UNet,
) -> Result<(CheckpointMeta, Vec<String>)> {
    let weights = weights.as_ref();
    let meta = read_checkpoint_meta(weights)?;
    let classes_apart = meta.config.n_classes != model.config().n_classes;
    let same_body = UNetConfig {
        n_classes: model.config().n_classes,
        ..meta.config.clone()
    };
    check_config(weights, &same_body, model)?;
    let mut tensors = read_model_tensors(weights, &meta, model)?;
    let mut fresh = Vec::new();
    if classes_apart {
        let own = model.state();
        for name in HEAD {
            // A copy: candle refuses to set a variable from its own storage.
            tensors.insert(name.to_string(), own[name].copy()?);
            fresh.push(name.to_string());
        }
    }
    model.load_state(&tensors)?;
    Ok((meta, fresh))
}

/// Restores the optimizer state saved with the checkpoint at `weights` into `optimizer`.
/// Returns `false` (and changes nothing) when the checkpoint holds no optimizer state; a state
/// of another optimizer kind is an error.
pub fn load_optimizer_state(
    weights: impl AsRef<Path>,
    optimizer: &mut dyn Optimizer,
) -> Result<bool> {
    let weights = weights.as_ref();
    let meta = read_checkpoint_meta(weights)?;
    let Some((kind, record)) = meta.optimizer else {
        return Ok(false);
    };
    if kind != optimizer.kind() {
        return Err(Error::Checkpoint {
            path: sidecar_path(weights),
            reason: format!(
                "the saved optimizer state is {kind}'s, the optimizer is {}",
                optimizer.kind()
            ),
        });
    }
    let state = read_tensors(&optimizer_path(weights), &record, &Device::Cpu)?;
    optimizer.load_state(&state)?;
    Ok(true)
}
