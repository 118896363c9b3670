//! Overlap-tile prediction: segment an image of any size, 1x1 up to far larger than one forward
//! pass can hold, tile by tile (the paper's "overlap-tile strategy").
//!
//! **Valid padding.** Each output tile needs a border of context (92 pixels per side for the
//! paper's net); at the image border the missing context is mirrored. Tile origins lie on a
//! grid of `2^(depth-1)` pixels (the max-pools' period), so every tile sees the same pooling
//! phase as one pass over the whole mirrored image: the stitched result equals that pass, with
//! no seam. Neighbouring tiles may overlap by less than `2^(depth-1)` pixels; there both tiles
//! computed the same values and each pixel is taken from one of them.
//!
//! **Same padding.** The convs zero-pad every tile, so predictions near a tile edge differ from
//! the ones a larger view would give. Tiles overlap by [`TileOptions::overlap`] pixels and are
//! blended with weights that fall towards the tile edges ([`Blend`]). The tile grid is centred
//! on the image and the part beyond the image is mirrored.
//!
//! Mirroring reflects about the edge pixel without repeating it (`2 1 | 0 1 2 3 | 2 1`), and
//! repeats periodically, so even a 1x1 image gets its full context.
//!
//! Memory is bounded by [`TileOptions::batch_size`] tiles per forward pass plus the output
//! (and, with TTA, one transformed copy of image and output), not by the image size.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use unet_model::{overlap_tile_predict, Padding, TileOptions, UNet, UNetConfig};
//!
//! # fn main() -> unet_model::Result<()> {
//! let cfg = UNetConfig { depth: 3, base_width: 4, padding: Padding::Valid, ..UNetConfig::small() };
//! let varmap = VarMap::new();
//! let model = UNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
//! model.init_seeded(1)?;
//!
//! // 37 x 70 fits no tile grid: the result still has one P(cell) per input pixel.
//! let image: Vec<f32> = (0..37 * 70).map(|i| (i as f32 * 0.1).sin()).collect();
//! let opts = TileOptions { output_tile: 16, ..TileOptions::default() };
//! let p_cell = overlap_tile_predict(&model, &image, 37, 70, &opts)?;
//! assert_eq!(p_cell.len(), 37 * 70);
//! assert!(p_cell.iter().all(|p| (0.0..=1.0).contains(p)));
//! # Ok(())
//! # }
//! ```

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use crate::config::{Padding, UNetConfig};
use crate::size::{input_size_step, min_input_size, output_size};
use crate::unet::UNet;
use crate::{Error, Result};

/// How overlapping tiles of a same-padding model are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blend {
    /// Each pixel is taken from one tile: the one whose edge is farthest (a hard cut in the
    /// middle of each overlap).
    None,
    /// Weights rise linearly over the overlap (a cross-fade): the weights of two neighbours sum
    /// to one across their overlap.
    Linear,
    /// Gaussian weights centred on the tile with sigma = tile size / 8 (as nnU-Net and MONAI).
    #[default]
    Gaussian,
}

/// Tiling settings for [`overlap_tile_predict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileOptions {
    /// The wanted output tile size in pixels (height and width): the pixels one tile predicts.
    /// Rounded down to a size the model takes (valid padding: a valid output size of at least
    /// `2^(depth-1)`; the input tile adds the context on each side; same padding: a multiple of
    /// `2^(depth-1)`, input tile = output tile). Images smaller than a tile are predicted in one
    /// tile of the smallest size that covers them.
    pub output_tile: usize,
    /// Pixels shared by neighbouring tiles of a same-padding model (clamped to leave a stride of
    /// at least `2^(depth-1)`). Ignored for valid padding, whose tiles need no overlap.
    pub overlap: usize,
    /// Tiles per forward pass: this bounds memory.
    pub batch_size: usize,
    /// How overlapping tiles of a same-padding model are combined. Ignored for valid padding.
    pub blend: Blend,
    /// Test-time augmentation: average the probabilities over the 8 flips and 90-degree rotations
    /// of the image (8x the work).
    pub tta: bool,
}

impl Default for TileOptions {
    /// Tiles of 256 output pixels overlapping by 64 (25%), 4 per pass, Gaussian blending, no TTA.
    fn default() -> Self {
        Self {
            output_tile: 256,
            overlap: 64,
            batch_size: 4,
            blend: Blend::Gaussian,
            tta: false,
        }
    }
}

impl TileOptions {
    /// Tiles per forward pass for `device` when the user names none: 1 on the CPU, where one
    /// tile's activations bound memory and a pass of one is no slower, 4 on a GPU, which wants
    /// the work (docs/RESULTS.md, "Volumes").
    pub fn batch_size_for(device: &Device) -> usize {
        if device.is_cpu() {
            1
        } else {
            4
        }
    }
}

/// The tiles along one axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisTiles {
    /// Where each tile's output starts, in image coordinates (negative: before the image, in the
    /// mirrored margin).
    pub starts: Vec<isize>,
    /// Output pixels per tile.
    pub output: usize,
    /// Input pixels per tile (`output + 2 * context` for valid padding, `output` for same).
    pub input: usize,
    /// Input pixels before the output start (valid padding's context; 0 for same padding).
    pub context: usize,
}

impl AxisTiles {
    /// The input coordinate range of tile `k`, in image coordinates (may reach beyond the image).
    pub fn input_range(&self, k: usize) -> std::ops::Range<isize> {
        let start = self.starts[k] - self.context as isize;
        start..start + self.input as isize
    }
}

/// How an image is cut into tiles for a model: the same layout along rows and columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileLayout {
    /// Tiles along the height.
    pub rows: AxisTiles,
    /// Tiles along the width.
    pub cols: AxisTiles,
}

impl TileLayout {
    /// The number of tiles.
    pub fn len(&self) -> usize {
        self.rows.starts.len() * self.cols.starts.len()
    }

    /// Always false: every image has at least one tile.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Logits `[n, C, h, w]` of whole normalised sections `[n, 1, h, w]` in one forward pass: the
/// sections are mirrored ([`reflect_index`]) out to the smallest input whose output covers
/// them, with the context a valid-padding net consumes on each side, and the output is cropped
/// back. For a valid-padding net this is what [`overlap_tile_predict`] stitches tile by tile;
/// validation and calibration use it on sections that fit in memory.
pub fn predict_whole_logits(model: &UNet, sections: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = sections.dims4()?;
    let cfg = model.config();
    let in_h = crate::size::input_size_for_output(cfg, h);
    let in_w = crate::size::input_size_for_output(cfg, w);
    let (out_h, out_w) = model.output_size(in_h, in_w)?;
    let padded = if (in_h, in_w) == (h, w) {
        sections.clone()
    } else {
        // Output pixel 0 sits `(in - out) / 2` pixels into the input.
        let mirrored = |offset: usize, len: usize, n: usize| -> Result<Tensor> {
            let idx: Vec<u32> = (0..len)
                .map(|i| reflect_index(i as isize - offset as isize, n) as u32)
                .collect();
            Ok(Tensor::from_vec(idx, len, sections.device())?)
        };
        let rows = mirrored((in_h - out_h) / 2, in_h, h)?;
        let cols = mirrored((in_w - out_w) / 2, in_w, w)?;
        sections.index_select(&rows, 2)?.index_select(&cols, 3)?
    };
    let logits = model.forward_t(&padded, false)?;
    Ok(logits.narrow(2, 0, h)?.narrow(3, 0, w)?.detach())
}

/// The index into `0..n` of coordinate `i` mirrored at the borders without repeating the edge
/// pixel (`... 2 1 | 0 1 ... n-1 | n-2 ...`), periodic with period `2n - 2`, so any `i` maps.
/// `n` = 1 maps everything to 0. `n` must be positive. The rule is scipy's `'mirror'`, the one
/// the augmentation's border uses too (`unet-augment` keeps its own: the crates share no code).
pub fn reflect_index(i: isize, n: usize) -> usize {
    debug_assert!(n > 0);
    let period = 2 * n.saturating_sub(1);
    if period == 0 {
        return 0;
    }
    // Within a period, the way back down mirrors the way up.
    let r = i.rem_euclid(period as isize) as usize;
    r.min(period - r)
}

/// The smallest valid output size >= `wanted`: `first + k * step`.
fn output_at_least(first: usize, step: usize, wanted: usize) -> usize {
    if wanted <= first {
        first
    } else {
        first + (wanted - first).div_ceil(step) * step
    }
}

/// The tile layout along an axis of `n` pixels for a valid-padding model.
fn valid_axis(cfg: &UNetConfig, n: usize, output_tile: usize) -> Result<AxisTiles> {
    let step = input_size_step(cfg);
    let min_in = min_input_size(cfg);
    let min_out = output_size(cfg, min_in)?;
    // Valid outputs are min_out + k * step, each needing the same context.
    let context = (min_in - min_out) / 2;
    // Tiles of at least `step` output pixels, so the stride (a multiple of step) is positive.
    let floor_out = output_at_least(min_out, step, step);
    let wanted = if output_tile < min_out {
        min_out
    } else {
        min_out + (output_tile - min_out) / step * step
    };
    let tile_out = wanted.max(floor_out);
    let fit = output_at_least(min_out, step, n);
    let (output, starts) = if fit <= tile_out {
        (fit, vec![0])
    } else {
        let stride = tile_out / step * step;
        let count = 1 + (n - tile_out).div_ceil(stride);
        (
            tile_out,
            (0..count).map(|k| (k * stride) as isize).collect(),
        )
    };
    Ok(AxisTiles {
        starts,
        output,
        input: output + 2 * context,
        context,
    })
}

/// The tile layout along an axis of `n` pixels for a same-padding model.
fn same_axis(cfg: &UNetConfig, n: usize, output_tile: usize, overlap: usize) -> AxisTiles {
    let step = input_size_step(cfg);
    let tile = (output_tile / step * step).max(step);
    let fit = n.div_ceil(step) * step;
    let (output, count, stride) = if fit <= tile {
        (fit, 1, step)
    } else {
        let overlap = overlap.min(tile - step);
        let stride = ((tile - overlap) / step * step).max(step);
        (tile, 1 + (n - tile).div_ceil(stride), stride)
    };
    // Centre the covered span on the image: the excess becomes a mirrored margin on both sides.
    let cover = output + (count - 1) * stride;
    let offset = ((cover - n) / 2) as isize;
    AxisTiles {
        starts: (0..count).map(|k| (k * stride) as isize - offset).collect(),
        output,
        input: output,
        context: 0,
    }
}

/// How `overlap_tile_predict` cuts a `height` x `width` image for a model of configuration `cfg`.
pub fn tile_layout(
    cfg: &UNetConfig,
    height: usize,
    width: usize,
    opts: &TileOptions,
) -> Result<TileLayout> {
    check_options(opts)?;
    if height == 0 || width == 0 {
        return Err(Error::EmptyImage { height, width });
    }
    let axis = |n: usize| -> Result<AxisTiles> {
        match cfg.padding {
            Padding::Valid => valid_axis(cfg, n, opts.output_tile),
            Padding::Same => Ok(same_axis(cfg, n, opts.output_tile, opts.overlap)),
        }
    };
    Ok(TileLayout {
        rows: axis(height)?,
        cols: axis(width)?,
    })
}

fn check_options(opts: &TileOptions) -> Result<()> {
    if opts.output_tile == 0 {
        return Err(Error::Zero {
            what: "output_tile",
        });
    }
    if opts.batch_size == 0 {
        return Err(Error::Zero { what: "batch_size" });
    }
    Ok(())
}

/// The blending weight of each output pixel of each tile along one axis.
fn axis_weights(tiles: &AxisTiles, blend: Blend) -> Vec<Vec<f32>> {
    let count = tiles.starts.len();
    let out = tiles.output;
    match blend {
        Blend::None => {
            // Tile k owns [cut_k, cut_{k+1}), cuts in the middle of each overlap.
            let cut = |k: usize| -> isize {
                if k == 0 {
                    isize::MIN
                } else if k == count {
                    isize::MAX
                } else {
                    (tiles.starts[k] + tiles.starts[k - 1] + out as isize).div_euclid(2)
                }
            };
            (0..count)
                .map(|k| {
                    let (lo, hi) = (cut(k), cut(k + 1));
                    (0..out)
                        .map(|i| {
                            let pos = tiles.starts[k] + i as isize;
                            if lo <= pos && pos < hi {
                                1.0
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect()
        }
        Blend::Linear => {
            let overlap = if count > 1 {
                (tiles.starts[0] + out as isize - tiles.starts[1]).max(1) as f32
            } else {
                1.0
            };
            let w: Vec<f32> = (0..out)
                .map(|i| ((i.min(out - 1 - i) + 1) as f32 / (overlap + 1.0)).min(1.0))
                .collect();
            vec![w; count]
        }
        Blend::Gaussian => {
            let sigma = out as f64 / 8.0;
            let centre = (out as f64 - 1.0) / 2.0;
            let w: Vec<f32> = (0..out)
                .map(|i| {
                    let d = i as f64 - centre;
                    ((-d * d / (2.0 * sigma * sigma)).exp() as f32).max(f32::MIN_POSITIVE)
                })
                .collect();
            vec![w; count]
        }
    }
}

fn model_device_dtype(model: &UNet) -> (Device, DType) {
    model
        .parameters()
        .first()
        .map(|(_, v)| (v.device().clone(), v.dtype()))
        .unwrap_or((Device::Cpu, DType::F32))
}

fn check_image(cfg: &UNetConfig, image: &[f32], height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(Error::EmptyImage { height, width });
    }
    let expected = cfg.in_channels * height * width;
    if image.len() != expected {
        return Err(Error::ImageLength {
            got: image.len(),
            expected,
            channels: cfg.in_channels,
            height,
            width,
        });
    }
    if let Some((index, value)) = image.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            index,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// A rectangle of an image: rows `y` and columns `x`, half-open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Rows.
    pub y: Range<usize>,
    /// Columns.
    pub x: Range<usize>,
}

impl Window {
    /// The whole of a `height` x `width` image.
    pub fn full(height: usize, width: usize) -> Self {
        Window {
            y: 0..height,
            x: 0..width,
        }
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.y.len()
    }

    /// Columns.
    pub fn width(&self) -> usize {
        self.x.len()
    }

    /// Whether `other` lies inside this window.
    pub fn contains(&self, other: &Window) -> bool {
        self.y.start <= other.y.start
            && other.y.end <= self.y.end
            && self.x.start <= other.x.start
            && other.x.end <= self.x.end
    }
}

/// The tiles along an axis whose output touches `range`.
fn tiles_touching(axis: &AxisTiles, range: &Range<usize>) -> Range<usize> {
    let out = axis.output as isize;
    let first = axis
        .starts
        .iter()
        .position(|&s| s + out > range.start as isize)
        .unwrap_or(axis.starts.len());
    let end = axis
        .starts
        .iter()
        .rposition(|&s| s < range.end as isize)
        .map_or(0, |k| k + 1);
    first..end.max(first)
}

/// The image pixels that tiles `tiles` read along an axis of `n` pixels, after mirroring: one
/// range, since the tiles' inputs overlap and mirroring maps a run of coordinates to a run.
fn axis_input_span(axis: &AxisTiles, tiles: Range<usize>, n: usize) -> Range<usize> {
    let (mut lo, mut hi) = (n, 0);
    for k in tiles {
        for i in axis.input_range(k) {
            let r = reflect_index(i, n);
            lo = lo.min(r);
            hi = hi.max(r + 1);
        }
    }
    lo..hi.max(lo)
}

/// The part of a `height` x `width` image that [`overlap_tile_predict_window`] reads to predict
/// `window`: the inputs of every tile whose output touches the window, mirrored into the image.
/// Inside the image these are the real neighbouring pixels; only at the image's own border is
/// the context mirrored, exactly as for the whole image.
pub fn window_input(
    cfg: &UNetConfig,
    height: usize,
    width: usize,
    window: &Window,
    opts: &TileOptions,
) -> Result<Window> {
    let layout = tile_layout(cfg, height, width, opts)?;
    check_window(height, width, window)?;
    Ok(Window {
        y: axis_input_span(
            &layout.rows,
            tiles_touching(&layout.rows, &window.y),
            height,
        ),
        x: axis_input_span(&layout.cols, tiles_touching(&layout.cols, &window.x), width),
    })
}

fn check_window(height: usize, width: usize, window: &Window) -> Result<()> {
    if window.y.is_empty() || window.x.is_empty() || !Window::full(height, width).contains(window) {
        return Err(Error::Window(format!(
            "window rows {:?}, columns {:?} is empty or not inside the {height}x{width} image",
            window.y, window.x
        )));
    }
    Ok(())
}

/// What [`predict_planes`] predicts: `out` of a `height` x `width` image whose pixels inside
/// `crop` are `image` (`in_channels` planes of the crop's size).
struct Region<'a> {
    image: &'a [f32],
    crop: &'a Window,
    height: usize,
    width: usize,
    out: &'a Window,
}

/// Predicts the softmax probabilities of `classes` for every pixel of `region.out`, tile by
/// tile (no TTA), with the tile layout of the whole image: the tiles whose output touches the
/// window, in the whole image's order, so each pixel gets the same tiles and the same sums.
/// Returns `classes.len()` planes of the window's size.
fn predict_planes(
    model: &UNet,
    region: &Region<'_>,
    opts: &TileOptions,
    classes: &[usize],
) -> Result<Vec<f32>> {
    let cfg = model.config();
    let (height, width, crop, window) = (region.height, region.width, region.crop, region.out);
    let layout = tile_layout(cfg, height, width, opts)?;
    let (rows, cols) = (&layout.rows, &layout.cols);
    // A layout bug must be an error, never a silently wrong stitch.
    if model.output_size(rows.input, cols.input)? != (rows.output, cols.output) {
        return Err(crate::Error::InputShape {
            expected: format!("tiles of {}x{} output pixels", rows.output, cols.output),
            got: vec![rows.input, cols.input],
        });
    }
    let blend = match cfg.padding {
        Padding::Valid => Blend::None,
        Padding::Same => opts.blend,
    };
    let (row_weights, col_weights) = (axis_weights(rows, blend), axis_weights(cols, blend));
    let (device, dtype) = model_device_dtype(model);
    let channels = cfg.in_channels;
    let (crop_h, crop_w) = (crop.height(), crop.width());
    let crop_plane = crop_h * crop_w;
    let (out_h, out_w) = (window.height(), window.width());
    let plane = out_h * out_w;
    let mut acc = vec![0f32; classes.len() * plane];
    let mut weight_sum = vec![0f32; plane];

    let (tile_rows, tile_cols) = (
        tiles_touching(rows, &window.y),
        tiles_touching(cols, &window.x),
    );
    let tiles: Vec<(usize, usize)> = tile_rows
        .flat_map(|ty| tile_cols.clone().map(move |tx| (ty, tx)))
        .collect();
    let tile_in = rows.input * cols.input;
    let tile_out = rows.output * cols.output;
    // Image coordinates, mirrored, then made relative to the crop; a crop that misses one is
    // a caller's error, never a wrong pixel.
    let into_crop = |i: isize, n: usize, span: &Range<usize>| -> Result<usize> {
        let r = reflect_index(i, n);
        if span.contains(&r) {
            Ok(r - span.start)
        } else {
            Err(Error::Window(format!(
                "the crop rows {:?}, columns {:?} lacks pixel {r} that window rows {:?}, \
                 columns {:?} needs (see window_input)",
                crop.y, crop.x, window.y, window.x
            )))
        }
    };
    for batch in tiles.chunks(opts.batch_size) {
        let mut input = Vec::with_capacity(batch.len() * channels * tile_in);
        for &(ty, tx) in batch {
            let ys: Vec<usize> = rows
                .input_range(ty)
                .map(|y| into_crop(y, height, &crop.y))
                .collect::<Result<_>>()?;
            let xs: Vec<usize> = cols
                .input_range(tx)
                .map(|x| into_crop(x, width, &crop.x))
                .collect::<Result<_>>()?;
            for c in 0..channels {
                let src = &region.image[c * crop_plane..(c + 1) * crop_plane];
                for &y in &ys {
                    let row = &src[y * crop_w..(y + 1) * crop_w];
                    input.extend(xs.iter().map(|&x| row[x]));
                }
            }
        }
        let x = Tensor::from_vec(
            input,
            (batch.len(), channels, rows.input, cols.input),
            &device,
        )?
        .to_dtype(dtype)?;
        let logits = model.forward_t(&x, false)?;
        let probs = candle_nn::ops::softmax(&logits, 1)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let n_classes = cfg.n_classes;
        let (wy0, wx0) = (window.y.start as isize, window.x.start as isize);
        for (b, &(ty, tx)) in batch.iter().enumerate() {
            let (wy, wx) = (&row_weights[ty], &col_weights[tx]);
            let (y0, x0) = (rows.starts[ty], cols.starts[tx]);
            for i in 0..rows.output {
                let y = y0 + i as isize - wy0;
                if y < 0 || y >= out_h as isize || wy[i] == 0.0 {
                    continue;
                }
                let y = y as usize;
                for j in 0..cols.output {
                    let x = x0 + j as isize - wx0;
                    let w = wy[i] * wx[j];
                    if x < 0 || x >= out_w as isize || w == 0.0 {
                        continue;
                    }
                    let p = y * out_w + x as usize;
                    weight_sum[p] += w;
                    for (k, &class) in classes.iter().enumerate() {
                        let v = probs[(b * n_classes + class) * tile_out + i * cols.output + j];
                        acc[k * plane + p] += w * v;
                    }
                }
            }
        }
    }
    for (k, _) in classes.iter().enumerate() {
        for (a, &w) in acc[k * plane..(k + 1) * plane].iter_mut().zip(&weight_sum) {
            *a /= w;
        }
    }
    Ok(acc)
}

/// One of the 8 symmetries of the square: `transpose` first, then the flips.
#[derive(Debug, Clone, Copy)]
struct Dihedral {
    transpose: bool,
    flip_rows: bool,
    flip_cols: bool,
}

impl Dihedral {
    fn all() -> impl Iterator<Item = Dihedral> {
        (0..8u8).map(|t| Dihedral {
            transpose: t & 4 != 0,
            flip_rows: t & 2 != 0,
            flip_cols: t & 1 != 0,
        })
    }

    /// The transformed (height, width).
    fn dims(self, height: usize, width: usize) -> (usize, usize) {
        if self.transpose {
            (width, height)
        } else {
            (height, width)
        }
    }

    /// For each pixel of the transformed image (row-major), its index in the original.
    fn source_indices(self, height: usize, width: usize) -> Vec<usize> {
        let (th, tw) = self.dims(height, width);
        let mut out = Vec::with_capacity(th * tw);
        for ty in 0..th {
            for tx in 0..tw {
                let a = if self.flip_rows { th - 1 - ty } else { ty };
                let b = if self.flip_cols { tw - 1 - tx } else { tx };
                let (y, x) = if self.transpose { (b, a) } else { (a, b) };
                out.push(y * width + x);
            }
        }
        out
    }
}

/// Probabilities of `classes`, averaged over the 8 dihedral transforms when `opts.tta`.
fn predict_classes(
    model: &UNet,
    image: &[f32],
    height: usize,
    width: usize,
    opts: &TileOptions,
    classes: &[usize],
) -> Result<Vec<f32>> {
    check_options(opts)?;
    check_image(model.config(), image, height, width)?;
    if !opts.tta {
        let full = Window::full(height, width);
        let region = Region {
            image,
            crop: &full,
            height,
            width,
            out: &full,
        };
        return predict_planes(model, &region, opts, classes);
    }
    let plane = height * width;
    let channels = model.config().in_channels;
    let mut mean = vec![0f32; classes.len() * plane];
    for t in Dihedral::all() {
        let (th, tw) = t.dims(height, width);
        let src = t.source_indices(height, width);
        let transformed: Vec<f32> = (0..channels)
            .flat_map(|c| src.iter().map(move |&i| image[c * plane + i]))
            .collect();
        let full = Window::full(th, tw);
        let region = Region {
            image: &transformed,
            crop: &full,
            height: th,
            width: tw,
            out: &full,
        };
        let probs = predict_planes(model, &region, opts, classes)?;
        for k in 0..classes.len() {
            let (dst, from) = (
                &mut mean[k * plane..(k + 1) * plane],
                &probs[k * plane..(k + 1) * plane],
            );
            for (&i, &v) in src.iter().zip(from) {
                dst[i] += v / 8.0;
            }
        }
    }
    Ok(mean)
}

/// P(cell) for every pixel of an image of any size: the softmax probability of class 1,
/// predicted tile by tile (see the [module docs](self)). `image` holds the model's
/// `in_channels` planes of `height * width` values, normalised as in training; the result is
/// one `height * width` plane.
pub fn overlap_tile_predict(
    model: &UNet,
    image: &[f32],
    height: usize,
    width: usize,
    opts: &TileOptions,
) -> Result<Vec<f32>> {
    predict_classes(model, image, height, width, opts, &[1])
}

/// Every class's softmax probability for every pixel, as [`overlap_tile_predict`] does it:
/// `n_classes` planes of `height * width` (class-major), summing to one at each pixel.
pub fn overlap_tile_predict_probs(
    model: &UNet,
    image: &[f32],
    height: usize,
    width: usize,
    opts: &TileOptions,
) -> Result<Vec<f32>> {
    let classes: Vec<usize> = (0..model.config().n_classes).collect();
    predict_classes(model, image, height, width, opts, &classes)
}

/// P(cell) for `window` of a `height` x `width` image, given only the image's pixels inside
/// `crop` (`in_channels` planes of the crop's size, normalised as in training): the same
/// numbers [`overlap_tile_predict`] gives there for the whole image, since the tile layout is
/// the whole image's and every tile reads the same pixels. `crop` must contain
/// [`window_input`] of the window. This is how a volume is predicted block by block with
/// memory bounded by the block. Test-time augmentation is not offered here (its flipped tile
/// grids would need a crop per transform).
pub fn overlap_tile_predict_window(
    model: &UNet,
    crop_pixels: &[f32],
    crop: &Window,
    height: usize,
    width: usize,
    window: &Window,
    opts: &TileOptions,
) -> Result<Vec<f32>> {
    predict_window_planes(
        model,
        crop_pixels,
        crop,
        (height, width),
        window,
        opts,
        &[1],
    )
}

/// Every class's probability for `window`, as [`overlap_tile_predict_window`] gives P(cell):
/// `n_classes` planes of the window's size (class-major), the numbers
/// [`overlap_tile_predict_probs`] gives there for the whole image.
pub fn overlap_tile_predict_window_probs(
    model: &UNet,
    crop_pixels: &[f32],
    crop: &Window,
    height: usize,
    width: usize,
    window: &Window,
    opts: &TileOptions,
) -> Result<Vec<f32>> {
    let classes: Vec<usize> = (0..model.config().n_classes).collect();
    predict_window_planes(
        model,
        crop_pixels,
        crop,
        (height, width),
        window,
        opts,
        &classes,
    )
}

/// The planes of `classes` for `window` of an image of `(height, width)`.
fn predict_window_planes(
    model: &UNet,
    crop_pixels: &[f32],
    crop: &Window,
    (height, width): (usize, usize),
    window: &Window,
    opts: &TileOptions,
    classes: &[usize],
) -> Result<Vec<f32>> {
    check_options(opts)?;
    if opts.tta {
        return Err(Error::Window(
            "test-time augmentation is not offered for a window of an image".into(),
        ));
    }
    check_window(height, width, window)?;
    check_window(height, width, crop)?;
    check_image(model.config(), crop_pixels, crop.height(), crop.width())?;
    let region = Region {
        image: crop_pixels,
        crop,
        height,
        width,
        out: window,
    };
    predict_planes(model, &region, opts, classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid_cfg(depth: usize) -> UNetConfig {
        UNetConfig {
            depth,
            base_width: 4,
            padding: Padding::Valid,
            ..UNetConfig::small()
        }
    }

    /// The reflected sequence built the slow way: walk from 0 and bounce off the edges.
    fn walked(i: isize, n: usize) -> usize {
        if n == 1 {
            return 0;
        }
        let (mut pos, mut dir) = (0isize, if i >= 0 { 1 } else { -1 });
        for _ in 0..i.unsigned_abs() {
            if pos + dir < 0 || pos + dir >= n as isize {
                dir = -dir;
            }
            pos += dir;
        }
        pos as usize
    }

    #[test]
    fn reflection_repeats_no_edge_pixel() {
        let got: Vec<usize> = (-4..8).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, [2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert!((-5..5).all(|i| reflect_index(i, 1) == 0));
        assert_eq!(reflect_index(-1, 2), 1);
        assert_eq!(reflect_index(2, 2), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn reflection_matches_walking(i in -60isize..60, n in 1usize..9) {
            prop_assert_eq!(reflect_index(i, n), walked(i, n));
        }

        /// Every layout covers the image, its tiles fit the model, and valid-padding tiles sit
        /// on the pooling grid.
        #[test]
        fn layouts_cover_and_fit(
            n in 1usize..300,
            tile in 1usize..200,
            overlap in 0usize..80,
            depth in 1usize..5,
            same in any::<bool>(),
        ) {
            let cfg = UNetConfig {
                padding: if same { Padding::Same } else { Padding::Valid },
                ..valid_cfg(depth)
            };
            let opts = TileOptions { output_tile: tile, overlap, ..TileOptions::default() };
            let layout = tile_layout(&cfg, n, 5, &opts).unwrap();
            let axis = &layout.rows;
            prop_assert_eq!(output_size(&cfg, axis.input).unwrap(), axis.output);
            prop_assert!(axis.starts[0] <= 0);
            prop_assert!(*axis.starts.last().unwrap() + axis.output as isize >= n as isize);
            let step = input_size_step(&cfg) as isize;
            for pair in axis.starts.windows(2) {
                prop_assert!(pair[1] > pair[0]);
                prop_assert!(pair[1] - pair[0] <= axis.output as isize, "gap");
                prop_assert_eq!((pair[1] - pair[0]) % step, 0);
            }
            if !same {
                prop_assert!(axis.starts.iter().all(|s| s % step == 0));
            }
            // Not much more than one tile's worth of wasted margin.
            let cover = *axis.starts.last().unwrap() + axis.output as isize - axis.starts[0];
            prop_assert!(cover < n as isize + axis.output as isize + step);
            // A hard cut gives each image pixel to exactly one tile.
            let weights = axis_weights(axis, Blend::None);
            for pos in 0..n as isize {
                let owners = axis.starts.iter().zip(&weights).filter(|(&s, w)| {
                    pos >= s && pos < s + axis.output as isize && w[(pos - s) as usize] == 1.0
                }).count();
                prop_assert_eq!(owners, 1, "pixel {}", pos);
            }
        }
    }

    #[test]
    fn paper_layout() {
        let cfg = UNetConfig::paper();
        let opts = TileOptions {
            output_tile: 388,
            ..TileOptions::default()
        };
        // A 512x512 section: 388 is not on the 16-pixel grid, so tiles step by 384.
        let layout = tile_layout(&cfg, 512, 300, &opts).unwrap();
        assert_eq!(layout.rows.output, 388);
        assert_eq!(layout.rows.input, 572);
        assert_eq!(layout.rows.context, 92);
        assert_eq!(layout.rows.starts, vec![0, 384]);
        // 300 columns fit one tile of the smallest covering output, 308.
        assert_eq!(layout.cols.starts, vec![0]);
        assert_eq!(layout.cols.output, 308);
        assert_eq!(layout.len(), 2);
        // A 1x1 image takes one tile of the smallest output size, 4 (input 188).
        let tiny = tile_layout(&cfg, 1, 1, &opts).unwrap();
        assert_eq!((tiny.rows.output, tiny.rows.input), (4, 188));
    }

    #[test]
    fn linear_weights_cross_fade() {
        let cfg = UNetConfig {
            depth: 2,
            ..UNetConfig::small()
        };
        let opts = TileOptions {
            output_tile: 16,
            overlap: 6,
            ..TileOptions::default()
        };
        let axis = tile_layout(&cfg, 40, 40, &opts).unwrap().rows;
        // Stride 10 rounds down to 10 (step 2): overlap 6.
        assert_eq!(axis.starts[1] - axis.starts[0], 10);
        let w = axis_weights(&axis, Blend::Linear);
        for i in 0..6 {
            let sum = w[0][10 + i] + w[1][i];
            assert!((sum - 1.0).abs() < 1e-6, "{i}: {sum}");
        }
        assert_eq!(w[0][8], 1.0);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let cfg = valid_cfg(2);
        let zero = TileOptions {
            batch_size: 0,
            ..TileOptions::default()
        };
        let err = tile_layout(&cfg, 4, 4, &zero).unwrap_err();
        assert!(
            err.to_string().contains("batch_size must be at least 1"),
            "{err}"
        );
        let err = tile_layout(&cfg, 0, 4, &TileOptions::default()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn dihedral_transforms_are_the_eight_symmetries() {
        let (h, w) = (2, 3);
        let mut seen = std::collections::HashSet::new();
        for t in Dihedral::all() {
            let src = t.source_indices(h, w);
            let mut sorted = src.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..h * w).collect::<Vec<_>>(), "a permutation");
            seen.insert(src);
        }
        assert_eq!(seen.len(), 8);
        // Transpose alone: row-major 3x2 from the 2x3 [[0 1 2] [3 4 5]].
        let t = Dihedral {
            transpose: true,
            flip_rows: false,
            flip_cols: false,
        };
        assert_eq!(t.source_indices(h, w), [0, 3, 1, 4, 2, 5]);
    }
}
