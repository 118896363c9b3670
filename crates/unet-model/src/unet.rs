//! The U-Net itself.

mod direct;

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::arch::{parameter_specs, ParamRole};
use crate::config::{Encoder, Padding, UNetConfig, Upsampling};
use crate::layers::{
    centre_crop, dropout, max_pool2x2, seeded_normal, upsample_bilinear2x, BatchNorm2d, Conv2d,
    InitRng, UpConv2x2,
};
use crate::precision::Precision;
use crate::resnet::ResNetEncoder;
use crate::size::checked_output_size;
use crate::{Error, Result};

/// Two 3x3 convs, each followed by an optional batch norm and a ReLU.
#[derive(Debug, Clone)]
struct DoubleConv {
    convs: [Conv2d; 2],
    norms: Option<[BatchNorm2d; 2]>,
}

impl DoubleConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?;
            // Batch norm and ReLU in one pass over memory when the fast kernels apply.
            x = match &self.norms {
                Some(norms) => norms[j].forward_relu_t(&x, train)?,
                None => x.relu()?,
            };
        }
        Ok(x)
    }
}

#[derive(Debug, Clone)]
enum Upsampler {
    Transposed(UpConv2x2),
    Bilinear { conv: Conv2d, align_corners: bool },
}

impl Upsampler {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Upsampler::Transposed(up) => Ok(up.forward(x)?),
            Upsampler::Bilinear {
                conv,
                align_corners,
            } => Ok(conv.forward(&upsample_bilinear2x(x, *align_corners)?)?),
        }
    }
}

#[derive(Debug, Clone)]
struct UpBlock {
    upsample: Upsampler,
    convs: DoubleConv,
}

/// The U-Net: a contracting path of `depth` levels (two 3x3 convs each, 2x2 max-pools between),
/// drop-out at its end, an expanding path (2x up-sampling, concatenation `[skip, up]` with the
/// centre-cropped skip map, two 3x3 convs) and a 1x1 classifier giving logits.
///
/// The tensors are named as in [`crate::parameter_specs`], so checkpoints load by name.
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    /// The plain contracting path (empty with a ResNet encoder).
    down: Vec<DoubleConv>,
    /// A ResNet contracting path.
    encoder: Option<ResNetEncoder>,
    /// Indexed by level: `up[l]` produces level `l`.
    up: Vec<UpBlock>,
    classifier: Conv2d,
    parameters: Vec<(String, Var)>,
    buffers: Vec<(String, Var)>,
    dtype: DType,
    /// The format of the layers' arithmetic ([`UNet::with_precision`]).
    compute_dtype: DType,
}

fn init_for(role: ParamRole) -> Init {
    match role {
        ParamRole::Weight { fan_in } => Init::Randn {
            mean: 0.0,
            stdev: (2.0 / fan_in as f64).sqrt(),
        },
        ParamRole::Bias | ParamRole::BnShift | ParamRole::RunningMean => Init::Const(0.0),
        ParamRole::BnScale | ParamRole::RunningVar => Init::Const(1.0),
    }
}

impl UNet {
    /// Builds the network, taking (or, with a `VarMap`-backed builder, creating with He
    /// initialisation) every tensor of [`crate::parameter_specs`] from `vb`.
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut vars: HashMap<String, Var> = HashMap::new();
        let mut parameters = Vec::new();
        let mut buffers = Vec::new();
        for spec in parameter_specs(cfg) {
            let t = vb.get_with_hints(spec.shape.as_slice(), &spec.name, init_for(spec.role))?;
            // With a VarMap the tensor already is a variable and the Var shares its storage.
            let var = Var::from_tensor(&t)?;
            if spec.role.trainable() {
                parameters.push((spec.name.clone(), var.clone()));
            } else {
                buffers.push((spec.name.clone(), var.clone()));
            }
            vars.insert(spec.name, var);
        }
        let take = |name: String| -> Var { vars[&name].clone() };
        let padding = match cfg.padding {
            Padding::Valid => 0,
            Padding::Same => 1,
        };
        let conv = |prefix: &str, padding: usize| Conv2d {
            weight: take(format!("{prefix}.weight")),
            bias: take(format!("{prefix}.bias")),
            padding,
        };
        let bn = |prefix: &str| BatchNorm2d {
            weight: take(format!("{prefix}.weight")),
            bias: take(format!("{prefix}.bias")),
            running_mean: take(format!("{prefix}.running_mean")),
            running_var: take(format!("{prefix}.running_var")),
        };
        let double = |block: &str| DoubleConv {
            convs: [
                conv(&format!("{block}.conv0"), padding),
                conv(&format!("{block}.conv1"), padding),
            ],
            norms: cfg
                .batch_norm
                .then(|| [bn(&format!("{block}.bn0")), bn(&format!("{block}.bn1"))]),
        };
        let (down, encoder) = match cfg.encoder {
            Encoder::Plain => (
                (0..cfg.depth)
                    .map(|l| double(&format!("down{l}")))
                    .collect(),
                None,
            ),
            _ => (Vec::new(), Some(ResNetEncoder::new(cfg, &vars)?)),
        };
        let up = (0..cfg.depth - 1)
            .map(|l| {
                let prefix = format!("up{l}.upconv");
                let upsample = match cfg.upsampling {
                    Upsampling::Transposed => Upsampler::Transposed(UpConv2x2 {
                        weight: take(format!("{prefix}.weight")),
                        bias: take(format!("{prefix}.bias")),
                    }),
                    Upsampling::Bilinear { align_corners } => Upsampler::Bilinear {
                        conv: conv(&prefix, 0),
                        align_corners,
                    },
                };
                UpBlock {
                    upsample,
                    convs: double(&format!("up{l}")),
                }
            })
            .collect();
        let classifier = conv("classifier", 0);
        Ok(Self {
            cfg: cfg.clone(),
            down,
            encoder,
            up,
            classifier,
            parameters,
            buffers,
            dtype: vb.dtype(),
            compute_dtype: vb.dtype(),
        })
    }

    /// A network of `cfg` with f32 parameters on `device`, initialised deterministically from
    /// `seed` ([`UNet::init_seeded`]): what training, benchmarks and tests start from.
    pub fn seeded(cfg: &UNetConfig, seed: u64, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        // The model keeps its own handles on the variables; the map is only the builder's.
        let model = Self::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        model.init_seeded(seed)?;
        Ok(model)
    }

    /// Re-initialises every tensor deterministically from `seed` (He normal weights, zero biases,
    /// unit batch-norm scales, fresh running statistics). candle cannot seed its CPU generator,
    /// so [`UNet::new`]'s initialisation is not reproducible; this is.
    pub fn init_seeded(&self, seed: u64) -> Result<()> {
        let mut rng = InitRng::new(seed);
        let vars: HashMap<&str, &Var> = self
            .parameters
            .iter()
            .chain(&self.buffers)
            .map(|(n, v)| (n.as_str(), v))
            .collect();
        for spec in parameter_specs(&self.cfg) {
            let var = vars[spec.name.as_str()];
            let value = match spec.role {
                ParamRole::Weight { fan_in } => seeded_normal(
                    &mut rng,
                    &spec.shape,
                    (2.0 / fan_in as f64).sqrt(),
                    var.dtype(),
                    var.device(),
                )?,
                ParamRole::Bias | ParamRole::BnShift | ParamRole::RunningMean => {
                    var.zeros_like()?
                }
                ParamRole::BnScale | ParamRole::RunningVar => var.ones_like()?,
            };
            var.set(&value)?;
        }
        Ok(())
    }

    /// The same network (sharing its parameters) computing in `precision`: the input is cast to
    /// the compute format and the logits back to the parameters' dtype, each layer casts its
    /// weights to the compute format (so gradients reach the master weights in their own
    /// dtype), and batch normalisation runs in the parameters' dtype ([`crate::precision`]).
    /// [`Precision::F32`] computes in the parameters' own dtype.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.compute_dtype = match precision {
            Precision::F32 => self.dtype,
            other => other.dtype(),
        };
        self
    }

    /// The dtype the layers compute in.
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The trainable parameters with their names (what an optimizer updates).
    pub fn parameters(&self) -> &[(String, Var)] {
        &self.parameters
    }

    /// The buffers (batch-norm running statistics) with their names: saved, not trained.
    pub fn buffers(&self) -> &[(String, Var)] {
        &self.buffers
    }

    /// The number of trainable scalars (PyTorch's count).
    pub fn parameter_count(&self) -> usize {
        self.parameters.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Every tensor (parameters and buffers) by name: what a checkpoint stores.
    pub fn state(&self) -> HashMap<String, Tensor> {
        self.parameters
            .iter()
            .chain(&self.buffers)
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Sets every tensor from `state` by name. Missing names, unexpected names and shape
    /// mismatches are refused before anything is changed.
    pub fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut problems = Vec::new();
        let all: Vec<&(String, Var)> = self.parameters.iter().chain(&self.buffers).collect();
        for (name, var) in &all {
            match state.get(name) {
                None => problems.push(format!("missing tensor {name}")),
                Some(t) if t.dims() != var.dims() => problems.push(format!(
                    "{name} has shape {:?}, the model wants {:?}",
                    t.dims(),
                    var.dims()
                )),
                Some(_) => {}
            }
        }
        for name in state.keys() {
            if !all.iter().any(|(n, _)| n == name) {
                problems.push(format!("unexpected tensor {name}"));
            }
        }
        if !problems.is_empty() {
            return Err(Error::State { problems });
        }
        for (name, var) in all {
            let t = state[name].to_device(var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// The output (height, width) for an input (height, width), or a size error naming the
    /// nearest valid sizes.
    pub fn output_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        Ok((
            checked_output_size(&self.cfg, height, "input height")?,
            checked_output_size(&self.cfg, width, "input width")?,
        ))
    }

    /// Runs the network on `x` (`[N, in_channels, H, W]`, the parameters' dtype) and returns the
    /// logits `[N, n_classes, H', W']`. `train` selects batch statistics in batch norm and
    /// enables drop-out. The input size is checked first (see [`crate::output_size`]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.cfg.in_channels || x.dtype() != self.dtype {
            return Err(Error::InputShape {
                expected: format!(
                    "[N, {}, H, W] of dtype {:?} (got dtype {:?})",
                    self.cfg.in_channels,
                    self.dtype,
                    x.dtype()
                ),
                got: dims.to_vec(),
            });
        }
        self.output_size(dims[2], dims[3])?;

        // skips[l]: the contracting path's map at level l (none at level 0 for a ResNet).
        let mut skips: Vec<Option<Tensor>> = Vec::with_capacity(self.cfg.depth);
        let x = &x.to_dtype(self.compute_dtype)?;
        let mut h = x.clone();
        if let Some(encoder) = &self.encoder {
            let mut maps = encoder.forward_t(x, train)?;
            h = maps.pop().expect("five encoder maps");
            skips.push(None);
            skips.extend(maps.into_iter().map(Some));
        }
        for (level, block) in self.down.iter().enumerate() {
            h = block.forward_t(&h, train)?;
            if level + 1 < self.cfg.depth {
                skips.push(Some(h.clone()));
                h = max_pool2x2(&h)?;
            }
        }
        if train {
            h = dropout(&h, self.cfg.dropout)?;
        }
        for level in (0..self.cfg.depth - 1).rev() {
            let block = &self.up[level];
            let up = block.upsample.forward(&h)?;
            let (_, _, uh, uw) = up.dims4()?;
            let joined = match &skips[level] {
                Some(skip) => Tensor::cat(&[&centre_crop(skip, uh, uw)?, &up], 1)?,
                None => up,
            };
            h = block.convs.forward_t(&joined, train)?;
        }
        Ok(self.classifier.forward(&h)?.to_dtype(self.dtype)?)
    }

    /// The encoder's maps of levels 1 to 5 (the stem and the four stages, strides 2 to 32) of
    /// a ResNet U-Net, for feature extraction and tests; an error for the plain encoder.
    pub fn encoder_maps(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        match &self.encoder {
            Some(encoder) => {
                let (_, _, h, w) = x.dims4()?;
                self.output_size(h, w)?;
                encoder.forward_t(&x.to_dtype(self.compute_dtype)?, train)
            }
            None => Err(Error::InputShape {
                expected: "a net with a ResNet encoder".into(),
                got: x.dims().to_vec(),
            }),
        }
    }

    /// Inference: `forward_t(x, false)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn std_of(t: &Tensor) -> f64 {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    }

    #[test]
    fn he_initialisation_with_and_without_seed() {
        let cfg = UNetConfig {
            depth: 2,
            base_width: 16,
            ..UNetConfig::small()
        };
        let varmap = VarMap::new();
        let model = UNet::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let weight = |m: &UNet, name: &str| {
            m.parameters()
                .iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1
                .as_tensor()
                .clone()
        };
        // down1.conv1: 32 -> 32 channels, fan-in 288, 9216 weights.
        let want = (2.0f64 / 288.0).sqrt();
        for seeded in [false, true] {
            if seeded {
                model.init_seeded(5).unwrap();
            }
            let got = std_of(&weight(&model, "down1.conv1.weight"));
            assert!(
                (got / want - 1.0).abs() < 0.05,
                "seeded {seeded}: {got} vs {want}"
            );
            // The up-conv's fan-in is its input channels (each output pixel sees one input pixel).
            let got = std_of(&weight(&model, "up0.upconv.weight"));
            let want_up = (2.0f64 / 32.0).sqrt();
            assert!((got / want_up - 1.0).abs() < 0.1, "{got} vs {want_up}");
            let bias = weight(&model, "down1.conv1.bias");
            assert_eq!(std_of(&bias), 0.0);
        }
        // The VarMap holds the same variables the model trains.
        let in_map = varmap.data().lock().unwrap()["down1.conv1.weight"].clone();
        assert_eq!(
            in_map
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            weight(&model, "down1.conv1.weight")
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        // A second seeded init is reproducible.
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let before = flat(weight(&model, "classifier.weight"));
        model.init_seeded(5).unwrap();
        assert_eq!(before, flat(weight(&model, "classifier.weight")));
        model.init_seeded(6).unwrap();
        assert_ne!(before, flat(weight(&model, "classifier.weight")));
    }

    #[test]
    fn half_precision_follows_f32_and_trains_the_f32_master_weights() {
        for encoder in [Encoder::Plain, Encoder::Resnet18] {
            let cfg = UNetConfig {
                depth: if encoder == Encoder::Plain { 3 } else { 6 },
                base_width: 8,
                encoder,
                ..UNetConfig::small()
            };
            let model = UNet::seeded(&cfg, 3, &Device::Cpu).unwrap();
            let x = Tensor::arange(0f32, 2.0 * 64.0 * 64.0, &Device::Cpu)
                .unwrap()
                .reshape((2, 1, 64, 64))
                .unwrap()
                .affine(1.0 / 4096.0, -1.0)
                .unwrap()
                .sin()
                .unwrap();
            let half = model.clone().with_precision(Precision::F16);
            assert_eq!(half.compute_dtype(), DType::F16);
            let want = model.forward_t(&x, false).unwrap();
            let got = half.forward_t(&x, false).unwrap();
            assert_eq!(got.dtype(), DType::F32, "logits come back in f32");
            let max_abs = |t: &Tensor| -> f32 {
                let m = t.abs().and_then(|a| a.max_all()).unwrap();
                m.to_scalar::<f32>().unwrap()
            };
            let (err, scale) = (max_abs(&(&got - &want).unwrap()), max_abs(&want));
            assert!(err <= 0.02 * scale, "{encoder:?}: {err} vs {scale}");

            // Every parameter gets an f32 gradient through the casts.
            let loss = half
                .forward_t(&x, true)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            for (name, var) in model.parameters() {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}"));
                assert_eq!(g.dtype(), DType::F32, "{name}");
            }
        }
    }
}
