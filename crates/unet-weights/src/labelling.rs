//! Connected components of the foreground (label > 0), found run by run.

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

/// A horizontal run of foreground pixels `start..end` in one row.
#[derive(Debug, Clone, Copy)]
struct Run {
    row: usize,
    start: usize,
    end: usize,
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
    let mut runs: Vec<Run> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    // Runs that touch diagonally count as touching under 8-connectivity.
    let reach = usize::from(connectivity == Connectivity::Eight);
    let mut previous_row = 0..0;
    for row in 0..height {
        let pixels = &mask[row * width..(row + 1) * width];
        let row_first = runs.len();
        let mut x = 0;
        loop {
            let start = next_foreground(pixels, x);
            if start == width {
                break;
            }
            x = next_background(pixels, start);
            runs.push(Run { row, start, end: x });
            parent.push(runs.len() - 1);
        }
        // Both rows' runs are sorted and disjoint, so one merge-like sweep finds all overlaps.
        let mut above = previous_row.start;
        for current in row_first..runs.len() {
            let run = runs[current];
            while above < previous_row.end && runs[above].end + reach <= run.start {
                above += 1;
            }
            let mut candidate = above;
            while candidate < previous_row.end && runs[candidate].start < run.end + reach {
                union(&mut parent, candidate, current);
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
    let mut labels = crate::scratch::take(mask.len(), 0);
    for (run, &label) in runs.iter().zip(&run_label) {
        let offset = run.row * width;
        labels[offset + run.start..offset + run.end].fill(label);
    }
    Ok(Components {
        labels,
        count: boxes.len(),
        height,
        width,
        boxes,
    })
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
        let mut labels = vec![0u32; mask.len()];
        let mut next = 0;
        for seed in 0..mask.len() {
            if mask[seed] == 0 || labels[seed] != 0 {
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
                        if mask[neighbour] != 0 && labels[neighbour] == 0 {
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

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
