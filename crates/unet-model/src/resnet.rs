//! ResNet encoders for the U-Net (torchvision's ResNet-18 / ResNet-34 without the classifier)
//! and the decoder that goes with them.
//!
//! The encoder's tensors carry torchvision's names under `encoder.` (`encoder.conv1.weight`,
//! `encoder.layer2.0.downsample.1.running_var`, ...), so a torchvision state dict maps by
//! prefix ([`load_torchvision_encoder`]). Levels: 0 is full resolution (no
//! encoder map there), 1 the stem (64 channels, stride 2), 2-5 the four stages (64, 128, 256,
//! 512 channels, strides 4-32). The decoder block `up{l}` up-samples level `l + 1`, joins the
//! encoder map of level `l` (none at level 0) and applies two 3x3 convs with batch norm.
//!
//! Strided convs run as the stride-1 conv (the fast CPU kernels) followed by taking every
//! second pixel, which is exact; 1x1 stride-2 convs take the pixels first. The stem's 3x3
//! stride-2 max-pool follows a ReLU, so its zero padding equals PyTorch's `-inf` padding.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};

use crate::arch::{ParamRole, ParamSpec};
use crate::config::{Encoder, UNetConfig};
use crate::layers::BatchNorm2d;
use crate::{Error, Result, UNet};

/// Channels of the stem and of the four stages.
pub const STAGE_WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// Channels of the encoder map at `level` (1..=5); none at level 0.
pub fn skip_channels(level: usize) -> usize {
    match level {
        0 => 0,
        1 => STAGE_WIDTHS[0],
        l => STAGE_WIDTHS[(l - 2).min(3)],
    }
}

fn weight_spec(out: &mut Vec<ParamSpec>, name: String, c_out: usize, c_in: usize, k: usize) {
    out.push(ParamSpec {
        name,
        shape: vec![c_out, c_in, k, k],
        role: ParamRole::Weight {
            fan_in: c_in * k * k,
        },
    });
}

/// The block's first conv stride and whether it has a 1x1 downsample branch.
fn block_shape(stage: usize, block: usize) -> (usize, bool) {
    let stride = if stage > 0 && block == 0 { 2 } else { 1 };
    (stride, stage > 0 && block == 0)
}

/// The encoder's tensors in torchvision's order and names, under `encoder.`.
pub fn encoder_specs(
    cfg: &UNetConfig,
    out: &mut Vec<ParamSpec>,
    bn: impl Fn(&mut Vec<ParamSpec>, &str, usize),
) {
    let blocks = cfg.encoder.resnet_blocks().expect("a ResNet encoder");
    weight_spec(out, "encoder.conv1.weight".into(), 64, cfg.in_channels, 7);
    bn(out, "encoder.bn1", 64);
    let mut c_in = 64;
    for (stage, (&n, &width)) in blocks.iter().zip(&STAGE_WIDTHS).enumerate() {
        for block in 0..n {
            let p = format!("encoder.layer{}.{block}", stage + 1);
            let (_, downsample) = block_shape(stage, block);
            weight_spec(out, format!("{p}.conv1.weight"), width, c_in, 3);
            bn(out, &format!("{p}.bn1"), width);
            weight_spec(out, format!("{p}.conv2.weight"), width, width, 3);
            bn(out, &format!("{p}.bn2"), width);
            if downsample {
                weight_spec(out, format!("{p}.downsample.0.weight"), width, c_in, 1);
                bn(out, &format!("{p}.downsample.1"), width);
            }
            c_in = width;
        }
    }
}

/// Every second row and column (`[n, c, h, w]` with even `h`, `w`).
fn every_second(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    Ok(x.reshape((n, c, h / 2, 2, w / 2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((n, c, h / 2, w / 2))?)
}

/// A bias-free conv (torchvision's), stride 1 or 2, square kernel, zero padding `k / 2`.
#[derive(Debug, Clone)]
struct EncoderConv {
    weight: Var,
    zero_bias: Tensor,
    stride: usize,
}

impl EncoderConv {
    fn new(weight: Var, stride: usize) -> Result<Self> {
        let zero_bias = Tensor::zeros(weight.dim(0)?, weight.dtype(), weight.device())?;
        Ok(Self {
            weight,
            zero_bias,
            stride,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.weight.dim(2)?;
        let weight = crate::layers::in_dtype_of(&self.weight, x)?;
        let bias = self.zero_bias.to_dtype(x.dtype())?;
        let conv = |x: &Tensor| crate::kernels::conv2d(x, &weight, &bias, k / 2);
        Ok(match (self.stride, k) {
            (1, _) => conv(x)?,
            (_, 1) => conv(&every_second(x)?)?,
            _ => every_second(&conv(x)?)?,
        })
    }
}

/// The stem's 3x3 stride-2 max-pool with padding 1 on a non-negative map (after a ReLU).
fn max_pool3x3_stride2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut m: Option<Tensor> = None;
    for dy in 0..3 {
        for dx in 0..3 {
            let view = padded.narrow(2, dy, h)?.narrow(3, dx, w)?;
            m = Some(match m {
                None => view,
                Some(m) => m.maximum(&view)?,
            });
        }
    }
    every_second(&m.expect("nine views"))
}

#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: EncoderConv,
    bn1: BatchNorm2d,
    conv2: EncoderConv,
    bn2: BatchNorm2d,
    downsample: Option<(EncoderConv, BatchNorm2d)>,
}

impl BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        let h = self.bn2.forward_t(&self.conv2.forward(&h)?, train)?;
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x)?, train)?,
            None => x.clone(),
        };
        Ok((h + identity)?.relu()?)
    }
}

/// A torchvision ResNet without its pooling and classifier.
#[derive(Debug, Clone)]
pub(crate) struct ResNetEncoder {
    conv1: EncoderConv,
    bn1: BatchNorm2d,
    stages: Vec<Vec<BasicBlock>>,
}

impl ResNetEncoder {
    /// Takes the encoder's variables (named as [`encoder_specs`]) from `vars`.
    pub(crate) fn new(cfg: &UNetConfig, vars: &HashMap<String, Var>) -> Result<Self> {
        let take = |name: String| vars[&name].clone();
        let bn = |p: &str| BatchNorm2d {
            weight: take(format!("{p}.weight")),
            bias: take(format!("{p}.bias")),
            running_mean: take(format!("{p}.running_mean")),
            running_var: take(format!("{p}.running_var")),
        };
        let blocks = cfg.encoder.resnet_blocks().expect("a ResNet encoder");
        let mut stages = Vec::new();
        for (stage, &n) in blocks.iter().enumerate() {
            let mut layer = Vec::new();
            for block in 0..n {
                let p = format!("encoder.layer{}.{block}", stage + 1);
                let (stride, downsample) = block_shape(stage, block);
                layer.push(BasicBlock {
                    conv1: EncoderConv::new(take(format!("{p}.conv1.weight")), stride)?,
                    bn1: bn(&format!("{p}.bn1")),
                    conv2: EncoderConv::new(take(format!("{p}.conv2.weight")), 1)?,
                    bn2: bn(&format!("{p}.bn2")),
                    downsample: match downsample {
                        true => Some((
                            EncoderConv::new(take(format!("{p}.downsample.0.weight")), 2)?,
                            bn(&format!("{p}.downsample.1")),
                        )),
                        false => None,
                    },
                });
            }
            stages.push(layer);
        }
        Ok(Self {
            conv1: EncoderConv::new(take("encoder.conv1.weight".into()), 2)?,
            bn1: bn("encoder.bn1"),
            stages,
        })
    }

    /// The encoder maps of levels 1 to 5 (stem, stages 1-4).
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let stem = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        let mut h = max_pool3x3_stride2(&stem)?;
        let mut maps = vec![stem];
        for stage in &self.stages {
            for block in stage {
                h = block.forward_t(&h, train)?;
            }
            maps.push(h.clone());
        }
        Ok(maps)
    }
}

/// Tensors of a torchvision state dict that an encoder does not use: the classifier and the
/// batch-norm step counters.
fn unused_torchvision_tensor(name: &str) -> bool {
    name.starts_with("fc.") || name.ends_with("num_batches_tracked")
}

/// Loads a torchvision ResNet state dict saved as safetensors (`conv1.weight`,
/// `layer1.0.bn1.running_mean`, ..., as `torchvision.models.resnet34().state_dict()` names
/// them) into `model`'s encoder. `fc.*` and `num_batches_tracked` are ignored. For a model
/// with another input channel count than the file's 3, `conv1.weight` is summed over the
/// file's channels and repeated (a grey image then sees what the RGB net saw for the same
/// grey in every channel), as segmentation_models_pytorch does. A missing, unexpected or
/// misshaped tensor is an error naming it. Returns the number of tensors loaded.
pub fn load_torchvision_encoder(path: impl AsRef<Path>, model: &UNet) -> Result<usize> {
    let path = path.as_ref();
    let cfg = model.config();
    let fail = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    if cfg.encoder == Encoder::Plain {
        return Err(fail("the model has no ResNet encoder to load into".into()));
    }
    let device = model
        .parameters()
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let file = candle_core::safetensors::load(path, &device)
        .map_err(|e| fail(format!("not a readable safetensors file: {e}")))?;
    let vars: HashMap<&str, &Var> = model
        .parameters()
        .iter()
        .chain(model.buffers())
        .filter_map(|(n, v)| n.strip_prefix("encoder.").map(|k| (k, v)))
        .collect();
    let mut problems = Vec::new();
    for name in vars.keys() {
        if !file.contains_key(*name) {
            problems.push(format!("missing tensor {name}"));
        }
    }
    let mut unexpected: Vec<&str> = file
        .keys()
        .map(String::as_str)
        .filter(|n| !unused_torchvision_tensor(n) && !vars.contains_key(n))
        .collect();
    unexpected.sort_unstable();
    problems.extend(
        unexpected
            .iter()
            .map(|n| format!("unexpected tensor {n} (a {} file?)", other_depth_hint(n))),
    );
    let mut values = Vec::new();
    for (name, var) in &vars {
        let Some(t) = file.get(*name) else { continue };
        let t = t.to_dtype(var.dtype())?;
        let t = if *name == "conv1.weight" && t.dims() != var.dims() && t.rank() == 4 {
            let (o, _, kh, kw) = t.dims4()?;
            t.sum_keepdim(1)?
                .broadcast_as((o, cfg.in_channels, kh, kw))?
                .contiguous()?
        } else {
            t
        };
        if t.dims() != var.dims() {
            problems.push(format!(
                "{name} has shape {:?}, the model wants {:?}",
                t.dims(),
                var.dims()
            ));
            continue;
        }
        values.push((*var, t));
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(fail(format!(
            "not a torchvision {} state dict for this net: {}",
            cfg.encoder.name(),
            problems.join("; ")
        )));
    }
    for (var, t) in &values {
        var.set(t)?;
    }
    Ok(values.len())
}

/// Which ResNet has blocks that another does not (for the error message).
fn other_depth_hint(name: &str) -> &'static str {
    let deeper = [
        "layer1.2.",
        "layer2.2.",
        "layer2.3.",
        "layer3.2.",
        "layer4.2.",
    ];
    if deeper.iter().any(|p| name.starts_with(p)) {
        "resnet34"
    } else {
        "different network's"
    }
}

/// Multiply-adds x 2 of the encoder's convs for a square input of `size` pixels (the nominal
/// strided work, as PyTorch does it), with the output size of each level.
pub fn encoder_flops(cfg: &UNetConfig, size: usize) -> f64 {
    let blocks = cfg.encoder.resnet_blocks().expect("a ResNet encoder");
    let conv = |c_in: usize, c_out: usize, out: usize, k: usize| {
        2.0 * (out * out) as f64 * (c_in * c_out * k * k) as f64
    };
    let mut s = size / 2;
    let mut flops = conv(cfg.in_channels, 64, s, 7);
    s /= 2;
    let mut c_in = 64;
    for (stage, (&n, &width)) in blocks.iter().zip(&STAGE_WIDTHS).enumerate() {
        for block in 0..n {
            let (stride, downsample) = block_shape(stage, block);
            s /= stride;
            flops += conv(c_in, width, s, 3) + conv(width, width, s, 3);
            if downsample {
                flops += conv(c_in, width, s, 1);
            }
            c_in = width;
        }
    }
    flops
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn every_second_takes_even_rows_and_columns() {
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let y = every_second(&x).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0., 2., 8., 10.]
        );
    }

    #[test]
    fn stem_pool_is_the_padded_3x3_stride_2_maximum() {
        // 1 x 1 x 4 x 4 of distinct non-negative values; PyTorch's max_pool2d(3, 2, 1) by hand.
        let v: Vec<f32> = vec![
            1., 5., 2., 0., //
            3., 4., 9., 6., //
            7., 0., 8., 2., //
            1., 2., 3., 4.,
        ];
        let x = Tensor::from_vec(v, (1, 1, 4, 4), &Device::Cpu).unwrap();
        let y = max_pool3x3_stride2(&x).unwrap();
        // Windows: rows -1..1 / cols -1..1 -> 5; rows -1..1 / cols 1..3 -> 9;
        // rows 1..3 / cols -1..1 -> 7; rows 1..3 / cols 1..3 -> 9.
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![5., 9., 7., 9.]
        );
    }
}
