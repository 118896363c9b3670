//! The U-Net as an ONNX graph (opset 17): batch norm folded into the convolutions, the softmax
//! over the classes inside the graph (the output is per-class probabilities), symbolic batch
//! and spatial sizes.
//!
//! The graph follows [`UNet::forward`] layer by layer: `Conv` (+ `Relu`), `MaxPool`,
//! `ConvTranspose` for the 2x2 up-convolution or `Resize` (linear; `Pad` and `Slice` around it
//! for PyTorch's `align_corners=False`) + a 1x1 `Conv` for bilinear up-sampling, `Slice` for the centre crop of a valid-padding net's skip maps, `Concat`, and
//! for a ResNet encoder strided convolutions, the stem's 3x3 max-pool and `Add` for the residual
//! branches. Inference needs no drop-out.

pub mod proto;

use std::collections::HashMap;

use candle_core::Tensor;
use prost::Message;
use unet_model::layers::BN_EPS;
use unet_model::size::{min_input_size, output_size};
use unet_model::{Encoder, Padding, UNet, UNetConfig, Upsampling};

use crate::{Error, Result};
use proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};

/// The opset the graph is written for.
pub const OPSET: i64 = 17;
/// ONNX IR version 8: the file format of opset 17 (onnx 1.12).
pub const IR_VERSION: i64 = 8;
/// The graph input's name: `[batch, in_channels, height, width]`.
pub const INPUT_NAME: &str = "input";
/// The graph output's name: `[batch, n_classes, height', width']`, probabilities.
pub const OUTPUT_NAME: &str = "probabilities";

/// The model as an ONNX file's bytes: the graph of [`UNet::forward`] followed by a softmax over
/// the classes, with the weights of `model` (batch norm folded in with its running statistics).
pub fn onnx_model(model: &UNet) -> Result<Vec<u8>> {
    let cfg = model.config();
    cfg.validate()?;
    let mut g = Builder::new(model.state());
    let spatial = |name: &str| Dimension {
        dim_value: None,
        dim_param: Some(name.to_string()),
    };
    let value = |n: usize| Dimension {
        dim_value: Some(n as i64),
        dim_param: None,
    };
    let input_shape = vec![
        spatial("batch"),
        value(cfg.in_channels),
        spatial("height"),
        spatial("width"),
    ];
    // A valid-padding net's output is smaller by a fixed number of pixels; ONNX has no
    // arithmetic on symbols, so its spatial sizes are left unnamed.
    let (out_h, out_w) = match cfg.padding {
        Padding::Same => (spatial("height"), spatial("width")),
        Padding::Valid => (Dimension::default(), Dimension::default()),
    };
    let output_shape = vec![spatial("batch"), value(cfg.n_classes), out_h, out_w];
    let logits = g.unet(cfg)?;
    g.node_named(
        "Softmax",
        &[&logits],
        vec![attr_int("axis", 1)],
        OUTPUT_NAME.into(),
    );
    let graph = GraphProto {
        node: g.nodes,
        name: "unet".into(),
        initializer: g.initializers,
        doc_string: format!(
            "U-Net (Ronneberger et al. 2015) exported by unet-rs {}: per-class probabilities",
            env!("CARGO_PKG_VERSION")
        ),
        input: vec![tensor_value(INPUT_NAME, input_shape)],
        output: vec![tensor_value(OUTPUT_NAME, output_shape)],
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "unet-rs".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: String::new(),
        graph: Some(graph),
        metadata_props: Vec::new(),
    };
    Ok(model.encode_to_vec())
}

fn tensor_value(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: proto::FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
        doc_string: String::new(),
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: proto::ATTR_INT,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: proto::ATTR_INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: proto::ATTR_STRING,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A convolution as the graph holds it: kernel `[out, in, k, k]` and bias, batch norm folded.
struct FoldedConv {
    weight: Vec<f32>,
    dims: Vec<usize>,
    bias: Vec<f32>,
}

/// The graph under construction: nodes, initializers and the model's tensors by name.
struct Builder {
    state: HashMap<String, Tensor>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
}

impl Builder {
    fn new(state: HashMap<String, Tensor>) -> Self {
        Self {
            state,
            nodes: Vec::new(),
            initializers: Vec::new(),
            counter: 0,
        }
    }

    /// A tensor of the model, as f32 values and its shape.
    fn tensor(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self.state.get(name).ok_or_else(|| Error::Unsupported {
            what: "the model".into(),
            reason: format!("it has no tensor {name}"),
        })?;
        let values = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok((values, t.dims().to_vec()))
    }

    /// The conv `prefix` (`prefix.weight`, and `prefix.bias` when `has_bias`) with the batch
    /// norm `bn` folded in: `w' = w * g / sqrt(v + eps)`, `b' = (b - m) * g / sqrt(v + eps) + beta`,
    /// computed in f64 so the folding adds no rounding of its own beyond the final cast.
    fn folded(&self, prefix: &str, has_bias: bool, bn: Option<&str>) -> Result<FoldedConv> {
        let (weight, dims) = self.tensor(&format!("{prefix}.weight"))?;
        let c_out = dims[0];
        let bias = match has_bias {
            true => self.tensor(&format!("{prefix}.bias"))?.0,
            false => vec![0.0; c_out],
        };
        let Some(bn) = bn else {
            return Ok(FoldedConv { weight, dims, bias });
        };
        let gamma = self.tensor(&format!("{bn}.weight"))?.0;
        let beta = self.tensor(&format!("{bn}.bias"))?.0;
        let mean = self.tensor(&format!("{bn}.running_mean"))?.0;
        let var = self.tensor(&format!("{bn}.running_var"))?.0;
        let per_out = weight.len() / c_out;
        let mut w = Vec::with_capacity(weight.len());
        let mut b = Vec::with_capacity(c_out);
        for o in 0..c_out {
            let scale = f64::from(gamma[o]) / (f64::from(var[o]) + BN_EPS).sqrt();
            w.extend(
                weight[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| (f64::from(v) * scale) as f32),
            );
            b.push(((f64::from(bias[o]) - f64::from(mean[o])) * scale + f64::from(beta[o])) as f32);
        }
        Ok(FoldedConv {
            weight: w,
            dims,
            bias: b,
        })
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{what}_{}", self.counter)
    }

    fn initializer_f32(&mut self, name: String, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: proto::FLOAT,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    fn initializer_i64(&mut self, name: String, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: proto::INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        output: String,
    ) -> String {
        let name = self.fresh(op);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name,
            op_type: op.into(),
            domain: String::new(),
            attribute,
        });
        output
    }

    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, attribute, out)
    }

    /// A convolution named `name` in the graph, stride `stride`, zero padding `pad`, then a
    /// ReLU when `relu`.
    fn conv(
        &mut self,
        x: &str,
        name: &str,
        conv: FoldedConv,
        (stride, pad): (usize, usize),
        relu: bool,
    ) -> String {
        let k = conv.dims[2] as i64;
        let w = self.initializer_f32(format!("{name}.weight"), &conv.dims, &conv.weight);
        let b = self.initializer_f32(format!("{name}.bias"), &[conv.bias.len()], &conv.bias);
        let (s, p) = (stride as i64, pad as i64);
        let y = self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", 1),
            ],
        );
        match relu {
            true => self.node("Relu", &[&y], vec![]),
            false => y,
        }
    }

    /// Two 3x3 convs of the block `block`, each with its optional batch norm and a ReLU.
    fn double_conv(&mut self, cfg: &UNetConfig, x: &str, block: &str) -> Result<String> {
        let pad = match cfg.padding {
            Padding::Valid => 0,
            Padding::Same => 1,
        };
        let mut h = x.to_string();
        for j in 0..2 {
            let bn = format!("{block}.bn{j}");
            let conv = self.folded(
                &format!("{block}.conv{j}"),
                true,
                cfg.batch_norm.then_some(bn.as_str()),
            )?;
            h = self.conv(&h, &format!("{block}.conv{j}"), conv, (1, pad), true);
        }
        Ok(h)
    }

    /// `x` without `before` rows and columns at the start and `after` at the end; the end is
    /// counted from the far edge, so one Slice fits every input size.
    fn slice(&mut self, x: &str, before: usize, after: usize) -> String {
        let (before, after) = (before as i64, after as i64);
        let starts = self.fresh("slice_starts");
        let starts = self.initializer_i64(starts, &[before, before]);
        let ends = self.fresh("slice_ends");
        let ends = self.initializer_i64(ends, &[-after, -after]);
        let axes = self.fresh("slice_axes");
        let axes = self.initializer_i64(axes, &[2, 3]);
        self.node("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    fn max_pool(&mut self, x: &str, k: i64, stride: i64, pad: i64) -> String {
        self.node(
            "MaxPool",
            &[x],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[pad, pad, pad, pad]),
            ],
        )
    }

    /// The ResNet encoder's maps of levels 1 to 5 (stem, four stages), as
    /// `unet_model::resnet` computes them: strided convs, torchvision's blocks.
    fn resnet_encoder(&mut self, cfg: &UNetConfig, x: &str) -> Result<Vec<String>> {
        let blocks = cfg.encoder.resnet_blocks().expect("a ResNet encoder");
        let stem = self.folded("encoder.conv1", false, Some("encoder.bn1"))?;
        let stem = self.conv(x, "encoder.conv1", stem, (2, 3), true);
        // The stem's max-pool follows a ReLU: ONNX's -inf padding equals the model's zeros.
        let mut h = self.max_pool(&stem, 3, 2, 1);
        let mut maps = vec![stem];
        for (stage, &n) in blocks.iter().enumerate() {
            for block in 0..n {
                let p = format!("encoder.layer{}.{block}", stage + 1);
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                let c1 = self.folded(&format!("{p}.conv1"), false, Some(&format!("{p}.bn1")))?;
                let a = self.conv(&h, &format!("{p}.conv1"), c1, (stride, 1), true);
                let c2 = self.folded(&format!("{p}.conv2"), false, Some(&format!("{p}.bn2")))?;
                let b = self.conv(&a, &format!("{p}.conv2"), c2, (1, 1), false);
                let identity = if stride == 2 {
                    let down = self.folded(
                        &format!("{p}.downsample.0"),
                        false,
                        Some(&format!("{p}.downsample.1")),
                    )?;
                    self.conv(&h, &format!("{p}.downsample.0"), down, (2, 0), false)
                } else {
                    h.clone()
                };
                let sum = self.node("Add", &[&b, &identity], vec![]);
                h = self.node("Relu", &[&sum], vec![]);
            }
            maps.push(h.clone());
        }
        Ok(maps)
    }

    /// 2x up-sampling of `up{level}`: the transposed 2x2 convolution, or bilinear
    /// interpolation and the 1x1 conv.
    fn upsample(&mut self, cfg: &UNetConfig, x: &str, level: usize) -> Result<String> {
        let prefix = format!("up{level}.upconv");
        match cfg.upsampling {
            Upsampling::Transposed => {
                let (w, dims) = self.tensor(&format!("{prefix}.weight"))?;
                let (b, _) = self.tensor(&format!("{prefix}.bias"))?;
                // PyTorch's and ONNX's ConvTranspose layout alike: [in, out, 2, 2].
                let w = self.initializer_f32(format!("{prefix}.weight"), &dims, &w);
                let b = self.initializer_f32(format!("{prefix}.bias"), &[b.len()], &b);
                Ok(self.node(
                    "ConvTranspose",
                    &[x, &w, &b],
                    vec![
                        attr_ints("kernel_shape", &[2, 2]),
                        attr_ints("strides", &[2, 2]),
                    ],
                ))
            }
            Upsampling::Bilinear { align_corners } => {
                let scales =
                    self.initializer_f32(format!("{prefix}.scales"), &[4], &[1.0, 1.0, 2.0, 2.0]);
                let up = if align_corners {
                    self.node(
                        "Resize",
                        &[x, "", &scales],
                        vec![
                            attr_string("mode", "linear"),
                            attr_string("coordinate_transformation_mode", "align_corners"),
                        ],
                    )
                } else {
                    // PyTorch's align_corners=False samples (i + 0.5) / 2 - 0.5, clamped to the
                    // first pixel: ONNX's half_pixel, but a runtime may extrapolate before the
                    // first pixel instead of clamping (tract 0.22 does). With the edge pixels
                    // repeated once, no sample falls outside, and cropping the 2 up-sampled
                    // pixels of each repeat gives the clamped result in every runtime.
                    let pads = self.fresh("edge_pads");
                    let pads = self.initializer_i64(pads, &[0, 0, 1, 1, 0, 0, 1, 1]);
                    let padded = self.node("Pad", &[x, &pads], vec![attr_string("mode", "edge")]);
                    let up = self.node(
                        "Resize",
                        &[&padded, "", &scales],
                        vec![
                            attr_string("mode", "linear"),
                            attr_string("coordinate_transformation_mode", "half_pixel"),
                        ],
                    );
                    self.slice(&up, 2, 2)
                };
                let conv = self.folded(&prefix, true, None)?;
                Ok(self.conv(&up, &prefix, conv, (1, 0), false))
            }
        }
    }

    /// The whole net up to the logits.
    fn unet(&mut self, cfg: &UNetConfig) -> Result<String> {
        // Sizes of one valid input traced along, for the crops of a valid-padding net: the
        // difference between a skip map and the up-sampled map is the same for every input
        // size (each level's sizes grow in step), so a fixed Slice serves all sizes.
        let shrink = match cfg.padding {
            Padding::Valid => 4,
            Padding::Same => 0,
        };
        let mut size = min_input_size(cfg);
        let mut skips: Vec<Option<(String, usize)>> = Vec::new();
        let mut h = INPUT_NAME.to_string();
        if cfg.encoder != Encoder::Plain {
            let mut maps = self.resnet_encoder(cfg, &h)?;
            h = maps.pop().expect("five encoder maps");
            skips.push(None);
            for (i, map) in maps.into_iter().enumerate() {
                skips.push(Some((map, size >> (i + 1))));
            }
            size >>= cfg.depth - 1;
        } else {
            for level in 0..cfg.depth {
                h = self.double_conv(cfg, &h, &format!("down{level}"))?;
                size -= shrink;
                if level + 1 < cfg.depth {
                    skips.push(Some((h.clone(), size)));
                    h = self.max_pool(&h, 2, 2, 0);
                    size /= 2;
                }
            }
        }
        for level in (0..cfg.depth - 1).rev() {
            let up = self.upsample(cfg, &h, level)?;
            size *= 2;
            let joined = match skips[level].clone() {
                Some((skip, skip_size)) => {
                    let crop = skip_size - size;
                    let skip = if crop == 0 {
                        skip
                    } else {
                        // Offsets rounded down, as `unet_model::layers::centre_crop`.
                        self.slice(&skip, crop / 2, crop - crop / 2)
                    };
                    self.node("Concat", &[&skip, &up], vec![attr_int("axis", 1)])
                }
                None => up,
            };
            h = self.double_conv(cfg, &joined, &format!("up{level}"))?;
            size -= shrink;
        }
        debug_assert_eq!(
            Ok(size),
            output_size(cfg, min_input_size(cfg)).map_err(|_| ())
        );
        let classifier = self.folded("classifier", true, None)?;
        Ok(self.conv(&h, "classifier", classifier, (1, 0), false))
    }
}
