//! The input normalisation of a model: how grey values scaled to [0, 1] become the network's
//! input. A trained model carries its normalisation in its checkpoint sidecar
//! ([`crate::CheckpointMeta::normalisation`]), and training, validation, calibration and
//! prediction all apply it through [`Normalisation::apply`], so the network sees the same
//! numbers everywhere. An image with channels is normalised channel by channel: each channel
//! plane by its own statistics.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How grey values in [0, 1] (8-bit / 255, 16-bit / 65535, float as stored) are mapped to the
/// network's input.
///
/// ```
/// use unet_model::Normalisation;
///
/// let n = Normalisation::dataset(0.5, 0.25).unwrap();
/// let mut plane = vec![0.5f32, 0.75];
/// n.apply(&mut plane, 1);
/// assert_eq!(plane, vec![0.0, 1.0]);
/// assert!(Normalisation::dataset(0.5, 0.0).is_err());
///
/// // Two channels, each by its own statistics.
/// let n = Normalisation::dataset_per_channel(vec![0.5, 0.2], vec![0.25, 0.1]).unwrap();
/// let mut section = vec![0.5f32, 0.75, 0.2, 0.3];
/// n.apply(&mut section, 2);
/// assert_eq!(section, vec![0.0, 1.0, 0.0, (0.3f32 - 0.2) / 0.1]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Normalisation {
    /// Fixed statistics of the training sections: `x = (v - mean) / std`.
    Dataset {
        /// Mean of the training sections' grey values in [0, 1].
        mean: f64,
        /// Their standard deviation (> 0).
        std: f64,
    },
    /// Fixed statistics of the training sections, one pair per input channel: channel `c` is
    /// `(v - mean[c]) / std[c]`. What training fits on images with several channels.
    DatasetPerChannel {
        /// Each channel's mean grey value in [0, 1].
        mean: Vec<f64>,
        /// Each channel's standard deviation (> 0).
        std: Vec<f64>,
    },
    /// Each image plane by its own mean and standard deviation (a constant plane becomes 0):
    /// what `unet predict` falls back to for a checkpoint that records no normalisation.
    PerImage,
    /// Each image plane's `low` and `high` percentiles mapped to 0 and 1, as CSBDeep and
    /// StarDist normalise (1 and 99.8 there).
    Percentile {
        /// The percentile that becomes 0, in [0, 100).
        low: f64,
        /// The percentile that becomes 1, in (low, 100].
        high: f64,
    },
}

impl Normalisation {
    /// Fixed statistics, checked: the mean finite, the standard deviation finite and > 0.
    pub fn dataset(mean: f64, std: f64) -> Result<Self> {
        Normalisation::Dataset { mean, std }.validated()
    }

    /// Fixed statistics per channel, checked as [`Normalisation::dataset`] and for one pair
    /// per channel; one channel gives [`Normalisation::Dataset`], so a grey model records what
    /// it always has.
    pub fn dataset_per_channel(mean: Vec<f64>, std: Vec<f64>) -> Result<Self> {
        if let ([mean], [std]) = (mean.as_slice(), std.as_slice()) {
            return Self::dataset(*mean, *std);
        }
        Normalisation::DatasetPerChannel { mean, std }.validated()
    }

    /// `self` if its numbers can normalise, else an error naming them.
    pub fn validated(self) -> Result<Self> {
        let check_pair = |mean: f64, std: f64| {
            if mean.is_finite() && std.is_finite() && std > 0.0 {
                Ok(())
            } else {
                Err(Error::Normalisation(format!(
                    "cannot normalise by mean {mean} and standard deviation {std} (the mean \
                     must be finite, the standard deviation finite and > 0)"
                )))
            }
        };
        match &self {
            Normalisation::Dataset { mean, std } => check_pair(*mean, *std).map(|()| self),
            Normalisation::DatasetPerChannel { mean, std } => {
                if mean.is_empty() || mean.len() != std.len() {
                    return Err(Error::Normalisation(format!(
                        "per-channel statistics need one mean and one standard deviation per \
                         channel; got {} mean(s) and {} standard deviation(s)",
                        mean.len(),
                        std.len()
                    )));
                }
                for (&m, &s) in mean.iter().zip(std) {
                    check_pair(m, s)?;
                }
                Ok(self)
            }
            Normalisation::PerImage => Ok(self),
            &Normalisation::Percentile { low, high } => {
                if (0.0..100.0).contains(&low) && low < high && high <= 100.0 {
                    Ok(self)
                } else {
                    Err(Error::Normalisation(format!(
                        "percentiles {low} and {high} must satisfy 0 <= low < high <= 100"
                    )))
                }
            }
        }
    }

    /// The names of the modes a training can choose: `dataset` (fitted on the training sections,
    /// so `None` until then), `per-image` and `percentile` ([`Normalisation::percentile`]).
    pub const MODE_NAMES: [&'static str; 3] = ["dataset", "per-image", "percentile"];

    /// The normalisation a training run's mode name stands for ([`Normalisation::MODE_NAMES`]);
    /// `dataset` is `None`: its statistics come from the training sections.
    pub fn for_mode(name: &str) -> Result<Option<Self>> {
        match name {
            "dataset" => Ok(None),
            "per-image" => Ok(Some(Normalisation::PerImage)),
            "percentile" => Ok(Some(Normalisation::percentile())),
            other => Err(Error::Normalisation(format!(
                "unknown normalisation {other:?}; known: {}",
                Self::MODE_NAMES.join(", ")
            ))),
        }
    }

    /// CSBDeep's and StarDist's percentiles: 1 and 99.8.
    pub fn percentile() -> Self {
        Normalisation::Percentile {
            low: 1.0,
            high: 99.8,
        }
    }

    /// The number of channels fixed statistics were fitted on, when they were fitted per
    /// channel; `None` when the normalisation suits any number of channels.
    pub fn channels(&self) -> Option<usize> {
        match self {
            Normalisation::DatasetPerChannel { mean, .. } => Some(mean.len()),
            _ => None,
        }
    }

    /// Checks that this normalisation suits images of `channels` channels (statistics fitted
    /// per channel suit only their own channel count).
    pub fn check_channels(&self, channels: usize) -> Result<()> {
        match self.channels() {
            Some(fitted) if fitted != channels => Err(Error::Normalisation(format!(
                "the normalisation holds statistics of {fitted} channel(s), the image has \
                 {channels}"
            ))),
            _ => Ok(()),
        }
    }

    /// Normalises one section of grey values in [0, 1], in place: `channels` planes of equal
    /// size one after the other (`C x H x W`), each channel plane on its own.
    ///
    /// # Panics
    /// If the section is not `channels` planes, or if the statistics were fitted on another
    /// channel count (callers check that once with [`Normalisation::check_channels`]).
    pub fn apply(&self, section: &mut [f32], channels: usize) {
        assert!(
            channels > 0 && section.len().is_multiple_of(channels),
            "a section of {} values is not {channels} channel planes",
            section.len()
        );
        if let Err(e) = self.check_channels(channels) {
            panic!("{e}");
        }
        let plane = section.len() / channels;
        if plane == 0 {
            return;
        }
        for (c, values) in section.chunks_exact_mut(plane).enumerate() {
            self.apply_plane(values, c);
        }
    }

    /// Normalises channel `channel`'s plane.
    fn apply_plane(&self, plane: &mut [f32], channel: usize) {
        match self {
            &Normalisation::Dataset { mean, std } => {
                // In f32, as the network computes: the same numbers in every caller.
                shift_and_scale(plane, mean as f32, std as f32);
            }
            Normalisation::DatasetPerChannel { mean, std } => {
                shift_and_scale(plane, mean[channel] as f32, std[channel] as f32);
            }
            Normalisation::PerImage => {
                let mut stats = PlaneStats::default();
                stats.add_values(plane);
                stats.add_deviations(plane);
                stats.apply(plane);
            }
            &Normalisation::Percentile { low, high } => {
                let mut sorted: Vec<f32> =
                    plane.iter().copied().filter(|v| v.is_finite()).collect();
                if sorted.is_empty() {
                    return;
                }
                sorted.sort_unstable_by(f32::total_cmp);
                let at =
                    |p: f64| sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize];
                let (lo, hi) = (at(low), at(high));
                // A flat plane stays flat (zero) rather than dividing by zero.
                let range = if hi - lo > 1e-6 { hi - lo } else { 1.0 };
                shift_and_scale(plane, lo, range);
            }
        }
    }
}

/// The mean and standard deviation [`Normalisation::PerImage`] standardises a plane by,
/// gathered from the plane in pieces: all of it through [`PlaneStats::add_values`], then all of
/// it again through [`PlaneStats::add_deviations`], in the same order. The sums are those
/// `apply` forms on the whole plane, so a plane streamed in bands of rows (a volume's section,
/// read block by block) is normalised to the same numbers.
///
/// ```
/// use unet_model::{Normalisation, PlaneStats};
///
/// let plane: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
/// let mut stats = PlaneStats::default();
/// plane.chunks(5).for_each(|part| stats.add_values(part));
/// plane.chunks(5).for_each(|part| stats.add_deviations(part));
/// let (mut whole, mut streamed) = (plane.clone(), plane);
/// Normalisation::PerImage.apply(&mut whole, 1);
/// stats.apply(&mut streamed);
/// assert_eq!(whole, streamed);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlaneStats {
    count: u64,
    sum: f64,
    squares: f64,
}

impl PlaneStats {
    /// First pass: the next values of the plane.
    pub fn add_values(&mut self, part: &[f32]) {
        self.count += part.len() as u64;
        for &v in part {
            self.sum += f64::from(v);
        }
    }

    /// The plane's mean (after the first pass).
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// Second pass: the next values of the plane again, for the squared deviations.
    pub fn add_deviations(&mut self, part: &[f32]) {
        let mean = self.mean();
        for &v in part {
            self.squares += (f64::from(v) - mean).powi(2);
        }
    }

    /// The standard deviation (after both passes); 1 for a constant plane, which then stays
    /// constant (zero) rather than dividing by zero.
    pub fn std(&self) -> f64 {
        let var = self.squares / self.count.max(1) as f64;
        if var > 1e-12 {
            var.sqrt()
        } else {
            1.0
        }
    }

    /// Standardises `part` of the plane: `(v - mean) / std`, in f32 as the network computes.
    pub fn apply(&self, part: &mut [f32]) {
        shift_and_scale(part, self.mean() as f32, self.std() as f32);
    }
}

fn shift_and_scale(plane: &mut [f32], mean: f32, std: f32) {
    for v in plane {
        *v = (*v - mean) / std;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_statistics_round_trip_through_json_and_normalise() {
        let n = Normalisation::dataset(0.4936, 0.1723).unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, r#"{"mode":"dataset","mean":0.4936,"std":0.1723}"#);
        assert_eq!(serde_json::from_str::<Normalisation>(&json).unwrap(), n);
        let mut x = vec![0.0f32, 1.0];
        n.apply(&mut x, 1);
        assert_eq!(x[0], (0.0 - 0.4936f32) / 0.1723f32);
        assert_eq!(x[1], (1.0 - 0.4936f32) / 0.1723f32);
    }

    #[test]
    fn per_image_standardises_each_plane_and_keeps_a_constant_one_finite() {
        let mut plane = vec![0.2f32, 0.4, 0.6, 0.8];
        Normalisation::PerImage.apply(&mut plane, 1);
        let mean: f32 = plane.iter().sum::<f32>() / 4.0;
        let var: f32 = plane.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{plane:?}");
        let mut flat = vec![0.5f32; 9];
        Normalisation::PerImage.apply(&mut flat, 1);
        assert!(flat.iter().all(|&v| v == 0.0));
        let json = serde_json::to_string(&Normalisation::PerImage).unwrap();
        assert_eq!(json, r#"{"mode":"per_image"}"#);
    }

    #[test]
    fn percentiles_map_to_zero_and_one() {
        let mut plane: Vec<f32> = (0..1001).map(|i| i as f32 / 1000.0).collect();
        Normalisation::percentile().apply(&mut plane, 1);
        // p1 = 0.01 and p99.8 = 0.998 of the ramp become 0 and 1.
        assert!(plane[10].abs() < 1e-5, "{}", plane[10]);
        assert!((plane[998] - 1.0).abs() < 1e-5, "{}", plane[998]);
        let json = serde_json::to_string(&Normalisation::percentile()).unwrap();
        assert_eq!(json, r#"{"mode":"percentile","low":1.0,"high":99.8}"#);
        let mut flat = vec![0.3f32; 5];
        Normalisation::percentile().apply(&mut flat, 1);
        assert!(flat.iter().all(|&v| v == 0.0));
        let bad = Normalisation::Percentile {
            low: 50.0,
            high: 10.0,
        };
        assert!(bad.validated().is_err());
    }

    #[test]
    fn channels_are_normalised_each_on_its_own() {
        let n =
            Normalisation::dataset_per_channel(vec![0.1, 0.5, 0.9], vec![0.1, 0.2, 0.3]).unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"dataset_per_channel","mean":[0.1,0.5,0.9],"std":[0.1,0.2,0.3]}"#
        );
        assert_eq!(serde_json::from_str::<Normalisation>(&json).unwrap(), n);
        let mut section = vec![0.2f32, 0.7, 1.2];
        n.apply(&mut section, 3);
        assert_eq!(
            section,
            vec![
                (0.2f32 - 0.1) / 0.1,
                (0.7f32 - 0.5) / 0.2,
                (1.2f32 - 0.9) / 0.3
            ]
        );
        assert_eq!(n.channels(), Some(3));
        assert!(n.check_channels(3).is_ok());
        let err = n.check_channels(1).unwrap_err().to_string();
        assert!(
            err.contains("3 channel(s)") && err.contains("has 1"),
            "{err}"
        );
        // One channel is the grey normalisation it always was.
        assert_eq!(
            Normalisation::dataset_per_channel(vec![0.4], vec![0.2]).unwrap(),
            Normalisation::dataset(0.4, 0.2).unwrap()
        );
        // A per-plane rule standardises each channel plane by itself.
        let mut two = vec![0.0f32, 1.0, 10.0, 30.0];
        Normalisation::PerImage.apply(&mut two, 2);
        assert_eq!(two, vec![-1.0, 1.0, -1.0, 1.0]);
        for (mean, std) in [(vec![], vec![]), (vec![0.5, 0.5], vec![0.1])] {
            assert!(Normalisation::dataset_per_channel(mean, std).is_err());
        }
        assert!(Normalisation::dataset_per_channel(vec![0.5, 0.5], vec![0.1, 0.0]).is_err());
    }

    #[test]
    fn statistics_that_cannot_normalise_are_refused() {
        for (mean, std) in [
            (0.5, 0.0),
            (0.5, -1.0),
            (f64::NAN, 0.2),
            (0.5, f64::INFINITY),
        ] {
            let err = Normalisation::dataset(mean, std).unwrap_err().to_string();
            assert!(err.contains("cannot normalise"), "{err}");
        }
    }
}
