//! The training data loader: seeded, shuffled, augmented tiles with their weight maps, in
//! batches prepared on a background thread while the model trains.
//!
//! Per epoch the training sections are shuffled (a fresh permutation for each pass over them)
//! and each sample is one random tile of a section:
//!
//! 1. the section (grey values scaled to [0, 1], one plane per channel) and its label go
//!    through the augmentation
//!    pipeline with a mirrored border of `(input - output) / 2` pixels added first and a random
//!    `input x input` crop last, so every geometric step is composed into one resampling;
//! 2. the weight map (unet-weights) is computed on the augmented label of the whole input tile,
//!    then label and weights are centre-cropped to `output x output` (the paper's overlap-tile
//!    geometry for valid-padding nets; for same padding input and output are equal);
//! 3. the image is normalised with the model's [`Normalisation`] (by default the training
//!    sections' mean and standard deviation, per channel).
//!
//! Sample `i` of epoch `e` uses the seed `derive_seed(derive_seed(seed, e), i)`, and each batch
//! is assembled in order, so the batches depend on the seed only, never on the number of threads
//! or on timing. An epoch can start at any batch (for resuming mid-epoch) with the same result.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use unet_augment::{derive_seed, Pipeline, Sample, SplitMix64, Transform};
use unet_data::{ChannelStack, GreyStats, LabelClasses, Stack, IGNORED};
use unet_model::Normalisation;
use unet_weights::{ValidWeightMapParams, WeightMapParams};

use crate::{Error, Result};

/// Training sections in memory: grey values in [0, 1] (one plane per channel), labels as the
/// stack holds them (0 / 255, or class indices: see [`LabelClasses`]), the grey statistics of
/// each channel over these sections (for normalisation).
#[derive(Debug, Clone)]
pub struct SectionSet {
    height: usize,
    width: usize,
    channels: usize,
    images: Vec<Vec<f32>>,
    labels: Vec<Vec<u8>>,
    classes: LabelClasses,
    stats: Vec<GreyStats>,
}

impl SectionSet {
    /// The sections `indices` of an image stack (one channel or several; 8-bit, 16-bit or
    /// float) and its label stack, which reads as `classes` says.
    ///
    /// Fails when the stacks differ in shape, an index is out of range, the list is empty, or a
    /// label is no class of `classes` (a value of K or more that is not the ignored one).
    pub fn from_stacks(
        images: &ChannelStack,
        labels: &Stack<u8>,
        classes: LabelClasses,
        indices: &[usize],
    ) -> Result<Self> {
        if (images.sections(), images.height(), images.width())
            != (labels.pages(), labels.height(), labels.width())
            || labels.samples() != 1
        {
            return Err(Error::Loader(format!(
                "images ({} sections of {}x{}, {} channel(s)) and labels ({} pages of {}x{}x{}) \
                 do not match",
                images.sections(),
                images.height(),
                images.width(),
                images.channels(),
                labels.pages(),
                labels.height(),
                labels.width(),
                labels.samples()
            )));
        }
        let channels = images.channels();
        // The statistics of the [0, 1] values, as the net sees them (not of the stored ones
        // scaled afterwards): the same numbers to the last digit as before channels existed.
        let stats = GreyStats::per_channel(&images.to_unit_f32(), channels, indices)?;
        let labels: Vec<Vec<u8>> = indices.iter().map(|&i| labels.page(i).to_vec()).collect();
        check_classes(labels.iter().map(Vec::as_slice), classes, indices)?;
        Ok(SectionSet {
            height: images.height(),
            width: images.width(),
            channels,
            images: indices.iter().map(|&i| images.unit_section(i)).collect(),
            labels,
            classes,
            stats,
        })
    }

    /// Number of sections.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there is no section (never true for a set built by [`SectionSet::from_stacks`]).
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Section height.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Section width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Channels a section.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Mean and standard deviation of each channel's grey values in [0, 1] units.
    pub fn stats(&self) -> &[GreyStats] {
        &self.stats
    }

    /// The [`Normalisation`] by these sections' statistics, per channel (checked: a constant
    /// channel cannot normalise).
    pub fn normalisation(&self) -> Result<Normalisation> {
        Ok(Normalisation::dataset_per_channel(
            self.stats.iter().map(|g| g.mean).collect(),
            self.stats.iter().map(|g| g.std).collect(),
        )?)
    }

    /// Section `i`'s grey values in [0, 1], channel plane after channel plane.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i]
    }

    /// Section `i`'s labels (0 membrane, 255 cell; or class indices, see
    /// [`SectionSet::classes`]).
    pub fn label(&self, i: usize) -> &[u8] {
        &self.labels[i]
    }

    /// How the labels read.
    pub fn classes(&self) -> LabelClasses {
        self.classes
    }
}

/// The loss weights of one `height x width` label plane that reads as `classes`: the weight map
/// of `params` (binary, or over K classes), else weight 0 on ignored pixels; `None` when every
/// pixel weighs 1 (no weight map, nothing ignored).
pub(crate) fn loss_weights(
    params: Option<&ValidWeightMapParams>,
    classes: LabelClasses,
    label: &[u8],
    height: usize,
    width: usize,
) -> Result<Option<Vec<f32>>> {
    Ok(match (params, classes) {
        (Some(p), LabelClasses::Binary) => Some(p.weight_map(label, height, width)?),
        (Some(p), LabelClasses::Indexed { classes: k, ignore }) => {
            let wide: Vec<u16> = label.iter().map(|&l| u16::from(l)).collect();
            let spec = unet_weights::ClassLabels {
                n_classes: k,
                ignore: ignore.then_some(u16::from(IGNORED)),
            };
            Some(p.class_weight_map(&wide, height, width, &spec)?)
        }
        (None, c) if c.ignores() => Some(
            label
                .iter()
                .map(|&l| if c.class_of(l).is_some() { 1.0 } else { 0.0 })
                .collect(),
        ),
        (None, _) => None,
    })
}

/// Checks that every label of `sections` (from the stack pages `pages`) is a class of
/// `classes` or its ignored value.
pub(crate) fn check_classes<'a>(
    sections: impl IntoIterator<Item = &'a [u8]>,
    classes: LabelClasses,
    pages: &[usize],
) -> Result<()> {
    let LabelClasses::Indexed { classes: k, ignore } = classes else {
        return Ok(());
    };
    for (labels, &page) in sections.into_iter().zip(pages) {
        let bad = labels
            .iter()
            .find(|&&v| usize::from(v) >= k && !(ignore && v == IGNORED));
        if let Some(&value) = bad {
            return Err(Error::Loader(format!(
                "label page {page} holds {value}, no class of {k}{}",
                if ignore {
                    format!(" nor the ignored value {IGNORED}")
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(())
}

/// Settings of the [`Loader`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Side of the square tile fed to the network.
    pub input_size: usize,
    /// Side of the square label / weight tile the network predicts (= `input_size` for same
    /// padding; smaller by an even number for valid padding).
    pub output_size: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Samples per epoch (sections are cycled through in a fresh random order on each pass).
    pub samples_per_epoch: usize,
    /// The base seed.
    pub seed: u64,
    /// Weight-map settings; `None` gives weight 1 everywhere.
    pub weights: Option<WeightMapParams>,
    /// Normalisation of the [0, 1] grey values; `None` uses the sections' own statistics
    /// ([`SectionSet::normalisation`]).
    pub normalisation: Option<Normalisation>,
    /// Batches prepared ahead of the trainer (at least 1).
    pub prefetch: usize,
    /// Worker threads for assembling a batch; 0 uses rayon's global pool.
    pub threads: usize,
}

impl LoaderConfig {
    /// Settings for same-padding tiles of `tile` pixels, batch `batch_size`, one sample per
    /// section per epoch, the paper's weight map, prefetch 2, the global thread pool.
    pub fn new(tile: usize, batch_size: usize, sections: usize, seed: u64) -> Self {
        LoaderConfig {
            input_size: tile,
            output_size: tile,
            batch_size,
            samples_per_epoch: sections,
            seed,
            weights: Some(WeightMapParams::default()),
            normalisation: None,
            prefetch: 2,
            threads: 0,
        }
    }

    /// Batches per epoch: `samples_per_epoch / batch_size`, rounded up (the last batch may be
    /// smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.samples_per_epoch.div_ceil(self.batch_size.max(1))
    }
}

/// One batch: `size` samples of `channels` input channels, row-major, sample after sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The epoch (0-based).
    pub epoch: usize,
    /// The batch's index within the epoch.
    pub index: usize,
    /// Samples in the batch.
    pub size: usize,
    /// Side of the input tiles.
    pub input_size: usize,
    /// Side of the label and weight tiles.
    pub output_size: usize,
    /// Input channels.
    pub channels: usize,
    /// Normalised images, `[size, channels, input_size, input_size]`.
    pub images: Vec<f32>,
    /// Class ids (0 membrane, 1 cell; or 0..K, ignored pixels 0 with weight 0),
    /// `[size, output_size, output_size]`.
    pub labels: Vec<u8>,
    /// Loss weights, `[size, output_size, output_size]`.
    pub weights: Vec<f32>,
    /// The section (index into the [`SectionSet`]) of each sample.
    pub sections: Vec<usize>,
}

/// Produces the batches of each epoch; cheap to clone (the data is shared).
#[derive(Debug, Clone)]
pub struct Loader {
    data: Arc<SectionSet>,
    config: LoaderConfig,
    pipeline: Arc<Pipeline>,
    weights: Option<ValidWeightMapParams>,
    normalisation: Normalisation,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Loader {
    /// A loader of `data` augmented by `augmentation` (its steps run between the mirrored border
    /// and the random crop; its interpolation and border rule are kept).
    ///
    /// Fails on a zero size or batch, an output tile larger than the input tile or than a
    /// section, an odd margin, or bad weight-map parameters.
    pub fn new(data: SectionSet, augmentation: &Pipeline, config: LoaderConfig) -> Result<Self> {
        let bad = |m: String| Err(Error::Loader(m));
        if config.input_size == 0 || config.output_size == 0 {
            return bad("tile sizes must be positive".into());
        }
        if config.batch_size == 0 || config.samples_per_epoch == 0 {
            return bad(format!(
                "batch size ({}) and samples per epoch ({}) must be positive",
                config.batch_size, config.samples_per_epoch
            ));
        }
        if config.output_size > config.input_size
            || !(config.input_size - config.output_size).is_multiple_of(2)
        {
            return bad(format!(
                "output tile {} must not exceed the input tile {} and differ from it by an even number",
                config.output_size, config.input_size
            ));
        }
        if config.output_size > data.height() || config.output_size > data.width() {
            return bad(format!(
                "output tile {} does not fit in the {}x{} sections",
                config.output_size,
                data.height(),
                data.width()
            ));
        }
        if data.is_empty() {
            return bad("no training section".into());
        }
        let margin = (config.input_size - config.output_size) / 2;
        let mut builder = Pipeline::builder()
            .interpolation(augmentation.interpolation())
            .border(augmentation.border());
        if margin > 0 {
            builder = builder.always(Transform::MirrorPad { border: margin });
        }
        for step in augmentation.steps() {
            builder = builder.step(step.transform.clone(), step.probability);
        }
        let pipeline = builder
            .always(Transform::RandomCrop {
                width: config.input_size,
                height: config.input_size,
            })
            .build()?;
        let weights = config.weights.map(|w| w.validate()).transpose()?;
        let normalisation = match &config.normalisation {
            Some(n) => n.clone().validated()?,
            None => data.normalisation()?,
        };
        normalisation.check_channels(data.channels())?;
        let pool = match config.threads {
            0 => None,
            threads => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| Error::Loader(format!("cannot start the loader threads: {e}")))?,
            )),
        };
        Ok(Loader {
            data: Arc::new(data),
            config,
            pipeline: Arc::new(pipeline),
            weights,
            normalisation,
            pool,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The normalisation applied to the [0, 1] grey values.
    pub fn normalisation(&self) -> &Normalisation {
        &self.normalisation
    }

    /// The sections.
    pub fn data(&self) -> &SectionSet {
        &self.data
    }

    /// The seed of epoch `epoch`.
    pub fn epoch_seed(&self, epoch: usize) -> u64 {
        derive_seed(self.config.seed, epoch as u64)
    }

    /// The section of each sample of epoch `epoch`: passes over all sections, each pass in a
    /// fresh random order (Fisher-Yates on SplitMix64).
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let n = self.data.len();
        let mut rng = SplitMix64::new(derive_seed(self.epoch_seed(epoch), u64::MAX));
        let mut order = Vec::with_capacity(self.config.samples_per_epoch + n);
        while order.len() < self.config.samples_per_epoch {
            let mut pass: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                pass.swap(i, j);
            }
            order.extend(pass);
        }
        order.truncate(self.config.samples_per_epoch);
        order
    }

    /// Sample `index` of epoch `epoch` from section `section`: (normalised input tile, class ids,
    /// weights).
    pub fn sample(
        &self,
        epoch: usize,
        index: usize,
        section: usize,
    ) -> Result<(Vec<f32>, Vec<u8>, Vec<f32>)> {
        let (h, w) = (self.data.height(), self.data.width());
        let channels = self.data.channels();
        let input = Sample::new(
            w,
            h,
            channels,
            self.data.image(section).to_vec(),
            self.data.label(section).to_vec(),
            None,
        )?;
        let seed = derive_seed(self.epoch_seed(epoch), index as u64);
        let out = self.pipeline.apply(&input, seed)?;
        let n = self.config.input_size;
        let (image, label, _) = out.into_parts();
        let kind = self.data.classes();
        let weights_full = loss_weights(self.weights.as_ref(), kind, &label, n, n)?
            .unwrap_or_else(|| vec![1.0; n * n]);
        let mut image = image;
        self.normalisation.apply(&mut image, channels);
        let margin = (n - self.config.output_size) / 2;
        // An ignored pixel trains as class 0 with weight 0: it adds nothing to the loss.
        let classes: Vec<u8> = centre_crop(&label, n, margin)
            .into_iter()
            .map(|l| kind.class_of(l).unwrap_or(0))
            .collect();
        let weights = centre_crop(&weights_full, n, margin);
        Ok((image, classes, weights))
    }

    /// Batch `index` of epoch `epoch`, assembled on the loader's threads.
    pub fn batch(&self, epoch: usize, index: usize) -> Result<Batch> {
        let order = self.epoch_order(epoch);
        self.batch_of(epoch, index, &order)
    }

    fn batch_of(&self, epoch: usize, index: usize, order: &[usize]) -> Result<Batch> {
        let bs = self.config.batch_size;
        let start = index * bs;
        if start >= order.len() {
            return Err(Error::Loader(format!(
                "batch {index} of an epoch of {} batches",
                self.config.batches_per_epoch()
            )));
        }
        let end = (start + bs).min(order.len());
        let sections = order[start..end].to_vec();
        let make = || -> Result<Vec<_>> {
            sections
                .par_iter()
                .enumerate()
                .map(|(k, &s)| self.sample(epoch, start + k, s))
                .collect()
        };
        let samples = match &self.pool {
            Some(pool) => pool.install(make)?,
            None => make()?,
        };
        let (n_in, n_out) = (self.config.input_size, self.config.output_size);
        let mut batch = Batch {
            epoch,
            index,
            size: sections.len(),
            input_size: n_in,
            output_size: n_out,
            channels: self.data.channels(),
            images: Vec::with_capacity(sections.len() * self.data.channels() * n_in * n_in),
            labels: Vec::with_capacity(sections.len() * n_out * n_out),
            weights: Vec::with_capacity(sections.len() * n_out * n_out),
            sections,
        };
        for (image, label, weights) in samples {
            batch.images.extend(image);
            batch.labels.extend(label);
            batch.weights.extend(weights);
        }
        Ok(batch)
    }

    /// The batches of epoch `epoch` from batch `first` on, prepared on a background thread (at
    /// most `prefetch` ahead). Dropping the iterator stops the thread.
    pub fn epoch(&self, epoch: usize, first: usize) -> EpochBatches {
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let loader = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("unet-loader-{epoch}"))
            .spawn(move || {
                let order = loader.epoch_order(epoch);
                for index in first..loader.config.batches_per_epoch() {
                    let batch = loader.batch_of(epoch, index, &order);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
        match handle {
            Ok(handle) => EpochBatches {
                rx: Some(rx),
                handle: Some(handle),
                spawn_error: None,
            },
            Err(e) => EpochBatches {
                rx: None,
                handle: None,
                spawn_error: Some(Error::Loader(format!(
                    "cannot start the loader thread: {e}"
                ))),
            },
        }
    }
}

/// The centre `n - 2 margin` square of an `n x n` plane.
fn centre_crop<T: Copy>(plane: &[T], n: usize, margin: usize) -> Vec<T> {
    if margin == 0 {
        return plane.to_vec();
    }
    let m = n - 2 * margin;
    (margin..margin + m)
        .flat_map(|y| plane[y * n + margin..y * n + margin + m].iter().copied())
        .collect()
}

/// The batches of one epoch, in order, from the background thread ([`Loader::epoch`]).
#[derive(Debug)]
pub struct EpochBatches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    spawn_error: Option<Error>,
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.spawn_error.take() {
            return Some(Err(e));
        }
        let next = self.rx.as_ref()?.recv().ok();
        if next.is_none() {
            // The producer finished; a panic there must not pass silently.
            if let Some(handle) = self.handle.take() {
                if handle.join().is_err() {
                    return Some(Err(Error::Loader("the loader thread panicked".into())));
                }
            }
        }
        next
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Close the channel first so a producer blocked on a full channel wakes up and stops.
        self.rx.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two `h x w` sections with distinct, position-coding grey values; labels: cells with a
    /// one-pixel membrane grid every 7 pixels.
    fn sections(h: usize, w: usize) -> (Stack<u8>, Stack<u8>) {
        let mut img = Vec::new();
        let mut lab = Vec::new();
        for p in 0..2 {
            for y in 0..h {
                for x in 0..w {
                    img.push(((x * 7 + y * 13 + p * 50) % 251) as u8);
                    lab.push(if x % 7 == 3 || y % 7 == 3 { 0 } else { 255 });
                }
            }
        }
        (
            Stack::new(2, h, w, img).unwrap(),
            Stack::new(2, h, w, lab).unwrap(),
        )
    }

    fn identity() -> Pipeline {
        Pipeline::builder().build().unwrap()
    }

    #[test]
    fn bad_settings_are_errors() {
        let (i, l) = sections(16, 16);
        let data =
            SectionSet::from_stacks(&i.clone().into(), &l, LabelClasses::Binary, &[0, 1]).unwrap();
        let ok = LoaderConfig::new(16, 2, 2, 1);
        assert!(Loader::new(data.clone(), &identity(), ok.clone()).is_ok());
        for cfg in [
            LoaderConfig {
                batch_size: 0,
                ..ok.clone()
            },
            LoaderConfig {
                output_size: 17,
                input_size: 17,
                ..ok.clone()
            },
            LoaderConfig {
                input_size: 19,
                ..ok.clone()
            },
            LoaderConfig {
                weights: Some(WeightMapParams {
                    sigma: -1.0,
                    ..WeightMapParams::default()
                }),
                ..ok.clone()
            },
        ] {
            assert!(Loader::new(data.clone(), &identity(), cfg).is_err());
        }
        assert!(
            SectionSet::from_stacks(&i.clone().into(), &l, LabelClasses::Binary, &[2]).is_err()
        );
    }

    #[test]
    fn channels_are_normalised_by_their_own_statistics_and_batched_channel_major() {
        let (i, l) = sections(16, 16);
        // Channel 0 the section, channel 1 its negative: opposite means, equal spreads.
        let mut planes = Vec::new();
        for s in 0..2 {
            planes.extend_from_slice(i.page(s));
            planes.extend(i.page(s).iter().map(|&v| 255 - v));
        }
        let two = ChannelStack::new(2, Stack::new(4, 16, 16, planes).unwrap()).unwrap();
        let data = SectionSet::from_stacks(&two, &l, LabelClasses::Binary, &[0, 1]).unwrap();
        assert_eq!(data.channels(), 2);
        let grey =
            SectionSet::from_stacks(&i.clone().into(), &l, LabelClasses::Binary, &[0, 1]).unwrap();
        let (g, s) = (grey.stats()[0], data.stats());
        assert_eq!(s[0], g);
        assert!((s[1].mean - (1.0 - g.mean)).abs() < 1e-6);
        assert!((s[1].std - g.std).abs() < 1e-6);
        let Normalisation::DatasetPerChannel { mean, .. } = data.normalisation().unwrap() else {
            panic!("two channels are normalised per channel")
        };
        assert_eq!(mean, vec![s[0].mean, s[1].mean]);
        let loader = Loader::new(data, &identity(), LoaderConfig::new(16, 2, 2, 1)).unwrap();
        let batch = loader.batch(0, 0).unwrap();
        assert_eq!((batch.channels, batch.images.len()), (2, 2 * 2 * 16 * 16));
        // Without augmentation each channel plane is its section's, normalised: the negative
        // plane is minus the plane (to rounding), as both are standardised.
        let (first, second) = batch.images[..2 * 256].split_at(256);
        for (a, b) in first.iter().zip(second) {
            assert!((a + b).abs() < 1e-4, "{a} {b}");
        }
    }

    #[test]
    fn epoch_order_covers_every_section_per_pass() {
        let (i, l) = sections(8, 8);
        let img = Stack::from_pages(8, 8, 1, vec![i.page(0).to_vec(); 5]).unwrap();
        let lab = Stack::from_pages(8, 8, 1, vec![l.page(0).to_vec(); 5]).unwrap();
        let data = SectionSet::from_stacks(
            &img.clone().into(),
            &lab,
            LabelClasses::Binary,
            &[0, 1, 2, 3, 4],
        )
        .unwrap();
        let cfg = LoaderConfig {
            samples_per_epoch: 12,
            ..LoaderConfig::new(8, 3, 5, 9)
        };
        let loader = Loader::new(data, &identity(), cfg).unwrap();
        let order = loader.epoch_order(3);
        assert_eq!(order.len(), 12);
        for pass in order.chunks(5).take(2) {
            let mut sorted = pass.to_vec();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        }
        assert_eq!(order, loader.epoch_order(3));
        assert_ne!(order, loader.epoch_order(4));
        assert_eq!(loader.config().batches_per_epoch(), 4);
    }

    #[test]
    fn centre_crop_takes_the_middle() {
        let plane: Vec<u32> = (0..25).collect();
        assert_eq!(
            centre_crop(&plane, 5, 1),
            vec![6, 7, 8, 11, 12, 13, 16, 17, 18]
        );
        assert_eq!(centre_crop(&plane, 5, 0), plane);
    }
}
