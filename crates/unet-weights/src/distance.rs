//! Exact Euclidean distances from every pixel to its nearest and second-nearest cell.
//!
//! Each cell gets its own exact squared distance transform (Felzenszwalb & Huttenlocher 2012:
//! one pass down the columns, then the lower envelope of parabolas along each row) over its
//! bounding box grown by the largest distance of interest, with only that cell's pixels as
//! sources. Each result is folded into running `min1`/`min2` arrays, so memory stays O(H*W)
//! however many cells there are. Cells are split into contiguous chunks of about equal window
//! area, one per Rayon thread; each chunk keeps its own pair of arrays, and pairs are merged.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::labelling::{label_components, BoundingBox, Components, Connectivity};
use crate::scratch;

/// Marks "no cell within reach" in the squared-distance arrays.
pub(crate) const UNREACHED: u32 = u32::MAX;

/// Squared distances to the nearest and second-nearest cell, row-major.
///
/// Entries at or below the `max_squared` they were computed for are exact; entries above it
/// may be too large (their window or their envelope was cut) and mean "out of range".
pub(crate) struct NearestTwoSquared {
    pub(crate) first: Vec<u32>,
    pub(crate) second: Vec<u32>,
}

impl NearestTwoSquared {
    /// Hands both buffers back for reuse.
    pub(crate) fn recycle(self) {
        scratch::recycle(self.first);
        scratch::recycle(self.second);
    }
}

/// Distances from each pixel to its nearest (`d1`) and second-nearest (`d2`) cell, row-major.
///
/// A pixel inside a cell is at distance 0 from it. A distance that does not exist (no cell, or
/// only one) or that lies beyond the requested range is `f32::INFINITY`.
#[derive(Debug, Clone, PartialEq)]
pub struct NearestTwo {
    /// Distance to the nearest cell.
    pub d1: Vec<f32>,
    /// Distance to the second-nearest cell.
    pub d2: Vec<f32>,
}

/// Exact distances from each pixel to its nearest and second-nearest cell, cells being the
/// connected components of `labels > 0`; no range limit (each cell's transform covers the whole
/// image, so this is slower than what [`crate::weight_map`] does).
pub fn nearest_two_distances(
    labels: &[u8],
    height: usize,
    width: usize,
    connectivity: Connectivity,
) -> Result<NearestTwo> {
    let components = label_components(labels, height, width, connectivity)?;
    nearest_two_distances_within(&components, f32::INFINITY)
}

/// Distances from each pixel to its nearest and second-nearest component, exact up to
/// `max_distance` and `f32::INFINITY` beyond it. Each component's transform is restricted to its
/// bounding box grown by `max_distance`, which is what makes a small range fast.
pub fn nearest_two_distances_within(
    components: &Components,
    max_distance: f32,
) -> Result<NearestTwo> {
    if max_distance.is_nan() || max_distance < 0.0 {
        return Err(Error::InvalidParameter {
            name: "max_distance",
            value: max_distance,
            requirement: "must be >= 0 (infinity allowed)",
        });
    }
    let max_squared = squared_reach(f64::from(max_distance));
    let squared = nearest_two_squared(components, max_squared, Needed::All);
    let to_distance = |value: u32| {
        if value > max_squared {
            f32::INFINITY
        } else {
            (value as f32).sqrt()
        }
    };
    let nearest = NearestTwo {
        d1: squared.first.par_iter().map(|&v| to_distance(v)).collect(),
        d2: squared.second.par_iter().map(|&v| to_distance(v)).collect(),
    };
    squared.recycle();
    Ok(nearest)
}

/// The largest integer squared distance `<= max_distance^2`, capped below [`UNREACHED`].
pub(crate) fn squared_reach(max_distance: f64) -> u32 {
    squared_cap(max_distance * max_distance)
}

/// The largest integer `<= squared`, capped below [`UNREACHED`].
pub(crate) fn squared_cap(squared: f64) -> u32 {
    let squared = squared.floor();
    if squared >= f64::from(UNREACHED - 1) {
        UNREACHED - 1
    } else {
        squared as u32
    }
}

/// Which pixels need their distances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needed {
    /// Every pixel.
    All,
    /// Background (label 0) pixels only; the others keep [`UNREACHED`] or a partial result.
    Background,
}

/// Squared distances to the two nearest components, exact where `<= max_squared` at the
/// `needed` pixels.
pub(crate) fn nearest_two_squared(
    components: &Components,
    max_squared: u32,
    needed: Needed,
) -> NearestTwoSquared {
    let pixels = components.labels().len();
    let needed_runs = NeededRuns::new(components, needed);
    let reach = integer_sqrt(max_squared);
    let windows: Vec<Window> = components
        .bounding_boxes()
        .iter()
        .map(|bounds| Window {
            top: bounds.top.saturating_sub(reach),
            left: bounds.left.saturating_sub(reach),
            bottom: (bounds.bottom.saturating_add(reach)).min(components.height()),
            right: (bounds.right.saturating_add(reach)).min(components.width()),
        })
        .collect();
    let chunks = balanced_chunks(&windows, rayon::current_num_threads());
    let merged = chunks
        .into_par_iter()
        .map(|chunk| {
            let mut accumulator = Accumulator::new(pixels);
            for cell in chunk {
                let bounds = &components.bounding_boxes()[cell];
                let label = cell as u32 + 1;
                let cell = CellWindow {
                    label,
                    bounds,
                    window: &windows[cell],
                };
                accumulator.add_cell(components, &needed_runs, &cell, max_squared, needed);
            }
            accumulator.mins
        })
        .reduce_with(merge);
    merged.unwrap_or_else(|| NearestTwoSquared {
        first: scratch::take(pixels, UNREACHED),
        second: scratch::take(pixels, UNREACHED),
    })
}

/// Largest `r` with `r * r <= value`.
fn integer_sqrt(value: u32) -> usize {
    let mut root = f64::from(value).sqrt() as u64;
    while root * root > u64::from(value) {
        root -= 1;
    }
    while (root + 1) * (root + 1) <= u64::from(value) {
        root += 1;
    }
    root as usize
}

/// The rectangle a cell's transform covers; `bottom` and `right` exclusive.
#[derive(Debug, Clone, Copy)]
struct Window {
    top: usize,
    left: usize,
    bottom: usize,
    right: usize,
}

impl Window {
    fn area(&self) -> usize {
        (self.bottom - self.top) * (self.right - self.left)
    }
}

/// Splits cells `0..n` into at most `parts` contiguous ranges of about equal window area.
/// Contiguous ranges of raster-ordered cells are also close in the image, which helps the cache.
fn balanced_chunks(windows: &[Window], parts: usize) -> Vec<std::ops::Range<usize>> {
    let total: usize = windows.iter().map(Window::area).sum();
    let parts = parts.clamp(1, windows.len().max(1));
    let mut chunks = Vec::with_capacity(parts);
    let mut start = 0;
    let mut accumulated = 0;
    for (index, window) in windows.iter().enumerate() {
        accumulated += window.area();
        // Close the chunk once it holds its share of the total.
        if accumulated * parts >= total * (chunks.len() + 1) && chunks.len() + 1 < parts {
            chunks.push(start..index + 1);
            start = index + 1;
        }
    }
    if start < windows.len() {
        chunks.push(start..windows.len());
    }
    chunks
}

/// Running two smallest of two pairs: the two smallest of `{a1, a2, b1, b2}` with `a1 <= a2`,
/// `b1 <= b2` are `min(a1, b1)` and `min(max(a1, b1), a2, b2)`.
fn merge(mut a: NearestTwoSquared, b: NearestTwoSquared) -> NearestTwoSquared {
    const BLOCK: usize = 4096;
    a.first
        .par_chunks_mut(BLOCK)
        .zip(a.second.par_chunks_mut(BLOCK))
        .zip(b.first.par_chunks(BLOCK).zip(b.second.par_chunks(BLOCK)))
        .for_each(|((a1, a2), (b1, b2))| {
            for (((a1, a2), &b1), &b2) in a1.iter_mut().zip(a2.iter_mut()).zip(b1).zip(b2) {
                let second = (*a1).max(b1).min(*a2).min(b2);
                *a1 = (*a1).min(b1);
                *a2 = second;
            }
        });
    b.recycle();
    a
}

/// The needed pixels of each image row, as runs `start..end` of columns.
struct NeededRuns {
    /// Runs of row `r` are `runs[row_starts[r]..row_starts[r + 1]]`.
    row_starts: Vec<usize>,
    runs: Vec<(usize, usize)>,
}

impl NeededRuns {
    fn new(components: &Components, needed: Needed) -> Self {
        let (height, width) = (components.height(), components.width());
        let mut row_starts = Vec::with_capacity(height + 1);
        let mut runs = Vec::new();
        row_starts.push(0);
        for row in 0..height {
            match needed {
                Needed::All => runs.push((0, width)),
                Needed::Background => {
                    let labels = &components.labels()[row * width..(row + 1) * width];
                    let mut column = 0;
                    while column < width {
                        if labels[column] != 0 {
                            column += 1;
                            continue;
                        }
                        let start = column;
                        while column < width && labels[column] == 0 {
                            column += 1;
                        }
                        runs.push((start, column));
                    }
                }
            }
            row_starts.push(runs.len());
        }
        Self { row_starts, runs }
    }

    fn row(&self, row: usize) -> &[(usize, usize)] {
        &self.runs[self.row_starts[row]..self.row_starts[row + 1]]
    }
}

/// A cell's label, its bounding box and the window its transform covers.
struct CellWindow<'a> {
    label: u32,
    bounds: &'a BoundingBox,
    window: &'a Window,
}

/// "No source in this column" in the column pass; far enough below `i32::MAX` that adding a
/// window's height cannot overflow.
const FAR: i32 = 1 << 30;

/// One chunk's running minima and its scratch buffers.
struct Accumulator {
    mins: NearestTwoSquared,
    /// Vertical distance to the cell within its bounding box, row-major over the box.
    vertical: Vec<i32>,
    /// The lower envelope of one row's parabolas.
    envelope: Vec<Parabola>,
}

/// A parabola `(x - apex)^2 + height` of the lower envelope, lowest right of
/// `crossing_numerator / crossing_denominator` (the denominator is > 0).
#[derive(Debug, Clone, Copy)]
struct Parabola {
    apex: i64,
    height: i64,
    crossing_numerator: i64,
    crossing_denominator: i64,
}

impl Accumulator {
    fn new(pixels: usize) -> Self {
        Self {
            mins: NearestTwoSquared {
                first: scratch::take(pixels, UNREACHED),
                second: scratch::take(pixels, UNREACHED),
            },
            vertical: Vec::new(),
            envelope: Vec::new(),
        }
    }

    /// Squared distance transform of one cell's pixels over its window, folded into the running
    /// minima at the needed pixels. Distances above `max_squared` may come out too large; those
    /// at or below it are exact.
    fn add_cell(
        &mut self,
        components: &Components,
        needed_runs: &NeededRuns,
        cell: &CellWindow,
        max_squared: u32,
        needed: Needed,
    ) {
        let (bounds, window) = (cell.bounds, cell.window);
        let image_width = components.width();
        let labels = components.labels();
        let box_rows = bounds.bottom - bounds.top;
        let box_columns = bounds.right - bounds.left;
        let reach = integer_sqrt(max_squared) as i64;

        // Column pass over the bounding box only (outside it no column holds a source): distance
        // to the nearest source pixel in the same column, down then up.
        self.vertical.clear();
        self.vertical.resize(box_rows * box_columns, FAR);
        for row in 0..box_rows {
            let image_row = &labels[(bounds.top + row) * image_width..][bounds.left..bounds.right];
            let (done, rest) = self.vertical.split_at_mut(row * box_columns);
            let current = &mut rest[..box_columns];
            if row == 0 {
                for (distance, &pixel) in current.iter_mut().zip(image_row) {
                    *distance = if pixel == cell.label { 0 } else { FAR };
                }
            } else {
                let above = &done[(row - 1) * box_columns..];
                for ((distance, &pixel), &up) in current.iter_mut().zip(image_row).zip(above) {
                    *distance = if pixel == cell.label { 0 } else { up + 1 };
                }
            }
        }
        for row in (0..box_rows.saturating_sub(1)).rev() {
            let (head, below) = self.vertical.split_at_mut((row + 1) * box_columns);
            let current = &mut head[row * box_columns..];
            for (distance, &down) in current.iter_mut().zip(&below[..box_columns]) {
                *distance = (*distance).min(down + 1);
            }
        }

        // Row pass: lower envelope of the parabolas (x - c)^2 + vertical(c)^2. Window rows above
        // and below the box see the box's first and last row, shifted by the extra rows.
        // When only background pixels are needed, the cell's own pixels never are, which lets
        // the envelope skip the inside of runs of cell pixels.
        let skip_inside = needed == Needed::Background;
        for image_row in window.top..window.bottom {
            let (box_row, shift) = if image_row < bounds.top {
                (0, bounds.top - image_row)
            } else if image_row >= bounds.bottom {
                (box_rows - 1, image_row + 1 - bounds.bottom)
            } else {
                (image_row - bounds.top, 0)
            };
            let vertical = &self.vertical[box_row * box_columns..(box_row + 1) * box_columns];
            let Some(lowest) = build_envelope(
                &mut self.envelope,
                vertical,
                shift as i64,
                bounds.left as i64,
                reach,
                skip_inside && shift == 0,
            ) else {
                continue;
            };
            // Pixels further than this from every apex are out of range.
            let across = integer_sqrt(max_squared - (lowest * lowest) as u32) as i64;
            let first_apex = self.envelope[0].apex;
            let last_apex = self.envelope[self.envelope.len() - 1].apex;
            let start = (first_apex - across).max(0) as usize;
            let end = (last_apex + across + 1).min(image_width as i64) as usize;
            let offset = image_row * image_width;
            let first = &mut self.mins.first[offset..offset + image_width];
            let second = &mut self.mins.second[offset..offset + image_width];
            let runs = needed_runs.row(image_row);
            let runs = &runs[runs.partition_point(|&(_, run_end)| run_end <= start)..];
            fold_envelope(&self.envelope, runs, start..end, first, second);
        }
    }
}

/// Crossing numerator of the first parabola (over a denominator of 1): left of every real
/// crossing, whose numerators are below 2^33 in size, and small enough that multiplying it by a
/// denominator (below 2^17) cannot overflow.
const LEFTMOST: i64 = -(1 << 40);

/// Builds the lower envelope of the parabolas `(x - c)^2 + (vertical[c] + shift)^2` for columns
/// `c` (at image column `left + c`) whose height is at most `reach`; higher ones cannot bring a
/// pixel within range, and leaving them out keeps the envelope short. With `skip_inside`, a
/// height-0 column between two height-0 columns is left out too: outside that run of cell pixels
/// the run's ends are nearer. Returns the lowest height used, or `None` when there is none.
fn build_envelope(
    envelope: &mut Vec<Parabola>,
    vertical: &[i32],
    shift: i64,
    left: i64,
    reach: i64,
    skip_inside: bool,
) -> Option<i64> {
    envelope.clear();
    let mut lowest = i64::MAX;
    let last_column = vertical.len().saturating_sub(1);
    for (column, &distance) in vertical.iter().enumerate() {
        let distance = i64::from(distance) + shift;
        if distance > reach {
            continue;
        }
        if skip_inside
            && distance == 0
            && column > 0
            && column < last_column
            && vertical[column - 1] == 0
            && vertical[column + 1] == 0
        {
            continue;
        }
        lowest = lowest.min(distance);
        let apex = left + column as i64;
        let height = distance * distance;
        let value = height + apex * apex;
        loop {
            let Some(last) = envelope.last() else {
                envelope.push(Parabola {
                    apex,
                    height,
                    crossing_numerator: LEFTMOST,
                    crossing_denominator: 1,
                });
                break;
            };
            // The new parabola is lower than `last` right of numerator / denominator; `last` is
            // hidden if that point is not right of where `last` itself starts.
            let numerator = value - (last.height + last.apex * last.apex);
            let denominator = 2 * (apex - last.apex);
            if numerator * last.crossing_denominator <= last.crossing_numerator * denominator {
                envelope.pop();
                continue;
            }
            envelope.push(Parabola {
                apex,
                height,
                crossing_numerator: numerator,
                crossing_denominator: denominator,
            });
            break;
        }
    }
    (lowest != i64::MAX).then_some(lowest)
}

/// Folds the envelope's values at the needed columns (`runs`, sorted) within `span` into the
/// running nearest (`first`) and second-nearest (`second`) squared distances of one image row.
fn fold_envelope(
    envelope: &[Parabola],
    runs: &[(usize, usize)],
    span: std::ops::Range<usize>,
    first: &mut [u32],
    second: &mut [u32],
) {
    let mut segment = 0;
    for &(run_start, run_end) in runs {
        if run_start >= span.end {
            break;
        }
        for column in run_start.max(span.start)..run_end.min(span.end) {
            let position = column as i64;
            // Move on while the next parabola is lower here: its crossing lies left of `column`.
            while let Some(next) = envelope.get(segment + 1) {
                if next.crossing_numerator >= position * next.crossing_denominator {
                    break;
                }
                segment += 1;
            }
            let parabola = &envelope[segment];
            let offset = (position - parabola.apex).unsigned_abs() as u32;
            let distance = offset * offset + parabola.height as u32;
            second[column] = second[column].min(first[column].max(distance));
            first[column] = first[column].min(distance);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Distance from every pixel to every pixel of every cell: the obvious reference.
    pub(crate) fn brute_force_nearest_two(components: &Components) -> (Vec<f64>, Vec<f64>) {
        let (height, width) = (components.height(), components.width());
        let labels = components.labels();
        let mut d1 = vec![f64::INFINITY; labels.len()];
        let mut d2 = vec![f64::INFINITY; labels.len()];
        for y in 0..height {
            for x in 0..width {
                let mut per_cell = vec![f64::INFINITY; components.count()];
                for (source, &label) in labels.iter().enumerate() {
                    if label == 0 {
                        continue;
                    }
                    let dy = (source / width) as f64 - y as f64;
                    let dx = (source % width) as f64 - x as f64;
                    let slot = &mut per_cell[label as usize - 1];
                    *slot = slot.min((dy * dy + dx * dx).sqrt());
                }
                per_cell.sort_by(f64::total_cmp);
                d1[y * width + x] = per_cell.first().copied().unwrap_or(f64::INFINITY);
                d2[y * width + x] = per_cell.get(1).copied().unwrap_or(f64::INFINITY);
            }
        }
        (d1, d2)
    }

    fn label_image() -> impl Strategy<Value = (usize, usize, Vec<u8>)> {
        (1usize..16, 1usize..16).prop_flat_map(|(h, w)| {
            let pixel = prop_oneof![3 => Just(0u8), 1 => Just(255u8)];
            (Just(h), Just(w), proptest::collection::vec(pixel, h * w))
        })
    }

    fn assert_close(actual: f32, expected: f64) -> std::result::Result<(), TestCaseError> {
        if expected.is_infinite() {
            prop_assert!(actual.is_infinite(), "expected infinity, got {actual}");
        } else {
            prop_assert!((f64::from(actual) - expected).abs() <= 1e-5 * expected.max(1.0));
        }
        Ok(())
    }

    #[test]
    fn integer_sqrt_rounds_down() {
        for value in [0u32, 1, 2, 3, 4, 15, 16, 17, 808, u32::MAX - 1, u32::MAX] {
            let root = integer_sqrt(value) as u64;
            assert!(root * root <= u64::from(value));
            assert!((root + 1) * (root + 1) > u64::from(value));
        }
    }

    #[test]
    fn chunks_cover_all_cells_in_order() {
        let window = |side: usize| Window {
            top: 0,
            left: 0,
            bottom: side,
            right: side,
        };
        let windows: Vec<Window> = [5, 1, 1, 1, 9, 2, 2, 3].map(window).to_vec();
        for parts in 1..12 {
            let chunks = balanced_chunks(&windows, parts);
            assert!(chunks.len() <= parts);
            let flat: Vec<usize> = chunks.into_iter().flatten().collect();
            assert_eq!(flat, (0..windows.len()).collect::<Vec<_>>());
        }
        assert!(balanced_chunks(&[], 4).is_empty());
    }

    #[test]
    fn thread_count_does_not_change_the_result() {
        // More threads mean more chunks and more merges of (min1, min2) pairs.
        let mask: Vec<u8> = (0..40 * 30)
            .map(|i: usize| if (i * 7919) % 13 < 4 { 255 } else { 0 })
            .collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| nearest_two_distances(&mask, 40, 30, Connectivity::Four).unwrap())
        };
        let one = run(1);
        assert!(one.d2.iter().any(|d| d.is_finite() && *d > 1.0));
        for threads in [2, 3, 5] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn negative_or_nan_range_is_an_error() {
        let components = label_components(&[255], 1, 1, Connectivity::Four).unwrap();
        for bad in [-1.0, f32::NAN] {
            assert!(matches!(
                nearest_two_distances_within(&components, bad),
                Err(Error::InvalidParameter {
                    name: "max_distance",
                    ..
                })
            ));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn exact_distances_match_brute_force((height, width, mask) in label_image(), eight in any::<bool>()) {
            let connectivity = if eight { Connectivity::Eight } else { Connectivity::Four };
            let components = label_components(&mask, height, width, connectivity).unwrap();
            let (d1, d2) = brute_force_nearest_two(&components);
            let nearest = nearest_two_distances(&mask, height, width, connectivity).unwrap();
            for index in 0..mask.len() {
                assert_close(nearest.d1[index], d1[index])?;
                assert_close(nearest.d2[index], d2[index])?;
            }
        }

        #[test]
        fn ranged_distances_are_exact_within_range_and_infinite_beyond(
            (height, width, mask) in label_image(),
            max_distance in 0.0f32..8.0,
        ) {
            let components = label_components(&mask, height, width, Connectivity::Four).unwrap();
            let (d1, d2) = brute_force_nearest_two(&components);
            let nearest = nearest_two_distances_within(&components, max_distance).unwrap();
            let cut = |d: f64| if d * d <= f64::from(max_distance) * f64::from(max_distance) { d } else { f64::INFINITY };
            for index in 0..mask.len() {
                assert_close(nearest.d1[index], cut(d1[index]))?;
                assert_close(nearest.d2[index], cut(d2[index]))?;
            }
        }
    }
}
