//! Border thinning as the ISBI 2012 scoring does it: a 4-connected watershed that grows the
//! proposal's cell regions over its membrane.
//!
//! This reproduces Fiji's `trainableSegmentation.utils.WatershedTransform2D` applied, as in
//! `RandError` / `VariationOfInformation` "after thinning", to the binary image that is 0 on the
//! cells (`P > t`) and 255 on the membrane, with 4-connectivity. That is Soille & Vincent's
//! flooding (1990) with its quirks kept, because they change the result:
//! - level 0: the cell regions (4-connected components of the cell mask) become the basins;
//! - level 255: the membrane pixels that touch a basin enter a FIFO queue, in Fiji's pixel order
//!   (column by column: x outer, y inner); the queue grows each basin over the membrane one
//!   4-neighbour at a time, neighbours visited left, up, right, down;
//! - a queued pixel that meets two different basins becomes a watershed (line) pixel; one that
//!   meets a line pixel first becomes a line pixel and sets a single global `flag`, which lets the
//!   next basin neighbour it meets relabel it (the original's `flag` is one variable for the
//!   whole image, not per pixel; kept as is);
//! - membrane with no cell at all in the image becomes one region per 4-connected component
//!   (a new minimum at level 255): an all-membrane proposal is one segment covering the image.
//!
//! The result labels every pixel with its region (`1..`), or 0 on the 1-pixel (sometimes
//! thicker) watershed lines; membrane that separates no two cells is absorbed by the cell.

use crate::error::Result;
use crate::labelling::label_into;
use crate::validate::check_len;

const INIT: i32 = -1;
const MASK: i32 = -2;
const WSHED: i32 = 0;
const INQUEUE: i32 = -3;

/// Thins the proposal's borders: returns a region label per pixel, 0 on watershed lines.
/// `cell_mask[i]` is true where the proposal says cell (`P > t`); `height x width`, row-major.
///
/// ```
/// // Two cells separated by a 3-pixel-wide membrane band: the line keeps 1 pixel.
/// let cell = [true, false, false, false, true];
/// let regions = unet_metrics::thin_borders(&cell, 1, 5).unwrap();
/// assert_eq!(regions, vec![1, 1, 0, 2, 2]);
/// ```
pub fn thin_borders(cell_mask: &[bool], height: usize, width: usize) -> Result<Vec<u32>> {
    check_len("cell mask", height * width, cell_mask.len())?;
    let mut scratch = ThinningScratch::default();
    let mut out = vec![0u32; cell_mask.len()];
    scratch.thin(cell_mask, height, width, &mut out);
    Ok(out)
}

/// Buffers reused between thinnings of same-sized images.
#[derive(Debug, Default)]
pub(crate) struct ThinningScratch {
    labels: Vec<i32>,
    cells: Vec<u32>,
    parent: Vec<u32>,
    queue: Vec<u32>,
    row_major: Vec<u32>,
    column_start: Vec<u32>,
}

impl ThinningScratch {
    /// The 4-connected components of the last thinned cell mask: the unthinned proposal.
    pub(crate) fn cell_components(&self) -> &[u32] {
        &self.cells
    }

    /// Writes the thinned region labels of `cell_mask` into `out`.
    pub(crate) fn thin(
        &mut self,
        cell_mask: &[bool],
        height: usize,
        width: usize,
        out: &mut [u32],
    ) {
        let n = cell_mask.len();
        self.cells.resize(n, 0);
        // Level 0: the cell regions are the first minima. Their numbering differs from Fiji's
        // (which scans column by column) but only label equality matters below.
        let cell_count = label_into(cell_mask, width, &mut self.cells, &mut self.parent);
        self.labels.clear();
        self.labels.extend(
            self.cells
                .iter()
                .map(|&c| if c > 0 { c as i32 } else { INIT }),
        );
        let labels = &mut self.labels;
        let queue = &mut self.queue;
        queue.clear();

        // Level 255, first step: mark the membrane, queue the pixels next to a basin, in Fiji's
        // column-major order. Whether a pixel is queued does not depend on the order (its
        // membrane neighbours are all unlabelled then), so it is decided in a fast row-major
        // pass and the queue is then put in column-major order by a counting sort on x.
        let column_start = &mut self.column_start;
        column_start.clear();
        column_start.resize(width + 1, 0);
        for y in 0..height {
            for x in 0..width {
                let i = y * width + x;
                if cell_mask[i] {
                    continue;
                }
                labels[i] = MASK;
                if neighbours(i, x, y, width, height)
                    .into_iter()
                    .flatten()
                    .any(|q| cell_mask[q])
                {
                    labels[i] = INQUEUE;
                    queue.push(i as u32);
                    column_start[x + 1] += 1;
                }
            }
        }
        for x in 0..width {
            column_start[x + 1] += column_start[x];
        }
        self.row_major.clear();
        self.row_major.extend_from_slice(queue);
        for &i in &self.row_major {
            let x = i as usize % width;
            queue[column_start[x] as usize] = i;
            column_start[x] += 1;
        }

        // Flooding, with the original's global flag.
        let mut flag = false;
        let mut head = 0;
        while head < queue.len() {
            let p = queue[head] as usize;
            head += 1;
            let y = p / width;
            let x = p - y * width;
            for q in neighbours(p, x, y, width, height).into_iter().flatten() {
                let lq = labels[q];
                if lq > 0 {
                    let lp = labels[p];
                    if lp == INQUEUE || (lp == WSHED && flag) {
                        labels[p] = lq;
                    } else if lp > 0 && lp != lq {
                        labels[p] = WSHED;
                        flag = false;
                    }
                } else if lq == WSHED {
                    if labels[p] == INQUEUE {
                        labels[p] = WSHED;
                        flag = true;
                    }
                } else if lq == MASK {
                    labels[q] = INQUEUE;
                    queue.push(q as u32);
                }
            }
        }

        // New minima at level 255: membrane no basin reached (only when there is no cell).
        let mut next = cell_count as i32;
        let columns = if cell_count == 0 { width } else { 0 };
        for x in 0..columns {
            for y in 0..height {
                let start = y * width + x;
                if labels[start] != MASK {
                    continue;
                }
                next += 1;
                labels[start] = next;
                queue.clear();
                queue.push(start as u32);
                let mut head = 0;
                while head < queue.len() {
                    let p = queue[head] as usize;
                    head += 1;
                    let (px, py) = (p % width, p / width);
                    for q in neighbours(p, px, py, width, height).into_iter().flatten() {
                        if labels[q] == MASK {
                            labels[q] = next;
                            queue.push(q as u32);
                        }
                    }
                }
            }
        }

        for (o, &l) in out.iter_mut().zip(labels.iter()) {
            *o = if l > 0 { l as u32 } else { 0 };
        }
    }
}

/// The 4-neighbours of pixel `i = (x, y)` in Fiji's order: left, up, right, down.
#[inline(always)]
fn neighbours(i: usize, x: usize, y: usize, width: usize, height: usize) -> [Option<usize>; 4] {
    [
        (x > 0).then(|| i - 1),
        (y > 0).then(|| i - width),
        (x + 1 < width).then(|| i + 1),
        (y + 1 < height).then(|| i + width),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a picture: `#` cell, `.` membrane.
    fn mask(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        let m = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        (m, h, w)
    }

    /// Renders region labels with 0 as `.` and the labels renumbered by first appearance.
    fn render(labels: &[u32], w: usize) -> Vec<String> {
        let mut order: Vec<u32> = Vec::new();
        labels
            .chunks(w)
            .map(|row| {
                row.iter()
                    .map(|&l| {
                        if l == 0 {
                            '.'
                        } else {
                            let k = order.iter().position(|&o| o == l).unwrap_or_else(|| {
                                order.push(l);
                                order.len() - 1
                            });
                            (b'a' + k as u8) as char
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn thin(rows: &[&str]) -> Vec<String> {
        let (m, h, w) = mask(rows);
        render(&thin_borders(&m, h, w).unwrap(), w)
    }

    #[test]
    fn single_pixel_border_stays() {
        // The middle column touches both cells: it is a line.
        assert_eq!(thin(&["#.#", "#.#"]), vec!["a.b", "a.b"]);
    }

    #[test]
    fn wide_border_thins_to_the_middle() {
        // Queue (column-major): (1,0) then (3,0). (1,0) takes a; (3,0) takes b; then (2,0),
        // queued by (1,0), meets a on its left and b on its right: a line.
        assert_eq!(thin(&["#...#"]), vec!["aa.bb"]);
        // Even width: queue (1,0), (4,0). (1,0) takes a, queues (2,0); (4,0) takes b, queues
        // (3,0); (2,0) takes a; (3,0) takes a from its left, then meets b: a line one pixel
        // right of the middle.
        assert_eq!(thin(&["#....#"]), vec!["aaa.bb"]);
    }

    #[test]
    fn border_touching_one_cell_is_absorbed() {
        // A dead-end membrane spur and the membrane frame around a single cell vanish.
        assert_eq!(thin(&["...", ".#.", "..."]), vec!["aaa", "aaa", "aaa"]);
        assert_eq!(thin(&["##..", "##.."]), vec!["aaaa", "aaaa"]);
    }

    #[test]
    fn all_membrane_is_one_region_and_all_cell_is_unchanged() {
        assert_eq!(thin(&["...", "..."]), vec!["aaa", "aaa"]);
        assert_eq!(thin(&["##", "##"]), vec!["aa", "aa"]);
    }

    #[test]
    fn diagonal_cells_get_a_line_between() {
        // #.
        // .#   queue order (column-major): (0,1) then (1,0).
        // (0,1): left none, up (0,0)=a -> a; right (1,1)=b -> line (flag false).
        // (1,0): left (0,0)=a -> a; down (1,1)=b -> line.
        assert_eq!(thin(&["#.", ".#"]), vec!["a.", ".b"]);
    }

    #[test]
    fn line_meeting_line_then_basin_uses_the_global_flag() {
        // Three cells around a membrane junction:
        //   # . #        (0,0)=a, (2,0)=b, (0,2)... see below
        //   . . .
        //   # . #
        // Queue (column-major): (0,1) (1,0) (1,2) (2,1); then (1,1) is queued by (0,1).
        // (0,1): up a -> a; down c -> line, flag=false.
        // (1,0): left a -> a; right b -> line.
        // (1,2): left c -> c; right d -> line.
        // (2,1): up b -> b; down d -> line.
        // (1,1): left (0,1) line -> line, flag = true; up (1,0) line; right (2,1) line; down
        //        (1,2) line. Stays a line.
        assert_eq!(thin(&["#.#", "...", "#.#"]), vec!["a.b", "...", "c.d"]);
    }

    #[test]
    fn corner_pixel_meets_two_basins() {
        // # . .
        // . . #
        // Queue: (0,1) [up a], (1,0) [left a], (1,1) [right b], (2,0) [down b].
        // (0,1): up a -> a. (1,0): left a -> a. (1,1): left a -> a, right b -> line.
        // (2,0): left a -> a, down b -> line.
        assert_eq!(thin(&["#..", "..#"]), vec!["aa.", "a.b"]);
    }

    #[test]
    fn global_flag_lets_a_line_pixel_join_a_basin() {
        // . . #      cells: a = (2,0), b = (1,1)
        // . # .
        // Queue (column-major): (0,1) [right b], (1,0) [right a], (2,1) [left b].
        // (0,1): up (0,0) is MASK -> queued; right b -> b.
        // (1,0): left (0,0) queued; right a -> a; down b -> line, flag = false.
        // (2,1): left b -> b; up a -> line, flag = false.
        // (0,0): right (1,0) is a line -> line, flag = true; down (0,1) = b and the flag is
        //        set -> b. Without the global flag (0,0) would stay a line.
        assert_eq!(thin(&["..#", ".#."]), vec!["a.b", "aa."]);
    }

    #[test]
    fn thinned_regions_cover_the_cells() {
        // Every cell pixel keeps its own region; regions of different cells stay different.
        let (m, h, w) = mask(&["#..#..#", ".......", "#..#..#", "...#..."]);
        let out = thin_borders(&m, h, w).unwrap();
        let cells = crate::label_components(&m, h, w).unwrap();
        for i in 0..m.len() {
            for j in 0..m.len() {
                if m[i] && m[j] {
                    assert_eq!(cells.labels[i] == cells.labels[j], out[i] == out[j]);
                }
            }
        }
    }
}
