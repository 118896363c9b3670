//! BioImage Model Zoo packages (format 0.5): writing one from a checkpoint, and reading the
//! checkpoint back out of a package that unet-rs wrote.
//!
//! A package is a zip archive holding `rdf.yaml` (the description), the ONNX weights, the
//! test tensors, a README with the model's validation, a cover image and, as attachments, the
//! checkpoint itself (safetensors and its JSON sidecar), so `unet predict` runs the package
//! with the very tensors it was exported from.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use unet_model::size::{min_input_size, nearest_valid_input_sizes, output_size};
use unet_model::{CheckpointMeta, Encoder, Normalisation, Padding, UNet, Upsampling};

use crate::onnx::{onnx_model, INPUT_NAME, OPSET, OUTPUT_NAME};
use crate::{npy, yaml, Error, Result};

/// The format version of the rdf.yaml written: 0.5.4, which the model zoo's consumers
/// (deepImageJ, ilastik, napari's plug-in, bioimageio.core) read.
pub const FORMAT_VERSION: &str = "0.5.4";
/// The key under rdf.yaml's `config` where unet-rs records its own files.
pub const CONFIG_KEY: &str = "unet-rs";
/// The names of the files inside a package.
pub mod files {
    /// The description.
    pub const RDF: &str = "rdf.yaml";
    /// The documentation, with its "# Validation" section.
    pub const README: &str = "README.md";
    /// The cover: the test image beside its prediction.
    pub const COVER: &str = "cover.png";
    /// The ONNX weights.
    pub const ONNX: &str = "weights.onnx";
    /// The test input, `[1, channels, y, x]`, grey values 0-255 as f32.
    pub const TEST_INPUT: &str = "test_input.npy";
    /// The test output, `[1, classes, y', x']`, probabilities.
    pub const TEST_OUTPUT: &str = "test_output.npy";
    /// The checkpoint's weights (an attachment).
    pub const WEIGHTS: &str = "checkpoint.safetensors";
    /// The checkpoint's sidecar (an attachment).
    pub const SIDECAR: &str = "checkpoint.json";
}

/// The largest file a package may hold: far above any U-Net checkpoint, and a bound on what a
/// damaged or hostile archive can make the reader allocate.
pub const MAX_ENTRY_BYTES: u64 = 2 << 30;

/// An 8-bit grey image: the test input and the cover are cut from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width` grey values, row by row.
    pub pixels: Vec<u8>,
}

/// What the package says about the model beyond what the checkpoint knows.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageOptions {
    /// The model's name in the zoo.
    pub name: String,
    /// Its authors.
    pub authors: Vec<String>,
    /// Its SPDX license identifier.
    pub license: String,
    /// The wanted side of the test input in pixels (rounded down to a size the model takes).
    pub test_size: usize,
}

impl Default for PackageOptions {
    /// "unet-rs U-Net", by the unet-rs developers, MIT, a 256-pixel test input.
    fn default() -> Self {
        Self {
            name: "unet-rs U-Net".into(),
            authors: vec!["unet-rs developers".into()],
            license: "MIT".into(),
            test_size: 256,
        }
    }
}

/// The checkpoint a package carries: its sidecar's and weights' bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBytes {
    /// The JSON sidecar.
    pub sidecar: Vec<u8>,
    /// The safetensors weights.
    pub weights: Vec<u8>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The zoo's preprocessing step that equals `normalisation` on inputs of 8-bit grey values
/// (0-255): the model's statistics are in [0, 1] units, so fixed ones are scaled by 255, and
/// per-sample ones (over y and x, each channel on its own, as `unet predict` normalises) do
/// not change.
pub fn preprocessing(normalisation: &Normalisation) -> Result<Value> {
    Ok(match normalisation {
        Normalisation::Dataset { mean, std } => json!({
            "id": "fixed_zero_mean_unit_variance",
            "kwargs": {"mean": mean * 255.0, "std": std * 255.0},
        }),
        Normalisation::DatasetPerChannel { mean, std } => json!({
            "id": "fixed_zero_mean_unit_variance",
            "kwargs": {
                "axis": "channel",
                "mean": mean.iter().map(|m| m * 255.0).collect::<Vec<_>>(),
                "std": std.iter().map(|s| s * 255.0).collect::<Vec<_>>(),
            },
        }),
        Normalisation::PerImage => json!({
            "id": "zero_mean_unit_variance",
            "kwargs": {"axes": ["y", "x"], "eps": ZOO_EPS},
        }),
        &Normalisation::Percentile { low, high } => {
            // The zoo takes the upper percentile > 1, to catch fractions given as percents.
            if high <= 1.0 {
                return Err(Error::Unsupported {
                    what: "the normalisation".into(),
                    reason: format!(
                        "the model zoo's scale_range needs an upper percentile above 1 (this \
                         model's is {high})"
                    ),
                });
            }
            json!({
                "id": "scale_range",
                "kwargs": {
                    "axes": ["y", "x"],
                    "min_percentile": low,
                    "max_percentile": high,
                    "eps": ZOO_EPS,
                },
            })
        }
    })
}

/// The zoo's epsilon of its normalisations (their default).
const ZOO_EPS: f64 = 1e-6;

/// One sample's values (`channels` planes of grey values 0-255) normalised as the zoo's step of
/// [`preprocessing`] does, each channel on its own: `(x - mean) / (std + eps)`, and percentiles
/// by linear interpolation (`numpy.quantile`'s default) mapped by `(x - lo) / (hi - lo + eps)`.
/// `unet predict`'s own [`Normalisation::apply`] differs only in the eps and in taking the
/// nearest rank for a percentile; the test output is computed from these values so that a zoo
/// consumer reproduces it.
pub fn normalise_as_the_zoo(
    values: &[f32],
    channels: usize,
    normalisation: &Normalisation,
) -> Vec<f32> {
    let plane = values.len() / channels.max(1);
    if plane == 0 {
        return Vec::new();
    }
    values
        .chunks(plane)
        .enumerate()
        .flat_map(|(c, values)| normalise_plane_as_the_zoo(values, c, normalisation))
        .collect()
}

/// [`normalise_as_the_zoo`] of channel `channel`'s plane.
fn normalise_plane_as_the_zoo(
    values: &[f32],
    channel: usize,
    normalisation: &Normalisation,
) -> Vec<f32> {
    let n = values.len().max(1) as f64;
    let fixed = |mean: f64, std: f64| {
        let (mean, std) = ((mean * 255.0) as f32, (std * 255.0) as f32);
        values.iter().map(|&v| (v - mean) / std).collect()
    };
    match normalisation {
        &Normalisation::Dataset { mean, std } => fixed(mean, std),
        Normalisation::DatasetPerChannel { mean, std } => fixed(mean[channel], std[channel]),
        Normalisation::PerImage => {
            let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = values
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let scale = var.sqrt() + ZOO_EPS;
            values
                .iter()
                .map(|&v| ((f64::from(v) - mean) / scale) as f32)
                .collect()
        }
        &Normalisation::Percentile { low, high } => {
            let mut sorted: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            sorted.sort_unstable_by(f64::total_cmp);
            let at = |p: f64| {
                let pos = p / 100.0 * (sorted.len().saturating_sub(1)) as f64;
                let (i, frac) = (pos.floor() as usize, pos - pos.floor());
                let next = sorted[(i + 1).min(sorted.len() - 1)];
                sorted[i] + frac * (next - sorted[i])
            };
            if sorted.is_empty() {
                return Vec::new();
            }
            let (lo, hi) = (at(low), at(high));
            values
                .iter()
                .map(|&v| ((f64::from(v) - lo) / (hi - lo + ZOO_EPS)) as f32)
                .collect()
        }
    }
}

/// The test tensors: the centre crop of `sample` at the largest size the model takes up to
/// `size`, as `[1, C, s, s]` grey values (the grey plane repeated for each input channel), and
/// the model's probabilities for it, `[1, classes, s', s']`.
struct TestTensors {
    side: usize,
    input: Vec<f32>,
    out_side: usize,
    output: Vec<f32>,
}

fn test_tensors(
    model: &UNet,
    normalisation: &Normalisation,
    sample: &Sample,
    size: usize,
) -> Result<TestTensors> {
    let cfg = model.config();
    let want = size.min(sample.height).min(sample.width);
    let side = nearest_valid_input_sizes(cfg, want)
        .below
        .map(|(s, _)| s)
        .ok_or_else(|| Error::Unsupported {
            what: "the sample image".into(),
            reason: format!(
                "it has {}x{} pixels, fewer than the model's smallest input of {} pixels a side",
                sample.height,
                sample.width,
                min_input_size(cfg)
            ),
        })?;
    let (top, left) = ((sample.height - side) / 2, (sample.width - side) / 2);
    let mut plane = Vec::with_capacity(side * side);
    for y in top..top + side {
        let row = &sample.pixels[y * sample.width + left..y * sample.width + left + side];
        plane.extend(row.iter().map(|&v| f32::from(v)));
    }
    let input: Vec<f32> = std::iter::repeat_n(plane.iter().copied(), cfg.in_channels)
        .flatten()
        .collect();
    let normalised = normalise_as_the_zoo(&input, cfg.in_channels, normalisation);
    let device = Device::Cpu;
    let x = Tensor::from_vec(normalised, (1, cfg.in_channels, side, side), &device)?;
    let model = on_cpu(model)?;
    let logits = model.forward(&x)?;
    let probs = candle_nn::ops::softmax(&logits, 1)?;
    let out_side = probs.dim(2)?;
    let output = probs.flatten_all()?.to_vec1::<f32>()?;
    Ok(TestTensors {
        side,
        input,
        out_side,
        output,
    })
}

/// The model itself when it is on the CPU, else a CPU copy (the test output is the CPU's).
fn on_cpu(model: &UNet) -> Result<UNet> {
    if model
        .parameters()
        .first()
        .is_none_or(|(_, v)| v.device().is_cpu())
    {
        return Ok(model.clone());
    }
    let copy = UNet::seeded(model.config(), 0, &Device::Cpu)?;
    let state = model
        .state()
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    copy.load_state(&state)?;
    Ok(copy)
}

/// The cover: the test input's centre (the part the output covers) beside P(last class), in
/// grey, 2:1 as the zoo recommends.
fn cover(t: &TestTensors, n_classes: usize) -> Result<Vec<u8>> {
    let (s, o) = (t.side, t.out_side);
    let off = (s - o) / 2;
    let class = n_classes - 1;
    let mut pixels = Vec::with_capacity(2 * o * o);
    for y in 0..o {
        for x in 0..o {
            pixels.push(t.input[(y + off) * s + x + off].clamp(0.0, 255.0) as u8);
        }
        for x in 0..o {
            let p = t.output[class * o * o + y * o + x];
            pixels.push((p * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    Ok(unet_data::encode_png_grey(o, 2 * o, &pixels)?)
}

/// What the model's input images are, in words: grey, or of N channels.
fn image_kind(in_channels: usize) -> String {
    match in_channels {
        1 => "grey images".into(),
        n => format!("images of {n} channels"),
    }
}

/// The output's class names: membrane and cell for the ISBI's two classes.
fn class_names(n_classes: usize) -> Vec<String> {
    match n_classes {
        2 => vec!["membrane".into(), "cell".into()],
        n => (0..n).map(|c| format!("class{c}")).collect(),
    }
}

fn describe_normalisation(n: &Normalisation) -> String {
    match n {
        Normalisation::DatasetPerChannel { mean, std } => {
            let each: Vec<String> = mean
                .iter()
                .zip(std)
                .enumerate()
                .map(|(c, (m, s))| {
                    format!("channel {c}: mean {:.2}, std {:.2}", m * 255.0, s * 255.0)
                })
                .collect();
            format!(
                "each channel by fixed statistics of the training sections, in grey values ({})",
                each.join("; ")
            )
        }
        &Normalisation::Dataset { mean, std } => format!(
            "fixed statistics of the training sections: mean {mean:.4}, standard deviation \
             {std:.4} in [0, 1] units ({:.2} and {:.2} in grey values)",
            mean * 255.0,
            std * 255.0
        ),
        Normalisation::PerImage => "each image channel by its own mean and standard deviation \
                                    (over all its pixels)"
            .into(),
        Normalisation::Percentile { low, high } => {
            format!("each image channel's {low} and {high} percentiles mapped to 0 and 1")
        }
    }
}

fn architecture(model: &UNet) -> String {
    let cfg = model.config();
    let padding = match cfg.padding {
        Padding::Valid => "valid",
        Padding::Same => "same",
    };
    let up = match cfg.upsampling {
        Upsampling::Transposed => "2x2 up-convolutions".to_string(),
        Upsampling::Bilinear { align_corners } => {
            format!("bilinear up-sampling (align_corners={align_corners}) and 1x1 convolutions")
        }
    };
    let encoder = match cfg.encoder {
        Encoder::Plain => format!(
            "depth {}, widths {}-{}",
            cfg.depth,
            cfg.width(0),
            cfg.width(cfg.depth - 1)
        ),
        other => format!(
            "a {} encoder, decoder widths {}-{}",
            other.name(),
            cfg.width(cfg.depth - 2),
            cfg.width(0)
        ),
    };
    format!(
        "a U-Net (Ronneberger et al. 2015) with {encoder}, {padding} padding, {}batch norm, \
         {up}; {} input channel(s), {} classes; {} trainable parameters",
        if cfg.batch_norm { "" } else { "no " },
        cfg.in_channels,
        cfg.n_classes,
        model.parameter_count()
    )
}

/// The "# Validation" section: the training settings and the scores the sidecar records.
fn validation_section(meta: &CheckpointMeta) -> String {
    let m = &meta.metrics;
    let tc = &m["train_config"];
    let mut text = String::from("# Validation\n\n");
    if tc.is_object() {
        let get = |k: &str| match &tc[k] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!(
            "Trained with unet-rs (`unet train`), recipe `{}`: {} epochs (this checkpoint is \
             epoch {}), batch size {}, input tiles of {} pixels, loss `{}`, optimizer {}, \
             learning-rate schedule {}, augmentation `{}`, seed {}, data split {}.\n\n",
            get("recipe"),
            get("epochs"),
            meta.epoch,
            get("batch_size"),
            get("input_tile"),
            get("loss"),
            get("optimizer"),
            get("schedule"),
            get("augmentation"),
            get("seed"),
            get("split"),
        ));
    } else {
        text.push_str(&format!(
            "The checkpoint records no training settings; it is epoch {}.\n\n",
            meta.epoch
        ));
    }
    let v = &m["record"]["validation"];
    let score = |x: &Value| x.as_f64().map_or("-".to_string(), |f| format!("{f:.4}"));
    if v.is_object() {
        text.push_str(
            "Scored on the held-out validation sections (the ISBI 2012 training stack's \
             sections 27-29 under the reference split), whole sections, at the end of the \
             epoch this checkpoint is from:\n\n\
             | score | value |\n| --- | --- |\n",
        );
        for (name, key) in [
            ("pixel accuracy (P > 0.5)", "pixel_accuracy"),
            ("mean IoU (P > 0.5)", "mean_iou"),
            ("Dice", "dice"),
            ("V-Rand (ISBI 2012)", "v_rand"),
            ("V-Info (ISBI 2012)", "v_info"),
        ] {
            text.push_str(&format!("| {name} | {} |\n", score(&v[key])));
        }
        let c = &v["calibrated"];
        if c.is_object() {
            text.push_str(&format!(
                "| pixel accuracy at the decision point fitted on training sections | {} |\n\
                 | mean IoU there | {} |\n",
                score(&c["pixel_accuracy"]),
                score(&c["mean_iou"])
            ));
        }
        text.push('\n');
    } else {
        text.push_str("The checkpoint records no validation scores.\n\n");
    }
    let cal = &m["calibration"];
    if cal.is_object() {
        text.push_str(&format!(
            "The decision point was then moved to P = 0.5 by a logit offset of {} fitted on the \
             training sections (`unet calibrate`) and folded into the classifier, so the \
             probabilities in this package already include it.\n\n",
            score(&cal["logit_offset"])
        ));
    }
    text
}

fn readme(
    model: &UNet,
    meta: &CheckpointMeta,
    normalisation: &Normalisation,
    recorded: bool,
) -> String {
    let cfg = model.config();
    let mut text = format!(
        "# {name}\n\n\
         Per-pixel class probabilities ({classes}) of 2-D {images}: {arch}.\n\n\
         Exported by unet-rs {version} (`unet export`). The ONNX weights (opset {OPSET}) hold \
         the network with its batch norms folded into the convolutions and a softmax over the \
         classes; the attached `{weights}` and `{sidecar}` are the unet-rs checkpoint itself \
         (`unet predict --model` runs this package).\n\n\
         ## Input\n\n\
         8-bit grey values (0-255) as float32, axes batch, channel, y, x (a 16-bit or float \
         image scaled to that range first, as `unet predict` scales it to [0, 1]). The model \
         normalises {norm}{note}; the package's preprocessing step does the same.\n\n",
        name = "U-Net (unet-rs)",
        images = image_kind(cfg.in_channels),
        classes = class_names(cfg.n_classes).join(", "),
        arch = architecture(model),
        version = env!("CARGO_PKG_VERSION"),
        weights = files::WEIGHTS,
        sidecar = files::SIDECAR,
        norm = describe_normalisation(normalisation),
        note = if recorded {
            ""
        } else {
            " (the checkpoint records no normalisation; this is what `unet predict` falls \
             back to)"
        },
    );
    text.push_str(&match cfg.padding {
        Padding::Same => "Same padding: the output has the input's size. Tiles of a larger \
                          image are best overlapped (unet-rs blends them with Gaussian \
                          weights).\n\n"
            .to_string(),
        Padding::Valid => {
            let min = min_input_size(cfg);
            let shrink = min - output_size(cfg, min).unwrap_or(min);
            format!(
                "Valid padding: the output lacks {} pixels on each side of the input (its \
                 size is the input's minus {shrink}); tiles of a larger image need that much \
                 context, mirrored at the image border.\n\n",
                shrink / 2
            )
        }
    });
    text.push_str(&validation_section(meta));
    text.push_str(
        "# References\n\n\
         - O. Ronneberger, P. Fischer, T. Brox: U-Net: Convolutional Networks for Biomedical \
         Image Segmentation. MICCAI 2015.\n\
         - I. Arganda-Carreras et al.: Crowdsourcing the creation of image segmentation \
         algorithms for connectomics. Frontiers in Neuroanatomy 9, 2015 (the ISBI 2012 \
         challenge).\n\
         - A. Cardona et al.: An integrated micro- and macroarchitectural analysis of the \
         Drosophila brain by computer-assisted serial section electron microscopy. PLoS \
         Biology 8(10), 2010 (the data).\n",
    );
    text
}

fn axis_size(min: usize, step: usize) -> Value {
    json!({"min": min, "step": step})
}

/// The package's files, in the order they are written: the description last but one of
/// nothing (rdf.yaml first, for readers that look at the start).
fn package_files(
    model: &UNet,
    meta: &CheckpointMeta,
    checkpoint: &CheckpointBytes,
    sample: &Sample,
    opts: &PackageOptions,
) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let cfg = model.config();
    let recorded = meta.normalisation.is_some();
    let normalisation = meta
        .normalisation
        .clone()
        .unwrap_or(Normalisation::PerImage);
    let pre = preprocessing(&normalisation)?;
    let tests = test_tensors(model, &normalisation, sample, opts.test_size)?;
    let onnx = onnx_model(model)?;
    let test_input = npy::to_npy(&[1, cfg.in_channels, tests.side, tests.side], &tests.input);
    let test_output = npy::to_npy(
        &[1, cfg.n_classes, tests.out_side, tests.out_side],
        &tests.output,
    );
    let cover = cover(&tests, cfg.n_classes)?;
    let readme = readme(model, meta, &normalisation, recorded);

    let min = min_input_size(cfg);
    let step = unet_model::size::input_size_step(cfg);
    let offset = output_size(cfg, min)? as i64 - min as i64;
    let in_axis = |id: &str| json!({"type": "space", "id": id, "size": axis_size(min, step)});
    // A valid-padding net crops its own halo: the zoo declares that as the output size's
    // offset from the input's (a `halo` would be cropped once more by the consumer).
    let out_axis = |id: &str| {
        json!({
            "type": "space",
            "id": id,
            "size": {"tensor_id": INPUT_NAME, "axis_id": id, "offset": offset},
        })
    };
    let channel_names: Vec<String> = match cfg.in_channels {
        1 => vec!["grey".into()],
        n => (0..n).map(|c| format!("channel{c}")).collect(),
    };
    let entry = |source: &str, bytes: &[u8]| json!({"source": source, "sha256": sha256_hex(bytes)});
    let rdf = json!({
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": opts.name,
        "description": format!(
            "U-Net segmentation of 2-D {} into {} (per-pixel probabilities), trained with \
             unet-rs",
            image_kind(cfg.in_channels),
            class_names(cfg.n_classes).join(" and ")
        ),
        "authors": opts.authors.iter().map(|a| json!({"name": a})).collect::<Vec<_>>(),
        "cite": [
            {
                "text": "Ronneberger, O., Fischer, P., Brox, T.: U-Net: Convolutional Networks \
                         for Biomedical Image Segmentation. MICCAI 2015",
                "doi": "10.1007/978-3-319-24574-4_28",
            },
            {
                "text": "Arganda-Carreras, I. et al.: Crowdsourcing the creation of image \
                         segmentation algorithms for connectomics. Front. Neuroanat. 9 (2015), \
                         the ISBI 2012 challenge data",
                "doi": "10.3389/fnana.2015.00142",
            },
        ],
        "license": opts.license,
        "git_repo": env!("CARGO_PKG_REPOSITORY"),
        "documentation": files::README,
        "covers": [files::COVER],
        "tags": ["unet", "unet-rs", "segmentation", "semantic-segmentation", "2d",
                 "electron-microscopy", "isbi2012", "onnx"],
        "inputs": [{
            "id": INPUT_NAME,
            "description": "grey values 0-255 (an 8-bit image), float32",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": channel_names},
                in_axis("y"),
                in_axis("x"),
            ],
            "test_tensor": entry(files::TEST_INPUT, &test_input),
            "data": {"type": "float32"},
            "preprocessing": [pre],
        }],
        "outputs": [{
            "id": OUTPUT_NAME,
            "description": "per-class probabilities (softmax over the channel axis)",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": class_names(cfg.n_classes)},
                out_axis("y"),
                out_axis("x"),
            ],
            "test_tensor": entry(files::TEST_OUTPUT, &test_output),
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {
            "onnx": {
                "source": files::ONNX,
                "sha256": sha256_hex(&onnx),
                "opset_version": OPSET,
            },
        },
        "attachments": [
            entry(files::WEIGHTS, &checkpoint.weights),
            entry(files::SIDECAR, &checkpoint.sidecar),
        ],
        "config": {
            CONFIG_KEY: {
                "version": env!("CARGO_PKG_VERSION"),
                "weights": files::WEIGHTS,
                "sidecar": files::SIDECAR,
            },
        },
    });
    Ok(vec![
        (files::RDF, yaml::to_yaml(&rdf).into_bytes()),
        (files::README, readme.into_bytes()),
        (files::COVER, cover),
        (files::ONNX, onnx),
        (files::TEST_INPUT, test_input),
        (files::TEST_OUTPUT, test_output),
        (files::WEIGHTS, checkpoint.weights.clone()),
        (files::SIDECAR, checkpoint.sidecar.clone()),
    ])
}

/// A BioImage Model Zoo package (the zip archive's bytes) of `model`, whose checkpoint is
/// `checkpoint` (its sidecar parsed as `meta`), with test tensors and a cover cut from
/// `sample`.
pub fn package(
    model: &UNet,
    meta: &CheckpointMeta,
    checkpoint: &CheckpointBytes,
    sample: &Sample,
    opts: &PackageOptions,
) -> Result<Vec<u8>> {
    let files = package_files(model, meta, checkpoint, sample, opts)?;
    let zip_error = |e: zip::result::ZipError| Error::Unsupported {
        what: "the package".into(),
        reason: format!("writing the zip archive failed: {e}"),
    };
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (name, bytes) in files {
        zip.start_file(name, options).map_err(zip_error)?;
        zip.write_all(&bytes).map_err(|e| Error::Unsupported {
            what: "the package".into(),
            reason: format!("writing {name} into the zip archive failed: {e}"),
        })?;
    }
    Ok(zip.finish().map_err(zip_error)?.into_inner())
}

/// Reads one file of the archive, bounded by [`MAX_ENTRY_BYTES`].
fn read_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    path: &Path,
    name: &str,
) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::Package {
        path: path.join(name),
        reason,
    };
    let mut file = archive
        .by_name(name)
        .map_err(|e| fail(format!("not in the package ({e})")))?;
    if file.size() > MAX_ENTRY_BYTES {
        return Err(fail(format!(
            "declares {} bytes, more than the {MAX_ENTRY_BYTES} a package file may hold",
            file.size()
        )));
    }
    // The declared size is a hint only: a damaged archive may lie, so the reading is bounded.
    let mut bytes = Vec::with_capacity(file.size().min(1 << 26) as usize);
    file.by_ref()
        .take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(fail(format!(
            "holds more than the {MAX_ENTRY_BYTES} bytes a package file may hold"
        )));
    }
    Ok(bytes)
}

/// A string at `keys` of a YAML document.
fn yaml_str<'a>(doc: &'a yaml_rust2::Yaml, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .try_fold(doc, |d, k| match &d[*k] {
            yaml_rust2::Yaml::BadValue => None,
            v => Some(v),
        })?
        .as_str()
}

/// The checkpoint inside a package that unet-rs exported (the archive's bytes; `path` names it
/// in errors). Every file rdf.yaml lists with a SHA-256 (the ONNX weights, the test tensors,
/// the attachments) is checked against it; a package of another tool is refused, naming what
/// is missing.
pub fn read_package_bytes(bytes: &[u8], path: &Path) -> Result<CheckpointBytes> {
    let fail = |reason: String| Error::Package {
        path: path.to_path_buf(),
        reason,
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        fail(format!(
            "not a zip archive (a model zoo package is one): {e}"
        ))
    })?;
    let rdf_path = path.join(files::RDF);
    let rdf = read_entry(&mut archive, path, files::RDF)?;
    let rdf_fail = |reason: String| Error::Package {
        path: rdf_path.clone(),
        reason,
    };
    let text = std::str::from_utf8(&rdf).map_err(|_| rdf_fail("not UTF-8 text".into()))?;
    let docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| rdf_fail(format!("not valid YAML: {e}")))?;
    let doc = docs
        .first()
        .ok_or_else(|| rdf_fail("an empty document".into()))?;
    let (Some(weights), Some(sidecar)) = (
        yaml_str(doc, &["config", CONFIG_KEY, "weights"]),
        yaml_str(doc, &["config", CONFIG_KEY, "sidecar"]),
    ) else {
        return Err(rdf_fail(format!(
            "not a package exported by unet-rs (no config.{CONFIG_KEY}.weights and .sidecar); \
             `unet predict` runs only those, other zoo models need a zoo runtime"
        )));
    };
    // Every file with a recorded digest, so a damaged package is caught whichever file it hit.
    let mut listed: Vec<(String, String)> = Vec::new();
    let mut push = |node: &yaml_rust2::Yaml| {
        if let (Some(source), Some(sha)) = (node["source"].as_str(), node["sha256"].as_str()) {
            listed.push((source.to_string(), sha.to_string()));
        }
    };
    if let Some(items) = doc["attachments"].as_vec() {
        items.iter().for_each(&mut push);
    }
    if let Some(weights) = doc["weights"].as_hash() {
        weights.values().for_each(&mut push);
    }
    for io in ["inputs", "outputs"] {
        if let Some(tensors) = doc[io].as_vec() {
            tensors.iter().for_each(|t| push(&t["test_tensor"]));
        }
    }
    for needed in [weights, sidecar] {
        if !listed.iter().any(|(s, _)| s == needed) {
            return Err(rdf_fail(format!(
                "{needed} is not listed with its sha256 among the attachments"
            )));
        }
    }
    let mut found = (None, None);
    for (source, sha) in &listed {
        let bytes = read_entry(&mut archive, path, source)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(sha) {
            return Err(Error::Package {
                path: path.join(source),
                reason: format!("damaged: its SHA-256 is {actual}, rdf.yaml records {sha}"),
            });
        }
        if source == weights {
            found.0 = Some(bytes);
        } else if source == sidecar {
            found.1 = Some(bytes);
        }
    }
    match found {
        (Some(weights), Some(sidecar)) => Ok(CheckpointBytes { sidecar, weights }),
        _ => Err(rdf_fail(
            "the weights and the sidecar must be two different files".into(),
        )),
    }
}

/// [`read_package_bytes`] of the file at `path`.
pub fn read_package(path: impl AsRef<Path>) -> Result<CheckpointBytes> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_package_bytes(&bytes, path)
}

/// Whether `path` names a model zoo package by its name (`*.zip`).
pub fn is_package_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// The net and sidecar of a model file: a `.safetensors` checkpoint with its `.json` sidecar, or a
/// `.bioimageio.zip` package that [`package`] wrote (told apart by [`is_package_path`]). The one
/// rule `unet predict` and the Python package share.
pub fn load_model_or_package(path: &Path, device: &Device) -> Result<(UNet, CheckpointMeta)> {
    if is_package_path(path) {
        let bytes = read_package(path)?;
        let name = path.display().to_string();
        Ok(unet_model::load_model_from_bytes(
            &name,
            &bytes.sidecar,
            &bytes.weights,
            device,
        )?)
    } else {
        Ok(unet_model::load_model(path, device)?)
    }
}

/// The name of a file inside a package, for messages: `package.zip/file`.
pub fn inside(package: &Path, file: &str) -> PathBuf {
    package.join(file)
}
