//! The network configuration, its presets and its validation.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the 3x3 convolutions treat the border.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding, as in the paper: every 3x3 conv shrinks the map by 2 (572 -> 388 at depth 5).
    Valid,
    /// Zero padding of 1: the output has the input's size (which must divide by 2^(depth-1)).
    Same,
}

/// How the expanding path doubles the resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsampling {
    /// The paper's 2x2 up-convolution with stride 2 (a transposed convolution) halving the channels.
    Transposed,
    /// Bilinear 2x upsampling followed by a 1x1 convolution halving the channels. `align_corners`
    /// has the meaning of PyTorch's `nn.Upsample(scale_factor=2, mode="bilinear", align_corners=...)`.
    Bilinear {
        /// `true`: the corner pixel centres of input and output coincide;
        /// `false`: pixels are squares and their edges coincide (PyTorch's default).
        align_corners: bool,
    },
}

/// The contracting path (encoder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoder {
    /// The paper's: two 3x3 convs per level, 2x2 max-pools between levels.
    #[default]
    Plain,
    /// torchvision's ResNet-18 without its classifier: a 7x7 stride-2 stem with batch norm,
    /// ReLU and a 3x3 stride-2 max-pool, then four stages of 2 basic residual blocks of widths
    /// 64, 128, 256, 512 (stages 2-4 start with stride 2). Skips are taken at the stem and at
    /// the end of each stage, as segmentation_models_pytorch and MONAI's FlexibleUNet do.
    Resnet18,
    /// torchvision's ResNet-34: as ResNet-18 with 3, 4, 6 and 3 blocks.
    Resnet34,
}

impl Encoder {
    /// Residual blocks per stage, `None` for the plain encoder.
    pub fn resnet_blocks(self) -> Option<[usize; 4]> {
        match self {
            Encoder::Plain => None,
            Encoder::Resnet18 => Some([2, 2, 2, 2]),
            Encoder::Resnet34 => Some([3, 4, 6, 3]),
        }
    }

    /// The name as spelled in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Plain => "plain",
            Encoder::Resnet18 => "resnet18",
            Encoder::Resnet34 => "resnet34",
        }
    }
}

/// The levels of a ResNet U-Net: full resolution and the five halvings of the encoder.
pub const RESNET_DEPTH: usize = 6;

/// The named presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The paper: valid padding, widths 64..1024, no batch norm, dropout 0.5, transposed up-convs.
    Paper,
    /// The reference implementation (hayashimasa/UNet-PyTorch): valid padding, widths 64..1024,
    /// one batch norm per conv (the reference shares one between the two convs of a block; we do not).
    Reference,
    /// A small, fast net: same padding, widths 16..256, batch norm.
    Small,
    /// A ResNet-18 encoder and a decoder of widths 256..16 (same padding, batch norm).
    Resnet18,
    /// A ResNet-34 encoder and a decoder of widths 256..16 (same padding, batch norm).
    Resnet34,
}

impl Preset {
    /// All presets, in the order of their names in [`Preset::NAMES`].
    pub const ALL: [Preset; 5] = [
        Preset::Paper,
        Preset::Reference,
        Preset::Small,
        Preset::Resnet18,
        Preset::Resnet34,
    ];
    /// The preset names as spelled on the command line.
    pub const NAMES: [&'static str; 5] = ["paper", "reference", "small", "resnet18", "resnet34"];

    /// The preset's name as spelled on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Reference => "reference",
            Preset::Small => "small",
            Preset::Resnet18 => "resnet18",
            Preset::Resnet34 => "resnet34",
        }
    }

    /// The preset's configuration (1 input channel, 2 classes).
    pub fn config(self) -> UNetConfig {
        match self {
            Preset::Paper => UNetConfig::paper(),
            Preset::Reference => UNetConfig::reference(),
            Preset::Small => UNetConfig::small(),
            Preset::Resnet18 => UNetConfig::resnet(Encoder::Resnet18),
            Preset::Resnet34 => UNetConfig::resnet(Encoder::Resnet34),
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::UnknownPreset(s.to_string()))
    }
}

/// The U-Net's shape. Build it from a preset and change fields as needed, then [`validate`].
///
/// [`validate`]: UNetConfig::validate
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of the input image (1 for EM sections).
    pub in_channels: usize,
    /// Output classes (>= 2); the logits have this many channels.
    pub n_classes: usize,
    /// Resolution levels: `depth - 1` max-pools (the paper: 5).
    pub depth: usize,
    /// Channels of the first level; each level doubles them (the paper: 64).
    pub base_width: usize,
    /// Border handling of the 3x3 convs.
    pub padding: Padding,
    /// A batch norm after every 3x3 conv (before its ReLU).
    pub batch_norm: bool,
    /// Drop-out probability at the end of the contracting path (0 = none; the paper: 0.5).
    pub dropout: f64,
    /// How the expanding path upsamples.
    pub upsampling: Upsampling,
    /// The contracting path: the paper's, or a ResNet (then `depth` is 6: full resolution
    /// and five halvings, and `base_width` is the decoder's width at full resolution).
    #[serde(default)]
    pub encoder: Encoder,
}

impl Default for UNetConfig {
    /// The paper's net.
    fn default() -> Self {
        Self::paper()
    }
}

/// The deepest depth accepted by [`UNetConfig::validate`].
pub const MAX_DEPTH: usize = 8;
/// The widest level accepted by [`UNetConfig::validate`].
pub const MAX_WIDTH: usize = 1 << 14;

impl UNetConfig {
    /// The paper's net: valid padding, 64..1024 channels, no batch norm, dropout 0.5, 1 -> 2 channels.
    pub fn paper() -> Self {
        Self {
            in_channels: 1,
            n_classes: 2,
            depth: 5,
            base_width: 64,
            padding: Padding::Valid,
            batch_norm: false,
            dropout: 0.5,
            upsampling: Upsampling::Transposed,
            encoder: Encoder::Plain,
        }
    }

    /// The reference implementation's net: as the paper's, with a batch norm per conv, no dropout.
    pub fn reference() -> Self {
        Self {
            batch_norm: true,
            dropout: 0.0,
            ..Self::paper()
        }
    }

    /// A small net: same padding, 16..256 channels, batch norm, no dropout.
    pub fn small() -> Self {
        Self {
            base_width: 16,
            padding: Padding::Same,
            batch_norm: true,
            dropout: 0.0,
            ..Self::paper()
        }
    }

    /// A ResNet U-Net: the `encoder`'s stages, a decoder of widths 256, 128, 64, 32, 16 (2x2
    /// up-convs, two same-padding 3x3 convs with batch norm per level), 1 -> 2 channels.
    pub fn resnet(encoder: Encoder) -> Self {
        Self {
            depth: RESNET_DEPTH,
            encoder,
            ..Self::small()
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<()> {
        if self.in_channels == 0 {
            return Err(Error::NoInputChannels);
        }
        if self.n_classes < 2 {
            return Err(Error::TooFewClasses(self.n_classes));
        }
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return Err(Error::Depth {
                depth: self.depth,
                max: MAX_DEPTH,
            });
        }
        let widest = self.base_width.saturating_mul(1 << (self.depth - 1));
        if self.base_width == 0 || widest > MAX_WIDTH {
            return Err(Error::Width {
                base_width: self.base_width,
                depth: self.depth,
                widest,
                max: MAX_WIDTH,
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Dropout(self.dropout));
        }
        if self.encoder != Encoder::Plain {
            let needs = |needs: String| {
                Err(Error::Encoder {
                    encoder: self.encoder.name(),
                    needs,
                })
            };
            if self.depth != RESNET_DEPTH {
                return needs(format!("depth {RESNET_DEPTH} (got {})", self.depth));
            }
            if self.padding != Padding::Same {
                return needs("same padding".into());
            }
            if !self.batch_norm {
                return needs("batch norm (its blocks have it)".into());
            }
        }
        Ok(())
    }

    /// The channels of level `level` (0 = full resolution): `base_width * 2^level`.
    pub fn width(&self, level: usize) -> usize {
        self.base_width << level
    }

    /// The fields where `self` and `other` differ, one line each:
    /// `field: <self's value> vs <other's value>`. Empty when equal.
    pub fn differences(&self, other: &UNetConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: {a} vs {b}"));
            }
        };
        field(
            "in_channels",
            self.in_channels.to_string(),
            other.in_channels.to_string(),
        );
        field(
            "n_classes",
            self.n_classes.to_string(),
            other.n_classes.to_string(),
        );
        field("depth", self.depth.to_string(), other.depth.to_string());
        field(
            "base_width",
            self.base_width.to_string(),
            other.base_width.to_string(),
        );
        field(
            "padding",
            format!("{:?}", self.padding),
            format!("{:?}", other.padding),
        );
        field(
            "batch_norm",
            self.batch_norm.to_string(),
            other.batch_norm.to_string(),
        );
        field(
            "dropout",
            self.dropout.to_string(),
            other.dropout.to_string(),
        );
        field(
            "upsampling",
            format!("{:?}", self.upsampling),
            format!("{:?}", other.upsampling),
        );
        field(
            "encoder",
            self.encoder.name().into(),
            other.encoder.name().into(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_parse() {
        for (preset, name) in Preset::ALL.into_iter().zip(Preset::NAMES) {
            preset.config().validate().unwrap();
            assert_eq!(name.parse::<Preset>().unwrap(), preset);
        }
        assert!(matches!(
            "huge".parse::<Preset>(),
            Err(Error::UnknownPreset(_))
        ));
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let ok = UNetConfig::small();
        type IsExpected = fn(&Error) -> bool;
        let cases: Vec<(UNetConfig, IsExpected)> = vec![
            (
                UNetConfig {
                    n_classes: 1,
                    ..ok.clone()
                },
                |e| matches!(e, Error::TooFewClasses(1)),
            ),
            (
                UNetConfig {
                    in_channels: 0,
                    ..ok.clone()
                },
                |e| matches!(e, Error::NoInputChannels),
            ),
            (
                UNetConfig {
                    depth: 0,
                    ..ok.clone()
                },
                |e| matches!(e, Error::Depth { .. }),
            ),
            (
                UNetConfig {
                    depth: 9,
                    ..ok.clone()
                },
                |e| matches!(e, Error::Depth { .. }),
            ),
            (
                UNetConfig {
                    base_width: 0,
                    ..ok.clone()
                },
                |e| matches!(e, Error::Width { .. }),
            ),
            (
                UNetConfig {
                    base_width: 4096,
                    ..ok.clone()
                },
                |e| matches!(e, Error::Width { .. }),
            ),
            (
                UNetConfig {
                    dropout: 1.0,
                    ..ok.clone()
                },
                |e| matches!(e, Error::Dropout(_)),
            ),
            (
                UNetConfig {
                    dropout: f64::NAN,
                    ..ok.clone()
                },
                |e| matches!(e, Error::Dropout(_)),
            ),
        ];
        for (cfg, is_expected) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(is_expected(&err), "{cfg:?}: {err}");
        }
    }

    #[test]
    fn serde_round_trip_and_spelling() {
        let cfg = UNetConfig {
            upsampling: Upsampling::Bilinear {
                align_corners: true,
            },
            ..UNetConfig::reference()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"padding\":\"valid\""), "{json}");
        assert!(
            json.contains("\"bilinear\":{\"align_corners\":true}"),
            "{json}"
        );
        let back: UNetConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn differences_name_each_field() {
        let a = UNetConfig::paper();
        assert!(a.differences(&a).is_empty());
        let b = UNetConfig::small();
        let diff = a.differences(&b);
        assert_eq!(diff.len(), 4, "{diff:?}");
        assert!(
            diff.contains(&"base_width: 64 vs 16".to_string()),
            "{diff:?}"
        );
        assert!(
            diff.contains(&"padding: Valid vs Same".to_string()),
            "{diff:?}"
        );
    }
}
