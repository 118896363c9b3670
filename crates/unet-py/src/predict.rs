//! `unet_rs.predict`: P(cell), or every class's probability, by overlap-tile prediction on the
//! CPU through `unet_model`, as `unet predict` computes it.

use std::path::{Path, PathBuf};

use candle_core::Device;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use unet_export::load_model_or_package;
use unet_model::tiling::TileOptions;
use unet_model::{
    overlap_tile_predict, overlap_tile_predict_probs, CheckpointMeta, Normalisation, UNet,
};

use crate::convert::{check_shape, read_grey, to_array, unravel};

/// The output tile `unet predict` uses by default: 512 covers an ISBI section in one tile, and
/// for same-padding nets fewer tile edges score better (docs/RESULTS.md).
pub const OUTPUT_TILE: usize = 512;

/// Why a prediction failed, and so which Python exception it becomes.
#[derive(Debug)]
pub enum PredictError {
    /// The model file is missing (FileNotFoundError).
    NotFound(String),
    /// The model could not be read or loaded (OSError).
    Model(String),
    /// The image does not fit the model (ValueError).
    Input(String),
}

impl From<PredictError> for PyErr {
    fn from(e: PredictError) -> PyErr {
        match e {
            PredictError::NotFound(m) => PyFileNotFoundError::new_err(m),
            PredictError::Model(m) => PyOSError::new_err(m),
            PredictError::Input(m) => PyValueError::new_err(m),
        }
    }
}

/// The net of the checkpoint `model` (a `.safetensors` file with its `.json` sidecar, or a
/// `.bioimageio.zip` package that `unet export` wrote), or the built-in default model when
/// `model` is `None`; with its sidecar and a name for messages.
pub fn open_model(model: Option<&Path>) -> Result<(UNet, CheckpointMeta, String), PredictError> {
    let device = Device::Cpu;
    let Some(path) = model else {
        let loaded = unet_model::builtin::builtin_model(&device).ok_or_else(|| {
            PredictError::Model(
                "this unet_rs was built without the built-in default model: pass model=PATH"
                    .to_string(),
            )
        })?;
        let (net, meta) = loaded.map_err(|e| {
            PredictError::Model(format!("loading {}: {e}", unet_model::builtin::NAME))
        })?;
        return Ok((net, meta, unet_model::builtin::NAME.to_string()));
    };
    let name = path.display().to_string();
    if !path.is_file() {
        return Err(PredictError::NotFound(format!(
            "{name}: no such checkpoint file (a .safetensors checkpoint with its .json \
             sidecar, or a .bioimageio.zip package)"
        )));
    }
    let (net, meta) = load_model_or_package(path, &device)
        .map_err(|e| PredictError::Model(format!("loading {name}: {e}")))?;
    Ok((net, meta, name))
}

/// How an input array's axes map to pages and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Images to predict.
    pub pages: usize,
    /// Channels per image (the model's).
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// The shape of the result.
    pub out_shape: Vec<usize>,
}

/// Reads `shape` for a model of `channels` input channels and `classes` classes: (H, W) and
/// (N, H, W) for one channel, (C, H, W) and (N, C, H, W) for several. The result is P(cell) of
/// the image's shape without its channels, or with more than two classes every class's
/// probability: (K, H, W), (N, K, H, W).
pub fn layout(shape: &[usize], channels: usize, classes: usize) -> Result<Layout, String> {
    let make = |pages, height, width, mut out_shape: Vec<usize>| {
        if classes > 2 {
            out_shape.insert(out_shape.len() - 2, classes);
        }
        Layout {
            pages,
            channels,
            height,
            width,
            out_shape,
        }
    };
    match (shape, channels) {
        (&[h, w], 1) => Ok(make(1, h, w, vec![h, w])),
        (&[n, h, w], 1) => Ok(make(n, h, w, vec![n, h, w])),
        (&[c, h, w], _) if c == channels => Ok(make(1, h, w, vec![h, w])),
        (&[n, c, h, w], _) if c == channels => Ok(make(n, h, w, vec![n, h, w])),
        _ => Err(format!(
            "image of shape {shape:?} does not fit a model with {channels} input channel(s): \
             give {}",
            if channels == 1 {
                "(H, W) or (N, H, W)".to_string()
            } else {
                format!("({channels}, H, W) or (N, {channels}, H, W)")
            }
        )),
    }
}

/// P(cell) of every page of `image` (pages of `channels` planes), or every class's probability
/// for a model of more than two classes (page after page, class-major), as `unet predict`
/// computes it: the model's normalisation applied to each page, then overlap-tile prediction.
fn predict_pages(
    net: &UNet,
    meta: &CheckpointMeta,
    image: Vec<f32>,
    layout: &Layout,
    tta: bool,
) -> Result<Vec<f32>, PredictError> {
    let normalisation = meta
        .normalisation
        .clone()
        .unwrap_or(Normalisation::PerImage);
    let opts = TileOptions {
        output_tile: OUTPUT_TILE,
        tta,
        batch_size: TileOptions::batch_size_for(&Device::Cpu),
        ..TileOptions::default()
    };
    let (h, w) = (layout.height, layout.width);
    let page_len = layout.channels * h * w;
    let mut prob = Vec::with_capacity(layout.pages * h * w);
    for (p, page) in image.chunks_exact(page_len).enumerate() {
        let mut page = page.to_vec();
        normalisation.apply(&mut page, layout.channels);
        let planes = match net.config().n_classes {
            2 => overlap_tile_predict(net, &page, h, w, &opts),
            _ => overlap_tile_predict_probs(net, &page, h, w, &opts),
        }
        .map_err(|e| PredictError::Input(format!("image {p}: {e}")))?;
        prob.extend(planes);
    }
    Ok(prob)
}

/// P(cell) for every pixel, by the paper's overlap-tile prediction on the CPU (mirrored
/// borders, any image size), exactly as `unet predict` computes it: the model's stored input
/// normalisation, tiles of 512 output pixels, Gaussian blending of overlaps for same-padding
/// nets.
///
/// Args:
///     image: (H, W) or a stack (N, H, W) of grey images (for a model of C > 1 channels:
///         (C, H, W) or (N, C, H, W)); any numeric dtype: uint8 is divided by 255, uint16 by
///         65535, floats are grey values in [0, 1] units.
///     model: None for the built-in default model (models/default), or the path of a
///         `.safetensors` checkpoint (its `.json` sidecar beside it) or of a
///         `.bioimageio.zip` package written by `unet export`.
///     tta: test-time augmentation, the mean over the 8 flips and quarter turns (8x slower).
///
/// Returns:
///     float32 P(cell) in [0, 1] of shape (H, W), or (N, H, W) for a stack; for a model of
///     K > 2 classes every class's probability, (K, H, W) or (N, K, H, W), summing to 1 over
///     the classes; C-contiguous.
///
/// Raises:
///     FileNotFoundError: the model file does not exist.
///     OSError: the model cannot be read or loaded.
///     ValueError: an image shape that does not fit the model, an empty image, values that
///         are NaN or infinite.
///     TypeError: an image that does not hold numbers.
#[pyfunction]
#[pyo3(signature = (image, model=None, tta=false))]
pub fn predict<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    model: Option<PathBuf>,
    tta: bool,
) -> PyResult<Bound<'py, numpy::PyArrayDyn<f32>>> {
    let (image, shape) = read_grey(image, "image")?;
    check_shape(
        &shape,
        &[2, 3, 4],
        "image",
        "(H, W), (N, H, W), (C, H, W) or (N, C, H, W)",
    )?;
    if let Some(i) = image.iter().position(|v| !v.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "image holds {} at {:?}",
            image[i],
            unravel(i, &shape)
        )));
    }
    let (prob, out_shape) = py.detach(move || {
        let (net, meta, _name) = open_model(model.as_deref())?;
        let cfg = net.config();
        let layout = layout(&shape, cfg.in_channels, cfg.n_classes).map_err(PredictError::Input)?;
        let prob = predict_pages(&net, &meta, image, &layout, tta)?;
        Ok::<_, PredictError>((prob, layout.out_shape))
    })?;
    to_array(py, prob, &out_shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_of_grey_and_multi_channel_models() {
        let l = layout(&[4, 5], 1, 2).unwrap();
        assert_eq!(
            (l.pages, l.height, l.width, l.out_shape),
            (1, 4, 5, vec![4, 5])
        );
        let l = layout(&[3, 4, 5], 1, 2).unwrap();
        assert_eq!((l.pages, l.out_shape), (3, vec![3, 4, 5]));
        let l = layout(&[3, 4, 5], 3, 2).unwrap();
        assert_eq!((l.pages, l.channels, l.out_shape), (1, 3, vec![4, 5]));
        let l = layout(&[2, 3, 4, 5], 3, 2).unwrap();
        assert_eq!((l.pages, l.out_shape), (2, vec![2, 4, 5]));
        // Three classes: a class axis before (H, W).
        assert_eq!(layout(&[4, 5], 1, 3).unwrap().out_shape, vec![3, 4, 5]);
        assert_eq!(
            layout(&[2, 3, 4, 5], 3, 4).unwrap().out_shape,
            vec![2, 4, 4, 5]
        );
        assert!(layout(&[2, 3, 4, 5], 1, 2)
            .unwrap_err()
            .contains("(H, W) or (N, H, W)"));
        assert!(layout(&[4, 5], 3, 2).unwrap_err().contains("(3, H, W)"));
    }

    #[test]
    fn a_missing_model_is_not_found() {
        let err = open_model(Some(Path::new("/nonexistent/m.safetensors"))).unwrap_err();
        assert!(
            matches!(err, PredictError::NotFound(m) if m.contains("/nonexistent/m.safetensors"))
        );
    }

    #[test]
    fn the_builtin_model_predicts_probabilities() {
        let (net, meta, name) = open_model(None).unwrap();
        assert_eq!(name, unet_model::builtin::NAME);
        let layout = layout(&[20, 24], 1, 2).unwrap();
        let image: Vec<f32> = (0..20 * 24).map(|i| (i % 7) as f32 / 7.0).collect();
        let prob = predict_pages(&net, &meta, image, &layout, false).unwrap();
        assert_eq!(prob.len(), 20 * 24);
        assert!(prob.iter().all(|p| (0.0..=1.0).contains(p)));
    }
}
