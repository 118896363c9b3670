//! The plain U-Net's training step on raw buffers, without candle's autograd graph.
//!
//! The forward pass keeps the maps its backward needs; the backward runs the same slice kernels
//! as the custom ops' backward passes ([`crate::kernels`]), layer by layer in reverse. Why:
//! candle's backward adds every gradient into a fresh `zeros_like`, allocates every
//! intermediate and runs those element-wise passes between the kernels; on the `small` net's
//! 512x512 step that was about a tenth of the time. The kernels, the statistics and the order
//! of every sum are the same as on the autograd path, so the loss and the gradients are the
//! same too (see the tests).

use std::borrow::Cow;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use rayon::prelude::*;

use super::{DoubleConv, UNet, Upsampler};
use crate::config::Upsampling;
use crate::kernels::{
    channel_sums, conv_forward, conv_input_grad, conv_weight_grad, fast_path_for, map_planes,
    max_pool_backward_into, max_pool_forward, upconv_forward, upconv_input_grad,
    upconv_weight_grad, write_from, BatchNormOp, Geom, UpGeom,
};
use crate::layers::{dropout_mask, BatchNorm2d, Conv2d, UpConv2x2, BN_EPS};
use crate::{Error, Result};

/// `[n, c, h, w]`.
type Dims = (usize, usize, usize, usize);

/// A contiguous NCHW map.
struct Map {
    data: Vec<f32>,
    dims: Dims,
}

impl Map {
    /// `[n, c, h * w]`, the batch-norm kernels' view.
    fn planes(&self) -> (usize, usize, usize) {
        let (n, c, h, w) = self.dims;
        (n, c, h * w)
    }
}

/// A variable's values (contiguous, f32).
fn values(v: &Var) -> Result<Vec<f32>> {
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

/// Stores `grad` (the variable's shape) as the gradient of `v`.
fn store(grads: &mut GradStore, v: &Var, grad: Vec<f32>) -> Result<()> {
    let t = Tensor::from_vec(grad, v.shape(), v.device())?;
    grads.insert(v.as_tensor(), t);
    Ok(())
}

/// One convolution, its optional batch norm and the ReLU: what the backward needs.
struct Stage {
    geom: Geom,
    /// The convolution's output.
    z: Map,
    /// Batch norm with this batch's statistics.
    norm: Option<BatchNormOp>,
    /// The stage's output.
    y: Map,
}

/// A [`DoubleConv`]'s input and two stages.
struct BlockRecord {
    input: Map,
    stages: [Stage; 2],
}

impl BlockRecord {
    fn output(&self) -> &Map {
        &self.stages[1].y
    }
}

fn conv_stage(conv: &Conv2d, norm: Option<&BatchNorm2d>, x: &Map) -> Result<Stage> {
    let geom = Geom::new(x.dims, conv.weight.dims4()?, conv.padding)?;
    let z = Map {
        data: conv_forward(
            &x.data,
            &values(&conv.weight)?,
            Some(&values(&conv.bias)?),
            &geom,
        ),
        dims: geom.out_dims(),
    };
    let (norm, y) = match norm {
        Some(bn) => {
            let (mean, var) = bn.train_statistics(&z.data, z.planes())?;
            let op = BatchNormOp::new(&mean, &var, BN_EPS, true, true);
            let y = op.apply(
                &z.data,
                &values(&bn.weight)?,
                &values(&bn.bias)?,
                z.planes(),
            );
            (Some(op), y)
        }
        None => (None, z.data.par_iter().map(|&v| v.max(0.0)).collect()),
    };
    let dims = z.dims;
    Ok(Stage {
        geom,
        z,
        norm,
        y: Map { data: y, dims },
    })
}

fn block_forward(block: &DoubleConv, input: Map) -> Result<BlockRecord> {
    let norm = |j: usize| block.norms.as_ref().map(|n| &n[j]);
    let first = conv_stage(&block.convs[0], norm(0), &input)?;
    let second = conv_stage(&block.convs[1], norm(1), &first.y)?;
    Ok(BlockRecord {
        input,
        stages: [first, second],
    })
}

/// The backward of a convolution with input `x` and output gradient `dy`: the weight and bias
/// gradients stored, the input gradient returned when `need_dx`.
fn conv_backward(
    conv: &Conv2d,
    geom: &Geom,
    x: &Map,
    dy: &[f32],
    need_dx: bool,
    grads: &mut GradStore,
) -> Result<Option<Vec<f32>>> {
    let dx = if need_dx {
        Some(conv_input_grad(dy, &values(&conv.weight)?, geom))
    } else {
        None
    };
    store(grads, &conv.weight, conv_weight_grad(&x.data, dy, geom))?;
    let (n, o, _, _) = geom.out_dims();
    store(grads, &conv.bias, channel_sums(dy, n, o, geom.cols()))?;
    Ok(dx)
}

/// The gradient of a block's input from that of its output (`None` for the network's input).
fn block_backward(
    block: &DoubleConv,
    record: &BlockRecord,
    dy: Vec<f32>,
    need_dx: bool,
    grads: &mut GradStore,
) -> Result<Option<Vec<f32>>> {
    let mut dy = dy;
    for j in (0..2).rev() {
        let stage = &record.stages[j];
        let dz = match (&stage.norm, &block.norms) {
            (Some(op), Some(norms)) => {
                let bn = &norms[j];
                let (z, y) = (&stage.z.data, &stage.y.data);
                let planes = stage.z.planes();
                let sums = op.sums(z, y, &dy, planes);
                let (sum_g, sum_gx) = sums.split_at(planes.1);
                let dz = op.input_grad((z, y, &dy), &values(&bn.weight)?, (sum_g, sum_gx), planes);
                store(grads, &bn.weight, sum_gx.to_vec())?;
                store(grads, &bn.bias, sum_g.to_vec())?;
                dz
            }
            // candle's ReLU backward: the gradient passes where the input is >= 0.
            _ => dy
                .par_iter()
                .zip(&stage.z.data)
                .map(|(&g, &z)| if z >= 0.0 { g } else { 0.0 })
                .collect(),
        };
        let x = if j == 0 {
            &record.input
        } else {
            &record.stages[0].y
        };
        match conv_backward(
            &block.convs[j],
            &stage.geom,
            x,
            &dz,
            j == 1 || need_dx,
            grads,
        )? {
            Some(dx) => dy = dx,
            None => return Ok(None),
        }
    }
    Ok(Some(dy))
}

/// `[crop(skip), up]` along the channels, the skip map centre-cropped to `up`'s size.
fn concat_cropped(skip: &Map, up: &Map) -> Map {
    let (n, cs, sh, sw) = skip.dims;
    let (_, cu, h, w) = up.dims;
    let (top, left) = ((sh - h) / 2, (sw - w) / 2);
    let data = map_planes(n * (cs + cu), h * w, |idx, dst| {
        let (img, ch) = (idx / (cs + cu), idx % (cs + cu));
        if ch < cs {
            let plane = &skip.data[(img * cs + ch) * sh * sw..][..sh * sw];
            for i in 0..h {
                write_from(&mut dst[i * w..], &plane[(top + i) * sw + left..][..w]);
            }
        } else {
            write_from(dst, &up.data[(img * cu + ch - cs) * h * w..][..h * w]);
        }
    });
    Map {
        data,
        dims: (n, cs + cu, h, w),
    }
}

/// Splits the gradient of [`concat_cropped`]'s output into the skip map's (its full size, zero
/// outside the crop) and the up map's (a view for a single image).
fn split_concat_grad(d: &[f32], skip: Dims, up: Dims) -> (Vec<f32>, Cow<'_, [f32]>) {
    let (n, cs, sh, sw) = skip;
    let (_, cu, h, w) = up;
    let (top, left) = ((sh - h) / 2, (sw - w) / 2);
    let d_skip = map_planes(n * cs, sh * sw, |idx, dst| {
        let (img, ci) = (idx / cs, idx % cs);
        let src = &d[(img * (cs + cu) + ci) * h * w..][..h * w];
        for (r, row) in dst.chunks_mut(sw).enumerate() {
            match r.checked_sub(top).filter(|&i| i < h) {
                Some(i) => {
                    row[..left].iter_mut().for_each(|v| _ = v.write(0.0));
                    write_from(&mut row[left..], &src[i * w..][..w]);
                    row[left + w..].iter_mut().for_each(|v| _ = v.write(0.0));
                }
                None => row.iter_mut().for_each(|v| _ = v.write(0.0)),
            }
        }
    });
    let d_up = match n {
        1 => Cow::Borrowed(&d[cs * h * w..]),
        _ => Cow::Owned(map_planes(n * cu, h * w, |idx, dst| {
            let (img, ci) = (idx / cu, idx % cu);
            write_from(dst, &d[(img * (cs + cu) + cs + ci) * h * w..][..h * w]);
        })),
    };
    (d_skip, d_up)
}

/// The up-convolution of `x`.
fn upconv_stage(up: &UpConv2x2, x: &Map) -> Result<(UpGeom, Map)> {
    let geom = UpGeom::new(x.dims, up.weight.dims4()?)?;
    let data = upconv_forward(&x.data, &values(&up.weight)?, &values(&up.bias)?, &geom);
    Ok((
        geom,
        Map {
            data,
            dims: geom.out_dims(),
        },
    ))
}

/// The up-convolution of an up-sampler ([`UNet::direct_step_applies`] allows no other).
fn transposed(upsample: &Upsampler) -> &UpConv2x2 {
    match upsample {
        Upsampler::Transposed(up) => up,
        Upsampler::Bilinear { .. } => unreachable!("direct_step_applies checked the up-sampling"),
    }
}

/// The map `up[level]`'s up-convolution reads: the block below's output, or for the lowest
/// up block `bottom` (the contracting path's end, after drop-out).
fn upconv_input<'a>(
    up: &'a [Option<(UpGeom, BlockRecord)>],
    level: usize,
    bottom: &'a Map,
) -> &'a Map {
    match up.get(level + 1) {
        Some(slot) => slot.as_ref().expect("filled from the bottom").1.output(),
        None => bottom,
    }
}

impl UNet {
    /// Whether [`UNet::direct_train_step`] applies to input `x`: the plain encoder with
    /// transposed up-convolutions, computing in f32 on the CPU with the fast kernels on.
    pub fn direct_step_applies(&self, x: &Tensor) -> bool {
        self.encoder.is_none()
            && matches!(self.cfg.upsampling, Upsampling::Transposed)
            && self.dtype == DType::F32
            && self.compute_dtype == DType::F32
            && fast_path_for(x)
    }

    /// One training step's loss and parameter gradients without candle's autograd graph:
    /// `loss(logits)` of the training-mode forward pass of `x` (batch statistics, drop-out,
    /// running statistics updated), and the gradient of every parameter, equal to what
    /// `forward_t(x, true)`, `loss` and `backward()` give. `None` (and nothing run) where it
    /// does not apply ([`UNet::direct_step_applies`]).
    pub fn direct_train_step(
        &self,
        x: &Tensor,
        loss: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Option<(Tensor, GradStore)>> {
        if !self.direct_step_applies(x) {
            return Ok(None);
        }
        let bad_shape = || Error::InputShape {
            expected: format!("[N, {}, H, W]", self.cfg.in_channels),
            got: x.dims().to_vec(),
        };
        let dims = x.dims4().map_err(|_| bad_shape())?;
        if dims.1 != self.cfg.in_channels {
            return Err(bad_shape());
        }
        self.output_size(dims.2, dims.3)?;
        let depth = self.cfg.depth;

        // Forward: the contracting path, its max-pools, drop-out, the expanding path.
        let mut down: Vec<BlockRecord> = Vec::with_capacity(depth);
        let mut input = Some(Map {
            data: x.flatten_all()?.to_vec1::<f32>()?,
            dims,
        });
        for (level, block) in self.down.iter().enumerate() {
            let record = block_forward(block, input.take().expect("set"))?;
            if level + 1 < depth {
                let out = record.output();
                let (n, c, h, w) = out.dims;
                input = Some(Map {
                    data: max_pool_forward(&out.data, out.dims),
                    dims: (n, c, h / 2, w / 2),
                });
            }
            down.push(record);
        }
        let bottom = down.last().expect("depth >= 1").output();
        // Drop-out at the end of the contracting path, with its mask for the backward.
        let dropped = match self.cfg.dropout > 0.0 {
            true => {
                let mask = dropout_mask(
                    &[bottom.dims.0, bottom.dims.1, bottom.dims.2, bottom.dims.3],
                    self.cfg.dropout,
                    DType::F32,
                    x.device(),
                )?
                .flatten_all()?
                .to_vec1::<f32>()?;
                let data = bottom
                    .data
                    .par_iter()
                    .zip(&mask)
                    .map(|(v, m)| v * m)
                    .collect();
                Some((
                    Map {
                        data,
                        dims: bottom.dims,
                    },
                    mask,
                ))
            }
            false => None,
        };
        let bottom = dropped.as_ref().map_or(bottom, |(m, _)| m);
        // up[level], filled from the bottom: the up-convolution's geometry and the block.
        let mut up: Vec<Option<(UpGeom, BlockRecord)>> = (0..depth - 1).map(|_| None).collect();
        for level in (0..depth - 1).rev() {
            let h = upconv_input(&up, level, bottom);
            let (geom, u) = upconv_stage(transposed(&self.up[level].upsample), h)?;
            let joined = concat_cropped(down[level].output(), &u);
            up[level] = Some((geom, block_forward(&self.up[level].convs, joined)?));
        }
        let top = match up.first() {
            Some(Some((_, record))) => record.output(),
            _ => bottom,
        };
        let classifier_geom = Geom::new(
            top.dims,
            self.classifier.weight.dims4()?,
            self.classifier.padding,
        )?;
        let logits = conv_forward(
            &top.data,
            &values(&self.classifier.weight)?,
            Some(&values(&self.classifier.bias)?),
            &classifier_geom,
        );
        let logits = Var::from_tensor(&Tensor::from_vec(
            logits,
            classifier_geom.out_dims(),
            x.device(),
        )?)?;

        // The loss and its gradient with respect to the logits, by candle.
        let loss = loss(logits.as_tensor())?;
        let d_logits = loss
            .backward()?
            .remove(logits.as_tensor())
            .ok_or_else(|| {
                candle_core::Error::Msg("the loss does not depend on the logits".into())
            })?
            .flatten_all()?
            .to_vec1::<f32>()?;

        // Backward, in reverse.
        let mut grads = GradStore::default();
        let mut dh = conv_backward(
            &self.classifier,
            &classifier_geom,
            top,
            &d_logits,
            true,
            &mut grads,
        )?
        .expect("asked for");
        // d_skips[level]: the gradient reaching the contracting path's map through the skip.
        let mut d_skips: Vec<Vec<f32>> = Vec::with_capacity(depth - 1);
        for (level, slot) in up.iter().enumerate() {
            let (geom, record) = slot.as_ref().expect("filled");
            let d_joined = block_backward(&self.up[level].convs, record, dh, true, &mut grads)?
                .expect("asked for");
            let skip = down[level].output().dims;
            let (d_skip, d_up) = split_concat_grad(&d_joined, skip, geom.out_dims());
            d_skips.push(d_skip);
            let upconv = transposed(&self.up[level].upsample);
            let h = upconv_input(&up, level, bottom);
            store(
                &mut grads,
                &upconv.weight,
                upconv_weight_grad(&h.data, &d_up, geom),
            )?;
            let (n, o, ho, wo) = geom.out_dims();
            store(&mut grads, &upconv.bias, channel_sums(&d_up, n, o, ho * wo))?;
            dh = upconv_input_grad(&d_up, &values(&upconv.weight)?, geom);
        }
        if let Some((_, mask)) = &dropped {
            dh.par_iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
        }
        for level in (0..depth).rev() {
            let Some(d_input) =
                block_backward(&self.down[level], &down[level], dh, level > 0, &mut grads)?
            else {
                break;
            };
            // The skip's gradient plus the max-pool's: the sum autograd forms.
            let below = down[level - 1].output();
            let mut d = std::mem::take(&mut d_skips[level - 1]);
            max_pool_backward_into(&below.data, &d_input, below.dims, &mut d);
            dh = d;
        }
        Ok(Some((loss, grads)))
    }
}
