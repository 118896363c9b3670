//! 4-connected component labelling of binary masks.

use crate::error::Result;
use crate::validate::check_len;

/// A label image: `labels[i] == 0` outside the mask, `1..=count` inside, one label per
/// 4-connected component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelling {
    /// Label per pixel, row-major.
    pub labels: Vec<u32>,
    /// Number of components (the largest label).
    pub count: u32,
}

/// Labels the 4-connected components of `mask` (`height x width`, row-major). Labels are
/// numbered in row-major order of each component's first pixel.
///
/// ```
/// let mask = [true, false, true, true, false, true];
/// let l = unet_metrics::label_components(&mask, 2, 3).unwrap();
/// assert_eq!(l.labels, vec![1, 0, 2, 1, 0, 2]);
/// assert_eq!(l.count, 2);
/// ```
pub fn label_components(mask: &[bool], height: usize, width: usize) -> Result<Labelling> {
    check_len("mask", height * width, mask.len())?;
    let mut labels = vec![0u32; mask.len()];
    let count = label_into(mask, width, &mut labels, &mut Vec::new());
    Ok(Labelling { labels, count })
}

/// Two-pass union-find labelling into `labels` (same length as `mask`); `parent` is scratch
/// space reused between calls. Returns the number of components.
pub(crate) fn label_into(
    mask: &[bool],
    width: usize,
    labels: &mut [u32],
    parent: &mut Vec<u32>,
) -> u32 {
    parent.clear();
    parent.push(0);
    for (y, row) in mask.chunks(width).enumerate() {
        let base = y * width;
        for (x, &inside) in row.iter().enumerate() {
            let i = base + x;
            if !inside {
                labels[i] = 0;
                continue;
            }
            let left = if x > 0 { labels[i - 1] } else { 0 };
            let up = if y > 0 { labels[i - width] } else { 0 };
            labels[i] = match (left, up) {
                (0, 0) => {
                    let new = parent.len() as u32;
                    parent.push(new);
                    new
                }
                (l, 0) => l,
                (0, u) => u,
                (l, u) if l == u => l,
                (l, u) => {
                    let (rl, ru) = (find(parent, l), find(parent, u));
                    let root = rl.min(ru);
                    parent[rl as usize] = root;
                    parent[ru as usize] = root;
                    root
                }
            };
        }
    }
    // Resolve provisional labels to consecutive final ones, in order of first appearance.
    let mut next = 0u32;
    let mut final_label = vec![0u32; parent.len()];
    for provisional in 1..parent.len() {
        let root = find(parent, provisional as u32) as usize;
        if root == provisional {
            next += 1;
            final_label[provisional] = next;
        } else {
            final_label[provisional] = final_label[root];
        }
    }
    for label in labels.iter_mut() {
        *label = final_label[*label as usize];
    }
    next
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grand = parent[parent[x as usize] as usize];
        parent[x as usize] = grand;
        x = grand;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive flood-fill labelling for comparison.
    fn naive(mask: &[bool], h: usize, w: usize) -> Vec<u32> {
        let mut labels = vec![0u32; mask.len()];
        let mut next = 0;
        for start in 0..mask.len() {
            if !mask[start] || labels[start] != 0 {
                continue;
            }
            next += 1;
            let mut stack = vec![start];
            labels[start] = next;
            while let Some(p) = stack.pop() {
                let (y, x) = (p / w, p % w);
                let mut visit = |q: usize| {
                    if mask[q] && labels[q] == 0 {
                        labels[q] = next;
                        stack.push(q);
                    }
                };
                if x > 0 {
                    visit(p - 1);
                }
                if x + 1 < w {
                    visit(p + 1);
                }
                if y > 0 {
                    visit(p - w);
                }
                if y + 1 < h {
                    visit(p + w);
                }
            }
        }
        labels
    }

    #[test]
    fn diagonal_pixels_are_separate() {
        let mask = [true, false, false, true];
        assert_eq!(label_components(&mask, 2, 2).unwrap().count, 2);
    }

    #[test]
    fn u_shape_merges() {
        // 1 0 1
        // 1 1 1
        let mask = [true, false, true, true, true, true];
        let l = label_components(&mask, 2, 3).unwrap();
        assert_eq!(l.labels, vec![1, 0, 1, 1, 1, 1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive_flood_fill(h in 1usize..12, w in 1usize..12, seed in any::<u64>()) {
            let mut s = seed | 1;
            let mask: Vec<bool> = (0..h * w).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                s % 3 != 0
            }).collect();
            let fast = label_components(&mask, h, w).unwrap();
            // Both number components in order of first row-major pixel, so they agree exactly.
            prop_assert_eq!(fast.labels, naive(&mask, h, w));
        }
    }
}
