//! The network's parameters and layers as data: names, shapes, initialisation, the parameter
//! count and a printable layer table. [`crate::UNet::new`] builds exactly these parameters.

use crate::config::{Padding, UNetConfig, Upsampling};
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
    for level in (0..cfg.depth.saturating_sub(1)).rev() {
        let (wide, narrow) = (cfg.width(level + 1), cfg.width(level));
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
        double_conv_specs(&mut out, cfg, &format!("up{level}"), 2 * narrow, narrow);
    }
    conv_specs(&mut out, "classifier", cfg.width(0), cfg.n_classes, 1);
    out
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
    for level in 0..cfg.depth {
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
        let (wide, w) = (cfg.width(level + 1), cfg.width(level));
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
        row(
            format!("up{level}.concat"),
            if skip == size {
                "concat skip".to_string()
            } else {
                format!("concat skip cropped {skip} -> {size}")
            },
            format!("{w} + {w}"),
            size,
            0,
        );
        for j in 0..2 {
            size -= shrink;
            let c = if j == 0 { 2 * w } else { w };
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
