//! `cargo xtask three-class`: a three-class data set made from the ISBI 2012 sections, for
//! training and scoring K classes on real EM: membrane (0), cell interior (1), and the dark,
//! mitochondria-like blobs inside cells (2).
//!
//! The rule (no new annotation, so anyone can rebuild the same set): a pixel is class 2 when it
//! lies in a cell at least two pixels from the membrane (the cell mask eroded twice, 4-connected,
//! the image border counting as membrane), its 5 x 5 mean grey value is below 80, and its
//! 4-connected component of such pixels has at least 30 pixels. Everything else keeps its ISBI
//! label: 0 membrane, 1 cell.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use unet_data::{write_stack, LabelledSections, Stack};
use unet_weights::{label_components, Connectivity};

/// Mean grey value (5 x 5) below which a cell pixel may be a blob.
pub const DARK: f32 = 80.0;
/// Smallest blob, in pixels.
pub const MIN_BLOB: usize = 30;
/// The mean filter's radius: 5 x 5.
const RADIUS: usize = 2;
/// Erosions of the cell mask before blobs are looked for.
const EROSIONS: usize = 2;

/// Flags of `cargo xtask three-class`.
#[derive(Debug, clap::Args)]
pub struct ThreeClassArgs {
    /// Data directory [default: $UNET_DATA, else data/isbi2012, fetched when missing].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to write `images.tif` and `labels.tif` [default: data/three-class in the
    /// checkout].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Writes the three-class set of the ISBI data in `data` to `out`.
pub fn run(data: &Path, out: &Path) -> Result<()> {
    let sections = LabelledSections::load(data)
        .with_context(|| format!("loading the ISBI data in {}", data.display()))?;
    let labels = three_classes(sections.grey_u8()?, &sections.train_labels)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_stack(out.join("images.tif"), sections.grey_u8()?)?;
    write_stack(out.join("labels.tif"), &labels)?;
    let mut counts = [0u64; 3];
    for &c in labels.as_slice() {
        counts[usize::from(c)] += 1;
    }
    let total = labels.as_slice().len() as f64;
    let share = |c: usize| 100.0 * counts[c] as f64 / total;
    let out = out.display();
    println!(
        "wrote {} sections to {out}: membrane {:.1}%, cell {:.1}%, dark blobs {:.1}%\n\
         train on them: unet train --images {out}/images.tif --labels {out}/labels.tif --classes 3",
        labels.pages(),
        share(0),
        share(1),
        share(2),
    );
    Ok(())
}

/// The three-class labels (0 membrane, 1 cell, 2 dark blob) of grey `images` and their binary
/// ISBI `labels` (0 / 255), section by section.
pub fn three_classes(images: &Stack<u8>, labels: &Stack<u8>) -> Result<Stack<u8>> {
    let (h, w) = (images.height(), images.width());
    let mut out = Vec::with_capacity(labels.as_slice().len());
    for p in 0..labels.pages() {
        out.extend(section_classes(images.page(p), labels.page(p), h, w)?);
    }
    Ok(Stack::new(labels.pages(), h, w, out)?)
}

/// [`three_classes`] of one section.
fn section_classes(image: &[u8], label: &[u8], h: usize, w: usize) -> Result<Vec<u8>> {
    let mut inner: Vec<bool> = label.iter().map(|&l| l > 0).collect();
    for _ in 0..EROSIONS {
        inner = erode(&inner, h, w);
    }
    let mean = box_mean(image, h, w, RADIUS);
    let dark: Vec<u8> = inner
        .iter()
        .zip(&mean)
        .map(|(&i, &m)| u8::from(i && m < DARK))
        .collect();
    let components = label_components(&dark, h, w, Connectivity::Four)?;
    let mut sizes = vec![0usize; components.count() + 1];
    for &c in components.labels() {
        sizes[c as usize] += 1;
    }
    Ok(label
        .iter()
        .zip(components.labels())
        .map(
            |(&l, &c)| match (l > 0, c > 0 && sizes[c as usize] >= MIN_BLOB) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            },
        )
        .collect())
}

/// A 4-connected erosion; pixels outside the image count as background.
fn erode(mask: &[bool], h: usize, w: usize) -> Vec<bool> {
    (0..h * w)
        .map(|i| {
            let (y, x) = (i / w, i % w);
            mask[i]
                && x > 0
                && mask[i - 1]
                && x + 1 < w
                && mask[i + 1]
                && y > 0
                && mask[i - w]
                && y + 1 < h
                && mask[i + w]
        })
        .collect()
}

/// The mean of the `(2r + 1)^2` window around each pixel, mirrored at the borders.
fn box_mean(image: &[u8], h: usize, w: usize, r: usize) -> Vec<f32> {
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let period = 2 * n;
        let m = i.rem_euclid(period);
        (if m < n { m } else { period - 1 - m }) as usize
    };
    let r = r as isize;
    let side = (2 * r + 1) as f32;
    let mut rows = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            rows[y * w + x] = (-r..=r)
                .map(|d| f32::from(image[y * w + reflect(x as isize + d, w)]))
                .sum::<f32>()
                / side;
        }
    }
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (-r..=r)
                .map(|d| rows[reflect(y as isize + d, h) * w + x])
                .sum::<f32>()
                / side;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dark_blob_deep_in_a_cell_is_class_2_and_a_small_one_or_one_at_the_membrane_is_not() {
        let (h, w) = (24, 40);
        let mut image = vec![200u8; h * w];
        let mut label = vec![255u8; h * w];
        // Membrane: the first column and row 12.
        for y in 0..h {
            label[y * w] = 0;
        }
        for x in 0..w {
            label[12 * w + x] = 0;
        }
        // A dark 8 x 8 square inside the lower cell, a dark 2 x 2 one in the upper cell, and a
        // dark band along the membrane row.
        for y in 14..22 {
            for x in 10..18 {
                image[y * w + x] = 20;
            }
        }
        for y in 4..6 {
            for x in 30..32 {
                image[y * w + x] = 0;
            }
        }
        for x in 0..w {
            image[11 * w + x] = 0;
            image[12 * w + x] = 0;
        }
        let classes = section_classes(&image, &label, h, w).unwrap();
        assert_eq!(classes[18 * w + 14], 2, "the blob's centre");
        assert_eq!(classes[4 * w + 30], 1, "too small");
        assert_eq!(classes[10 * w + 20], 1, "dark only next to the membrane");
        assert_eq!(classes[12 * w + 20], 0, "membrane stays membrane");
        assert!(classes.iter().all(|&c| c <= 2));
        // The blob shrinks by the mean filter's reach at most.
        let blob = classes.iter().filter(|&&c| c == 2).count();
        assert!((30..=64).contains(&blob), "{blob}");
    }

    #[test]
    fn the_box_mean_of_a_constant_is_the_constant_and_erosion_peels_the_border() {
        let mean = box_mean(&[7u8; 30], 5, 6, 2);
        assert!(mean.iter().all(|&m| (m - 7.0).abs() < 1e-6));
        let eroded = erode(&[true; 30], 5, 6);
        assert_eq!(eroded.iter().filter(|&&b| b).count(), 3 * 4);
    }
}
