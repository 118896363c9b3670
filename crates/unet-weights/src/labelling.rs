//! Connected components of the foreground (label > 0), or of each foreground class of a
//! class-index image, found run by run.

use crate::error::{check_shape, Result};

/// Which neighbours join two foreground pixels into one cell (with the `serde` feature:
/// `"four"`, `"eight"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Connectivity {
    /// Edge neighbours only (up, down, left, right): the ISBI 2012 ground-truth definition.
    #[default]
    Four,
    /// Edge and corner neighbours.
    Eight,
}

/// The smallest axis-aligned rectangle holding a component; `bottom` and `right` are exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BoundingBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// One past the last row.
    pub bottom: usize,
    /// One past the last column.
    pub right: usize,
}

/// A labelled image: every foreground pixel carries its component's number `1..=count`, every
/// background pixel 0. Components are numbered in raster order of their first pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    labels: Vec<u32>,
    count: usize,
    height: usize,
    width: usize,
    boxes: Vec<BoundingBox>,
}

impl Components {
    /// The label of each pixel, row-major; 0 is background.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Gives up the label buffer.
    pub fn into_labels(self) -> Vec<u32> {
        self.labels
    }

    /// How many components there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The bounding box of each component: entry `i` belongs to label `i + 1`.
    pub fn bounding_boxes(&self) -> &[BoundingBox] {
        &self.boxes
    }
}

/// A horizontal run of foreground pixels `start..end` of one class in one row.
#[derive(Debug, Clone, Copy)]
struct Run {
    row: usize,
    start: usize,
    end: usize,
    /// Runs join only runs of the same class (always 1 for a binary mask).
    class: u16,
}

/// Finds the connected components of `mask > 0` (row-major, `height * width` values).
///
/// Works on runs of foreground pixels rather than on pixels: a union-find over runs that touch
/// runs of the row above, so its cost is one pass over the pixels plus a small term per run.
pub fn label_components(
    mask: &[u8],
    height: usize,
    width: usize,
    connectivity: Connectivity,
) -> Result<Components> {
    check_shape(mask.len(), 1, height, width)?;
    Ok(label_runs(height, width, connectivity, |row, runs| {
        let pixels = &mask[row * width..(row + 1) * width];
        let mut x = 0;
        loop {
            let start = next_foreground(pixels, x);
            if start == width {
                break;
            }
            x = next_background(pixels, start);
            runs.push(Run {
                row,
                start,
                end: x,
                class: 1,
            });
        }
    }))
}

/// Finds the instances of a class-index image (row-major, `height * width` values): the
/// connected components of each foreground class, foreground being every value other than 0 and
/// `ignore`. Touching pixels of different classes belong to different instances; touching pixels
/// of one class belong to one. Numbering and bounding boxes are as in [`label_components`],
/// which this equals on a 0/1 image.
///
/// ```
/// use unet_weights::{label_class_components, Connectivity};
///
/// // Classes 1 and 2 touch; the 9s are ignored, like background.
/// let classes: Vec<u16> = vec![1, 1, 2, 0, 9, 1];
/// let instances = label_class_components(&classes, 1, 6, Connectivity::Four, Some(9))?;
/// assert_eq!(instances.labels(), &[1, 1, 2, 0, 0, 3]);
/// # Ok::<(), unet_weights::Error>(())
/// ```
pub fn label_class_components(
    classes: &[u16],
    height: usize,
    width: usize,
    connectivity: Connectivity,
    ignore: Option<u16>,
) -> Result<Components> {
    check_shape(classes.len(), 1, height, width)?;
    let background = |value: u16| value == 0 || Some(value) == ignore;
    Ok(label_runs(height, width, connectivity, |row, runs| {
        let pixels = &classes[row * width..(row + 1) * width];
        let mut x = 0;
        while x < width {
            let class = pixels[x];
            if background(class) {
                x += 1;
                continue;
            }
            let start = x;
            while x < width && pixels[x] == class {
                x += 1;
            }
            runs.push(Run {
                row,
                start,
                end: x,
                class,
            });
        }
    }))
}

/// The labelling shared by binary masks and class images: `row_runs(row, runs)` appends the
/// foreground runs of `row`, left to right; runs of one class touching across rows are joined.
fn label_runs(
    height: usize,
    width: usize,
    connectivity: Connectivity,
    mut row_runs: impl FnMut(usize, &mut Vec<Run>),
) -> Components {
    let mut runs: Vec<Run> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    // Runs that touch diagonally count as touching under 8-connectivity.
    let reach = usize::from(connectivity == Connectivity::Eight);
    let mut previous_row = 0..0;
    for row in 0..height {
        let row_first = runs.len();
        row_runs(row, &mut runs);
        parent.extend(row_first..runs.len());
        // Both rows' runs are sorted and disjoint, so one merge-like sweep finds all overlaps.
        let mut above = previous_row.start;
        for current in row_first..runs.len() {
            let run = runs[current];
            while above < previous_row.end && runs[above].end + reach <= run.start {
                above += 1;
            }
            let mut candidate = above;
            while candidate < previous_row.end && runs[candidate].start < run.end + reach {
                if runs[candidate].class == run.class {
                    union(&mut parent, candidate, current);
                }
                candidate += 1;
            }
        }
        previous_row = row_first..runs.len();
    }

    // The root of each set is its first run in raster order, so numbering roots in run order
    // numbers components by their first pixel.
    let mut run_label = vec![0u32; runs.len()];
    let mut boxes: Vec<BoundingBox> = Vec::new();
    for index in 0..runs.len() {
        let root = find(&mut parent, index);
        let run = runs[index];
        if root == index {
            boxes.push(BoundingBox {
                top: run.row,
                left: run.start,
                bottom: run.row + 1,
                right: run.end,
            });
            run_label[index] = boxes.len() as u32;
        } else {
            run_label[index] = run_label[root];
            let bounds = &mut boxes[run_label[index] as usize - 1];
            bounds.left = bounds.left.min(run.start);
            bounds.right = bounds.right.max(run.end);
            bounds.bottom = run.row + 1;
        }
    }
    let mut labels = crate::scratch::take(height * width, 0);
    for (run, &label) in runs.iter().zip(&run_label) {
        let offset = run.row * width;
        labels[offset + run.start..offset + run.end].fill(label);
    }
    Components {
        labels,
        count: boxes.len(),
        height,
        width,
        boxes,
    }
}

/// Bytes looked at together by the run scanners.
const WORD: usize = 8;

/// Index of the first nonzero byte of `pixels` at or after `from`, or `pixels.len()`.
fn next_foreground(pixels: &[u8], mut from: usize) -> usize {
    // Whole words of background are skipped at once.
    while from + WORD <= pixels.len() {
        let word = u64::from_le_bytes(pixels[from..from + WORD].try_into().expect("8 bytes"));
        if word != 0 {
            return from + (word.trailing_zeros() / 8) as usize;
        }
        from += WORD;
    }
    from + pixels[from..].iter().take_while(|&&p| p == 0).count()
}

/// Index of the first zero byte of `pixels` at or after `from`, or `pixels.len()`.
fn next_background(pixels: &[u8], mut from: usize) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whole words without a zero byte are skipped at once (the classic has-zero-byte test).
    while from + WORD <= pixels.len() {
        let word = u64::from_le_bytes(pixels[from..from + WORD].try_into().expect("8 bytes"));
        if word.wrapping_sub(LOW) & !word & HIGH != 0 {
            break;
        }
        from += WORD;
    }
    from + pixels[from..].iter().take_while(|&&p| p != 0).count()
}

/// Root of `index`'s set, halving the path on the way.
fn find(parent: &mut [usize], mut index: usize) -> usize {
    while parent[index] != index {
        parent[index] = parent[parent[index]];
        index = parent[index];
    }
    index
}

/// Joins two sets; the smaller root (earlier run) becomes the root.
fn union(parent: &mut [usize], a: usize, b: usize) {
    let root_a = find(parent, a);
    let root_b = find(parent, b);
    let (low, high) = if root_a < root_b {
        (root_a, root_b)
    } else {
        (root_b, root_a)
    };
    parent[high] = low;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Flood fill, pixel by pixel: the obvious reference.
    fn flood_fill_labels(mask: &[u8], height: usize, width: usize, eight: bool) -> Vec<u32> {
        let classes: Vec<u16> = mask.iter().map(|&m| u16::from(m != 0)).collect();
        flood_fill_classes(&classes, height, width, eight, None)
    }

    /// Flood fill joining neighbours of the same class; 0 and `ignore` are background.
    fn flood_fill_classes(
        mask: &[u16],
        height: usize,
        width: usize,
        eight: bool,
        ignore: Option<u16>,
    ) -> Vec<u32> {
        let foreground = |value: u16| value != 0 && Some(value) != ignore;
        let mut labels = vec![0u32; mask.len()];
        let mut next = 0;
        for seed in 0..mask.len() {
            if !foreground(mask[seed]) || labels[seed] != 0 {
                continue;
            }
            next += 1;
            labels[seed] = next;
            let mut stack = vec![seed];
            while let Some(index) = stack.pop() {
                let (y, x) = ((index / width) as isize, (index % width) as isize);
                for dy in -1isize..=1 {
                    for dx in -1isize..=1 {
                        if (dy == 0 && dx == 0) || (!eight && dy != 0 && dx != 0) {
                            continue;
                        }
                        let (ny, nx) = (y + dy, x + dx);
                        if ny < 0 || nx < 0 || ny >= height as isize || nx >= width as isize {
                            continue;
                        }
                        let neighbour = ny as usize * width + nx as usize;
                        if mask[neighbour] == mask[seed] && labels[neighbour] == 0 {
                            labels[neighbour] = next;
                            stack.push(neighbour);
                        }
                    }
                }
            }
        }
        labels
    }

    #[test]
    fn run_scanners_find_the_next_transition() {
        let mut pixels = vec![0u8; 37];
        for (index, value) in [(9, 1), (10, 255), (11, 128), (12, 7), (30, 2)] {
            pixels[index] = value;
        }
        for from in 0..=pixels.len() {
            let foreground = (from..pixels.len()).find(|&i| pixels[i] != 0);
            let background = (from..pixels.len()).find(|&i| pixels[i] == 0);
            assert_eq!(
                next_foreground(&pixels, from),
                foreground.unwrap_or(pixels.len())
            );
            assert_eq!(
                next_background(&pixels, from),
                background.unwrap_or(pixels.len())
            );
        }
        let full = vec![200u8; 21];
        assert_eq!(next_background(&full, 0), 21);
        assert_eq!(next_foreground(&full, 3), 3);
    }

    #[test]
    fn diagonal_pixels_join_only_under_eight_connectivity() {
        let mask = [255, 0, 0, 255];
        let four = label_components(&mask, 2, 2, Connectivity::Four).unwrap();
        let eight = label_components(&mask, 2, 2, Connectivity::Eight).unwrap();
        assert_eq!(four.count(), 2);
        assert_eq!(four.labels(), &[1, 0, 0, 2]);
        assert_eq!(eight.count(), 1);
        assert_eq!(eight.labels(), &[1, 0, 0, 1]);
    }

    #[test]
    fn u_shape_merges_into_one_component_with_its_box() {
        #[rustfmt::skip]
        let mask = [
            1, 0, 1,
            1, 0, 1,
            1, 1, 1,
            0, 0, 0,
        ];
        let components = label_components(&mask, 4, 3, Connectivity::Four).unwrap();
        assert_eq!(components.count(), 1);
        let expected = BoundingBox {
            top: 0,
            left: 0,
            bottom: 3,
            right: 3,
        };
        assert_eq!(components.bounding_boxes(), &[expected]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let error = label_components(&[0; 5], 2, 3, Connectivity::Four).unwrap_err();
        assert!(matches!(
            error,
            crate::Error::LengthMismatch {
                expected: 6,
                actual: 5,
                ..
            }
        ));
    }

    #[test]
    fn empty_image_has_no_components() {
        let components = label_components(&[], 0, 7, Connectivity::Eight).unwrap();
        assert_eq!(components.count(), 0);
        assert!(components.labels().is_empty());
    }

    #[test]
    fn touching_classes_are_separate_instances() {
        #[rustfmt::skip]
        let classes: [u16; 12] = [
            1, 1, 2, 0,
            1, 2, 2, 7,
            0, 0, 7, 3,
        ];
        let four = label_class_components(&classes, 3, 4, Connectivity::Four, Some(7)).unwrap();
        assert_eq!(four.labels(), &[1, 1, 2, 0, 1, 2, 2, 0, 0, 0, 0, 3]);
        let eight = label_class_components(&classes, 3, 4, Connectivity::Eight, None).unwrap();
        // Without an ignore value the 7s are a class, joined across their diagonal.
        assert_eq!(eight.labels(), &[1, 1, 2, 0, 1, 2, 2, 3, 0, 0, 3, 4]);
        assert_eq!(
            eight.bounding_boxes()[2],
            BoundingBox {
                top: 1,
                left: 2,
                bottom: 3,
                right: 4
            }
        );
        assert!(label_class_components(&classes, 3, 5, Connectivity::Four, None).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn class_labelling_matches_flood_fill(
            (height, width, classes) in (1usize..14, 1usize..14).prop_flat_map(|(h, w)| {
                let pixel = prop_oneof![3 => Just(0u16), 2 => 1u16..4, 1 => Just(9u16)];
                (Just(h), Just(w), proptest::collection::vec(pixel, h * w))
            }),
            eight in any::<bool>(),
            ignore in prop_oneof![Just(None), Just(Some(9u16)), Just(Some(2u16))],
        ) {
            let connectivity = if eight { Connectivity::Eight } else { Connectivity::Four };
            let components =
                label_class_components(&classes, height, width, connectivity, ignore).unwrap();
            let expected = flood_fill_classes(&classes, height, width, eight, ignore);
            prop_assert_eq!(components.labels(), &expected[..]);
            prop_assert_eq!(components.count() as u32, expected.iter().copied().max().unwrap_or(0));
            // On a 0/1 image it is the binary labelling, boxes included.
            let binary: Vec<u16> = classes.iter().map(|&c| u16::from(c != 0)).collect();
            let mask: Vec<u8> = binary.iter().map(|&c| if c == 0 { 0 } else { 255 }).collect();
            prop_assert_eq!(
                label_class_components(&binary, height, width, connectivity, None).unwrap(),
                label_components(&mask, height, width, connectivity).unwrap()
            );
        }

        #[test]
        fn matches_flood_fill(
            (height, width, mask) in (1usize..14, 1usize..14).prop_flat_map(|(h, w)| {
                (Just(h), Just(w), proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8)], h * w))
            }),
            eight in any::<bool>(),
        ) {
            let connectivity = if eight { Connectivity::Eight } else { Connectivity::Four };
            let components = label_components(&mask, height, width, connectivity).unwrap();
            let expected = flood_fill_labels(&mask, height, width, eight);
            prop_assert_eq!(components.labels(), &expected[..]);
            prop_assert_eq!(components.count() as u32, expected.iter().copied().max().unwrap_or(0));
            for (index, bounds) in components.bounding_boxes().iter().enumerate() {
                let label = index as u32 + 1;
                let pixels: Vec<(usize, usize)> = (0..mask.len())
                    .filter(|&i| expected[i] == label)
                    .map(|i| (i / width, i % width))
                    .collect();
                prop_assert_eq!(bounds.top, pixels.iter().map(|p| p.0).min().unwrap());
                prop_assert_eq!(bounds.bottom, pixels.iter().map(|p| p.0).max().unwrap() + 1);
                prop_assert_eq!(bounds.left, pixels.iter().map(|p| p.1).min().unwrap());
                prop_assert_eq!(bounds.right, pixels.iter().map(|p| p.1).max().unwrap() + 1);
            }
        }
    }
}
