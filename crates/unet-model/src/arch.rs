//! The network's parameters and layers as data: names, shapes, initialisation, the parameter
//! count and a printable layer table. [`crate::UNet::new`] builds exactly these parameters.

use crate::config::{Encoder, Padding, UNetConfig, Upsampling};
use crate::resnet;
use crate::size::conv_shrink;
use crate::Result;

/// What a named tensor is, which decides its initialisation and whether it is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// A conv kernel: He normal, std `sqrt(2 / fan_in)`.
    Weight {
        /// Inputs of one output neuron (`in * k * k`; `in` for the 2x2 stride-2 up-conv, where
        /// each output pixel sees one input pixel).
        fan_in: usize,
    },
    /// A conv bias: zeros.
    Bias,
    /// A batch-norm scale: ones.
    BnScale,
    /// A batch-norm shift: zeros.
    BnShift,
    /// A batch-norm running mean (buffer, not trained): zeros.
    RunningMean,
    /// A batch-norm running variance (buffer, not trained): ones.
    RunningVar,
}

impl ParamRole {
    /// Whether the optimizer trains it (PyTorch's parameters; the running statistics are buffers).
    pub fn trainable(self) -> bool {
        !matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

/// One named tensor of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The checkpoint key, e.g. `down0.conv1.weight`, `up2.upconv.bias`, `classifier.weight`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// What it is.
    pub role: ParamRole,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

fn conv_specs(out: &mut Vec<ParamSpec>, prefix: &str, c_in: usize, c_out: usize, k: usize) {
    out.push(ParamSpec {
        name: format!("{prefix}.weight"),
        shape: vec![c_out, c_in, k, k],
        role: ParamRole::Weight {
            fan_in: c_in * k * k,
        },
    });
    out.push(ParamSpec {
        name: format!("{prefix}.bias"),
        shape: vec![c_out],
        role: ParamRole::Bias,
    });
}

fn bn_specs(out: &mut Vec<ParamSpec>, prefix: &str, c: usize) {
    for (suffix, role) in [
        ("weight", ParamRole::BnScale),
        ("bias", ParamRole::BnShift),
        ("running_mean", ParamRole::RunningMean),
        ("running_var", ParamRole::RunningVar),
    ] {
        out.push(ParamSpec {
            name: format!("{prefix}.{suffix}"),
            shape: vec![c],
            role,
        });
    }
}

fn double_conv_specs(
    out: &mut Vec<ParamSpec>,
    cfg: &UNetConfig,
    prefix: &str,
    c_in: usize,
    c_out: usize,
) {
    for j in 0..2 {
        let c = if j == 0 { c_in } else { c_out };
        conv_specs(out, &format!("{prefix}.conv{j}"), c, c_out, 3);
        if cfg.batch_norm {
            bn_specs(out, &format!("{prefix}.bn{j}"), c_out);
        }
    }
}

/// Every named tensor of the network (parameters and buffers), in forward order.
///
/// Names: `down{l}.conv{j}.{weight,bias}`, `down{l}.bn{j}.{weight,bias,running_mean,running_var}`
/// for levels `l = 0..depth` and convs `j = 0, 1`; `up{l}.upconv.{weight,bias}` and
/// `up{l}.conv{j}`, `up{l}.bn{j}` for `l = depth-2 .. 0` (`up{l}` produces level `l`'s width and
/// joins `down{l}`'s skip); `classifier.{weight,bias}`.
pub fn parameter_specs(cfg: &UNetConfig) -> Vec<ParamSpec> {
    let mut out = Vec::new();
    if cfg.encoder == Encoder::Plain {
        for level in 0..cfg.depth {
            let c_in = if level == 0 {
                cfg.in_channels
            } else {
                cfg.width(level - 1)
            };
            double_conv_specs(
                &mut out,
                cfg,
                &format!("down{level}"),
                c_in,
                cfg.width(level),
            );
        }
    } else {
        resnet::encoder_specs(cfg, &mut out, bn_specs);
    }
    for level in (0..cfg.depth.saturating_sub(1)).rev() {
        let (wide, narrow) = (up_input_width(cfg, level), cfg.width(level));
        let prefix = format!("up{level}.upconv");
        match cfg.upsampling {
            Upsampling::Transposed => {
                out.push(ParamSpec {
                    name: format!("{prefix}.weight"),
                    shape: vec![wide, narrow, 2, 2],
                    role: ParamRole::Weight { fan_in: wide },
                });
                out.push(ParamSpec {
                    name: format!("{prefix}.bias"),
                    shape: vec![narrow],
                    role: ParamRole::Bias,
                });
            }
            Upsampling::Bilinear { .. } => conv_specs(&mut out, &prefix, wide, narrow, 1),
        }
        let c_in = narrow + skip_width(cfg, level);
        double_conv_specs(&mut out, cfg, &format!("up{level}"), c_in, narrow);
    }
    conv_specs(&mut out, "classifier", cfg.width(0), cfg.n_classes, 1);
    out
}

/// Channels of the contracting path's map that decoder level `level` joins (0: none).
pub(crate) fn skip_width(cfg: &UNetConfig, level: usize) -> usize {
    match cfg.encoder {
        Encoder::Plain => cfg.width(level),
        _ => resnet::skip_channels(level),
    }
}

/// Channels entering decoder block `up{level}`: the level below's decoder width, or the
/// encoder's deepest map.
pub(crate) fn up_input_width(cfg: &UNetConfig, level: usize) -> usize {
    match cfg.encoder {
        Encoder::Plain => cfg.width(level + 1),
        _ if level + 2 == cfg.depth => resnet::skip_channels(level + 1),
        _ => cfg.width(level + 1),
    }
}

/// Floating-point operations (2 per multiply-add) of the forward convolutions of one square
/// image of `size` pixels: 3x3 convs, up-convolutions, the classifier, and a ResNet encoder's
/// convs at their nominal stride. The size is not checked (see [`crate::output_size`]).
pub fn conv_flops(cfg: &UNetConfig, size: usize) -> f64 {
    let shrink = conv_shrink(cfg.padding) / 2;
    let conv = |c_in: usize, c_out: usize, out: usize, k: usize| {
        2.0 * (out * out) as f64 * (c_in * c_out * k * k) as f64
    };
    let mut s = size;
    let mut flops = 0.0;
    if cfg.encoder == Encoder::Plain {
        let mut c = cfg.in_channels;
        for level in 0..cfg.depth {
            let w = cfg.width(level);
            s -= shrink;
            flops += conv(c, w, s, 3);
            s -= shrink;
            flops += conv(w, w, s, 3);
            c = w;
            if level + 1 < cfg.depth {
                s /= 2;
            }
        }
    } else {
        flops += resnet::encoder_flops(cfg, size);
        s = size >> (cfg.depth - 1);
    }
    for level in (0..cfg.depth.saturating_sub(1)).rev() {
        let (c, w) = (up_input_width(cfg, level), cfg.width(level));
        s *= 2;
        // Each output pixel of the 2x2 stride-2 up-conv sees one input pixel: the cost of a
        // 1x1 conv at the output size, as is the bilinear variant's 1x1 conv.
        flops += conv(c, w, s, 1);
        s -= shrink;
        flops += conv(w + skip_width(cfg, level), w, s, 3);
        s -= shrink;
        flops += conv(w, w, s, 3);
    }
    flops + conv(cfg.width(0), cfg.n_classes, s, 1)
}

/// Trainable parameters, counted as PyTorch does (batch-norm running statistics excluded):
/// 31,030,658 for the paper's net with 2 classes, 31,042,434 for the reference's.
pub fn parameter_count(cfg: &UNetConfig) -> usize {
    parameter_specs(cfg)
        .iter()
        .filter(|s| s.role.trainable())
        .map(ParamSpec::numel)
        .sum()
}

/// Elements of the buffers (batch-norm running statistics), stored beside the parameters.
pub fn buffer_count(cfg: &UNetConfig) -> usize {
    parameter_specs(cfg)
        .iter()
        .filter(|s| !s.role.trainable())
        .map(ParamSpec::numel)
        .sum()
}

fn params_under(specs: &[ParamSpec], prefix: &str) -> usize {
    specs
        .iter()
        .filter(|s| s.role.trainable() && s.name.starts_with(prefix))
        .map(ParamSpec::numel)
        .sum()
}

/// A human-readable table of the layers for square inputs of `input_size` pixels: name,
/// operation, channels, output size and trainable parameters, with the total.
///
/// Fails with the size error (naming the nearest valid sizes) if `input_size` does not fit.
pub fn layer_table(cfg: &UNetConfig, input_size: usize) -> Result<String> {
    cfg.validate()?;
    let output = crate::size::output_size(cfg, input_size)?;
    let specs = parameter_specs(cfg);
    let shrink = conv_shrink(cfg.padding) / 2;
    let pad = match cfg.padding {
        Padding::Valid => "valid",
        Padding::Same => "same",
    };
    let bn = if cfg.batch_norm { " + BN" } else { "" };
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut row = |name: String, op: String, ch: String, size: usize, params: usize| {
        let params = if params == 0 {
            "-".to_string()
        } else {
            params.to_string()
        };
        rows.push([name, op, ch, format!("{size}x{size}"), params]);
    };
    row(
        "input".into(),
        "-".into(),
        cfg.in_channels.to_string(),
        input_size,
        0,
    );
    let mut size = input_size;
    let mut skip_sizes = Vec::new();
    if let Some(blocks) = cfg.encoder.resnet_blocks() {
        // Same padding throughout: the map of level l has size input / 2^l.
        size /= 2;
        skip_sizes.extend([input_size, size]);
        row(
            "encoder.conv1".into(),
            "conv 7x7 stride 2 + BN + ReLU".into(),
            format!("{} -> 64", cfg.in_channels),
            size,
            params_under(&specs, "encoder.conv1.") + params_under(&specs, "encoder.bn1."),
        );
        size /= 2;
        row(
            "encoder.maxpool".into(),
            "max-pool 3x3 stride 2".into(),
            "64".into(),
            size,
            0,
        );
        let mut c = 64;
        for (stage, (&n, &w)) in blocks.iter().zip(&resnet::STAGE_WIDTHS).enumerate() {
            if stage > 0 {
                size /= 2;
            }
            skip_sizes.push(size);
            let name = format!("encoder.layer{}", stage + 1);
            let params = params_under(&specs, &format!("{name}."));
            let stride = if stage > 0 {
                ", the first stride 2"
            } else {
                ""
            };
            row(
                name,
                format!("{n} basic blocks{stride}"),
                format!("{c} -> {w}"),
                size,
                params,
            );
            c = w;
        }
        if cfg.dropout > 0.0 {
            row(
                "encoder.dropout".into(),
                format!("dropout p={}", cfg.dropout),
                c.to_string(),
                size,
                0,
            );
        }
    }
    for level in 0..cfg.depth {
        if cfg.encoder != Encoder::Plain {
            break;
        }
        let c_in = if level == 0 {
            cfg.in_channels
        } else {
            cfg.width(level - 1)
        };
        let w = cfg.width(level);
        for j in 0..2 {
            size -= shrink;
            let c = if j == 0 { c_in } else { w };
            let name = format!("down{level}.conv{j}");
            let params = params_under(&specs, &format!("{name}."))
                + params_under(&specs, &format!("down{level}.bn{j}."));
            row(
                name,
                format!("conv 3x3 {pad}{bn} + ReLU"),
                format!("{c} -> {w}"),
                size,
                params,
            );
        }
        if level + 1 < cfg.depth {
            skip_sizes.push(size);
            size /= 2;
            row(
                format!("down{level}.pool"),
                "max-pool 2x2".into(),
                w.to_string(),
                size,
                0,
            );
        } else if cfg.dropout > 0.0 {
            row(
                format!("down{level}.dropout"),
                format!("dropout p={}", cfg.dropout),
                w.to_string(),
                size,
                0,
            );
        }
    }
    for level in (0..cfg.depth.saturating_sub(1)).rev() {
        let (wide, w) = (up_input_width(cfg, level), cfg.width(level));
        let skip_w = skip_width(cfg, level);
        size *= 2;
        let op = match cfg.upsampling {
            Upsampling::Transposed => "up-conv 2x2 stride 2".to_string(),
            Upsampling::Bilinear { align_corners } => {
                format!("bilinear 2x (align_corners={align_corners}) + conv 1x1")
            }
        };
        row(
            format!("up{level}.upconv"),
            op,
            format!("{wide} -> {w}"),
            size,
            params_under(&specs, &format!("up{level}.upconv.")),
        );
        let skip = skip_sizes[level];
        if skip_w > 0 {
            row(
                format!("up{level}.concat"),
                if skip == size {
                    "concat skip".to_string()
                } else {
                    format!("concat skip cropped {skip} -> {size}")
                },
                format!("{skip_w} + {w}"),
                size,
                0,
            );
        }
        for j in 0..2 {
            size -= shrink;
            let c = if j == 0 { w + skip_w } else { w };
            let name = format!("up{level}.conv{j}");
            let params = params_under(&specs, &format!("{name}."))
                + params_under(&specs, &format!("up{level}.bn{j}."));
            row(
                name,
                format!("conv 3x3 {pad}{bn} + ReLU"),
                format!("{c} -> {w}"),
                size,
                params,
            );
        }
    }
    row(
        "classifier".into(),
        "conv 1x1 (logits)".into(),
        format!("{} -> {}", cfg.width(0), cfg.n_classes),
        size,
        params_under(&specs, "classifier."),
    );
    debug_assert_eq!(size, output);

    let header = ["layer", "op", "channels", "output", "params"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                s.push_str(&format!("{cell:>w$}"));
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.push_str(s.trim_end());
        text.push('\n');
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    let total = parameter_count(cfg);
    text.push_str(&format!(
        "{total} trainable parameters ({:.2} M); {} buffer values; {input_size}x{input_size} -> {output}x{output}\n",
        total as f64 / 1e6,
        buffer_count(cfg)
    ));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_and_reference_counts_match_pytorch() {
        assert_eq!(parameter_count(&UNetConfig::paper()), 31_030_658);
        assert_eq!(parameter_count(&UNetConfig::reference()), 31_042_434);
        assert_eq!(buffer_count(&UNetConfig::paper()), 0);
        assert_eq!(
            buffer_count(&UNetConfig::reference()),
            31_042_434 - 31_030_658
        );
    }

    #[test]
    fn paper_has_23_convs_and_unique_names() {
        let specs = parameter_specs(&UNetConfig::paper());
        let convs = specs
            .iter()
            .filter(|s| matches!(s.role, ParamRole::Weight { .. }))
            .count();
        assert_eq!(convs, 23);
        let mut names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs.len());
        assert_eq!(
            specs[0].role,
            ParamRole::Weight { fan_in: 9 },
            "{:?}",
            specs[0]
        );
    }

    #[test]
    fn conv_flops_by_hand() {
        // A depth-2 same-padding net with widths 1 and 2 at 2x2 input:
        // down0: 1->1 and 1->1 at 2x2 (2 * 4 * 9 each); down1: 1->2, 2->2 at 1x1;
        // up-conv 2->1 at 2x2 (2 * 4 * 2); up0: 2->1, 1->1 at 2x2; classifier 1->2 at 2x2.
        let cfg = UNetConfig {
            depth: 2,
            base_width: 1,
            ..UNetConfig::small()
        };
        let want = 2.0 * 4.0 * 9.0 * 2.0
            + 2.0 * 9.0 * (2.0 + 4.0)
            + 2.0 * 4.0 * 2.0
            + 2.0 * 4.0 * 9.0 * (2.0 + 1.0)
            + 2.0 * 4.0 * 2.0;
        assert_eq!(conv_flops(&cfg, 2), want);
        // torchvision's resnet34 at 224 x 224: 3.664 (G multiply-adds, its weights' "_ops")
        // with 3 channels, of which 0.5 MMAC are the classifier, not counted here.
        let r34 = UNetConfig {
            in_channels: 3,
            ..UNetConfig::resnet(Encoder::Resnet34)
        };
        let encoder = resnet::encoder_flops(&r34, 224);
        assert!((encoder / 2.0 / 1e9 - 3.66).abs() < 0.02, "{encoder}");
        assert!(conv_flops(&r34, 224) > encoder);
    }

    #[test]
    fn table_of_the_paper() {
        let table = layer_table(&UNetConfig::paper(), 572).unwrap();
        assert!(table.contains("572x572 -> 388x388"), "{table}");
        assert!(table.contains("31030658 trainable parameters"), "{table}");
        assert!(table.contains("concat skip cropped 568 -> 392"), "{table}");
        assert!(table.contains("dropout p=0.5"), "{table}");
        let err = layer_table(&UNetConfig::paper(), 570).unwrap_err();
        assert!(err.to_string().contains("572"), "{err}");
    }
}
