//! Size rules: which input sizes a configuration takes and what output size they give.
//!
//! With valid padding every 3x3 conv removes a 1-pixel border, so a level's two convs take 4
//! pixels off, and every 2x2 max-pool needs an even size. Valid inputs are therefore
//! `2^(depth-1) * t + 4 * (2^(depth-1) - 1)` for large enough `t` (572 = 16 * 32 + 60 at depth 5),
//! and the output is smaller than the input. With same padding the input must divide by
//! `2^(depth-1)` and the output has the input's size. Height and width follow the rules separately.

use crate::config::{Padding, UNetConfig};
use crate::{Error, Result};

/// Why a size does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeProblem {
    /// The map at `level` has odd size `size` where a 2x2 max-pool needs it even.
    OddBeforePool {
        /// The level whose pool fails (0 = full resolution).
        level: usize,
        /// The size that reaches the pool.
        size: usize,
    },
    /// The map at `level` has `size` pixels, too few for its convs (a valid 3x3 conv needs 3).
    Vanishes {
        /// The level where the map vanishes; levels past `depth - 1` are in the expanding path.
        level: usize,
        /// The size entering the convs.
        size: usize,
    },
}

impl std::fmt::Display for SizeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeProblem::OddBeforePool { level, size } => write!(
                f,
                "the 2x2 max-pool after level {level} would see an odd size ({size})"
            ),
            SizeProblem::Vanishes { level, size } => write!(
                f,
                "the map shrinks to nothing at level {level} (size {size} before its convs)"
            ),
        }
    }
}

/// The details of [`Error::InputSize`]: an input size the network cannot take, with the
/// nearest sizes that work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {size} does not fit a {padding}-padding U-Net of depth {depth}: {problem}; {}", nearest_text(self.nearest))]
pub struct SizeError {
    /// Which size: "input size", "input height" or "input width".
    pub what: &'static str,
    /// The size given.
    pub size: usize,
    /// The network's depth.
    pub depth: usize,
    /// "valid" or "same".
    pub padding: &'static str,
    /// What goes wrong.
    pub problem: SizeProblem,
    /// The nearest valid input sizes around `size`.
    pub nearest: NearestSizes,
}

fn nearest_text(n: NearestSizes) -> String {
    let fmt = |s: Option<(usize, usize)>| s.map(|(i, o)| format!("{i} (output {o})"));
    match (fmt(n.below), fmt(n.above)) {
        (Some(b), Some(a)) => format!("nearest valid input sizes: {b} and {a}"),
        (None, Some(a)) => format!("smallest valid input size: {a}"),
        (Some(b), None) => format!("nearest valid input size: {b}"),
        (None, None) => "no valid input size exists".to_string(),
    }
}

/// The valid input sizes nearest to a wanted size, each with its output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearestSizes {
    /// The largest valid `(input, output)` with input <= the wanted size, if any.
    pub below: Option<(usize, usize)>,
    /// The smallest valid `(input, output)` with input >= the wanted size.
    pub above: Option<(usize, usize)>,
}

/// The map size after the 3x3 convs of one level (4 pixels less with valid padding).
pub(crate) fn conv_shrink(padding: Padding) -> usize {
    match padding {
        Padding::Valid => 4,
        Padding::Same => 0,
    }
}

/// Runs the size through the network; the output size or the first problem.
fn simulate(cfg: &UNetConfig, input: usize) -> std::result::Result<usize, SizeProblem> {
    let shrink = conv_shrink(cfg.padding);
    let depth = cfg.depth.max(1);
    let mut s = input;
    for level in 0..depth {
        if s <= shrink || s == 0 {
            return Err(SizeProblem::Vanishes { level, size: s });
        }
        s -= shrink;
        if level + 1 < depth {
            if !s.is_multiple_of(2) {
                return Err(SizeProblem::OddBeforePool { level, size: s });
            }
            s /= 2;
        }
    }
    for step in 0..depth - 1 {
        s *= 2;
        if s <= shrink {
            return Err(SizeProblem::Vanishes {
                level: depth + step,
                size: s,
            });
        }
        s -= shrink;
    }
    Ok(s)
}

/// The output size for an input size (height or width), or an [`Error::InputSize`] naming the
/// nearest valid sizes. The paper's net maps 572 to 388.
pub fn output_size(cfg: &UNetConfig, input: usize) -> Result<usize> {
    checked_output_size(cfg, input, "input size")
}

/// [`output_size`] with the error naming the size as `what` (e.g. "input tile").
pub fn checked_output_size(cfg: &UNetConfig, input: usize, what: &'static str) -> Result<usize> {
    simulate(cfg, input).map_err(|problem| {
        Error::from(SizeError {
            what,
            size: input,
            depth: cfg.depth,
            padding: match cfg.padding {
                Padding::Valid => "valid",
                Padding::Same => "same",
            },
            problem,
            nearest: nearest_valid_input_sizes(cfg, input),
        })
    })
}

/// Whether the network takes this input size.
pub fn is_valid_input_size(cfg: &UNetConfig, input: usize) -> bool {
    simulate(cfg, input).is_ok()
}

/// The step between consecutive valid input sizes: `2^(depth-1)`.
pub fn input_size_step(cfg: &UNetConfig) -> usize {
    1 << cfg.depth.max(1).saturating_sub(1)
}

/// The smallest valid input size.
pub fn min_input_size(cfg: &UNetConfig) -> usize {
    // Valid sizes form an arithmetic progression with this step; the first one found is the least.
    let step = input_size_step(cfg);
    let first = (1..=step)
        .find(|&s| is_valid_input_size_modulo(cfg, s))
        .unwrap_or(step);
    let mut s = first;
    while simulate(cfg, s).is_err() {
        s += step;
    }
    s
}

/// Whether `s` lies in the progression of valid sizes (ignoring the lower bound).
fn is_valid_input_size_modulo(cfg: &UNetConfig, s: usize) -> bool {
    let step = input_size_step(cfg);
    let offset = conv_shrink(cfg.padding) * (step - 1);
    s % step == offset % step
}

/// The valid input sizes nearest to `wanted` (below or equal, and above or equal).
pub fn nearest_valid_input_sizes(cfg: &UNetConfig, wanted: usize) -> NearestSizes {
    let step = input_size_step(cfg);
    let min = min_input_size(cfg);
    let with_output = |s: usize| simulate(cfg, s).ok().map(|o| (s, o));
    let above = if wanted <= min {
        with_output(min)
    } else {
        let k = (wanted - min).div_ceil(step);
        with_output(min + k * step)
    };
    let below = if wanted < min {
        None
    } else {
        with_output(min + (wanted - min) / step * step)
    };
    NearestSizes { below, above }
}

/// The smallest valid input size whose output is at least `output` pixels (for tiling).
pub fn input_size_for_output(cfg: &UNetConfig, output: usize) -> usize {
    let step = input_size_step(cfg);
    let mut s = min_input_size(cfg);
    while simulate(cfg, s).is_ok_and(|o| o < output) {
        s += step;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paper_sizes() {
        let cfg = UNetConfig::paper();
        assert_eq!(output_size(&cfg, 572).unwrap(), 388);
        assert_eq!(min_input_size(&cfg), 188);
        assert_eq!(output_size(&cfg, 188).unwrap(), 4);
        assert_eq!(input_size_for_output(&cfg, 388), 572);
        assert_eq!(input_size_for_output(&cfg, 389), 588);
        let Error::InputSize(err) = output_size(&cfg, 570).unwrap_err() else {
            panic!("an input size error");
        };
        assert_eq!(err.nearest.below, Some((556, 372)));
        assert_eq!(err.nearest.above, Some((572, 388)));
        let msg = err.to_string();
        assert!(
            msg.contains("556 (output 372) and 572 (output 388)"),
            "{msg}"
        );
        assert!(msg.contains("odd size"), "{msg}");
        let tiny = output_size(&cfg, 3).unwrap_err();
        assert!(
            tiny.to_string()
                .contains("smallest valid input size: 188 (output 4)"),
            "{tiny}"
        );
    }

    #[test]
    fn same_padding_sizes() {
        let cfg = UNetConfig::small();
        assert_eq!(output_size(&cfg, 512).unwrap(), 512);
        assert_eq!(min_input_size(&cfg), 16);
        assert!(output_size(&cfg, 520).is_err());
        let n = nearest_valid_input_sizes(&cfg, 520);
        assert_eq!(n.below, Some((512, 512)));
        assert_eq!(n.above, Some((528, 528)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn nearest_sizes_bracket_and_are_nearest(
            depth in 1usize..6,
            same in any::<bool>(),
            wanted in 0usize..700,
        ) {
            let cfg = UNetConfig {
                depth,
                padding: if same { Padding::Same } else { Padding::Valid },
                ..UNetConfig::small()
            };
            let n = nearest_valid_input_sizes(&cfg, wanted);
            let (above, _) = n.above.unwrap();
            prop_assert!(above >= wanted);
            prop_assert!(is_valid_input_size(&cfg, above));
            // Nothing valid strictly between the bracket and the wanted size.
            let lo = n.below.map_or(0, |(b, _)| b + 1);
            if let Some((b, _)) = n.below {
                prop_assert!(b <= wanted);
                prop_assert!(is_valid_input_size(&cfg, b));
            }
            for s in lo..above {
                prop_assert!(!is_valid_input_size(&cfg, s), "{} is valid", s);
            }
            prop_assert_eq!(is_valid_input_size(&cfg, wanted), n.above == n.below);
        }
    }
}
