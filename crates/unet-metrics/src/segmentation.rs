//! Foreground-restricted V-Rand and V-Info of one section, as Fiji computes them.
//!
//! Notation (Arganda-Carreras et al. 2015): `n` = the truth's cell pixels; `c_ij` = pixels in
//! truth segment `i` and proposal segment `j`; `s_i = sum_j c_ij`, `t_j = sum_i c_ij`.
//! - Foreground restriction: pixels where the truth is membrane (label 0) are removed.
//! - The proposal's background pixels (label 0: the watershed lines after thinning, the
//!   membrane without thinning) that fall on truth cells are counted as singletons, one segment
//!   each; this is Fiji's `sum(p_i0)/n` term in `getForegroundRestrictedRandIndexStatsN2` and
//!   `sum(p_i0) * log(n)` in `VariationOfInformation.foregroundRestrictedFscore`.
//! - V-Rand = `2 sum c_ij^2 / (sum s_i^2 + sum t_j^2)` (singletons add 1 to `sum c_ij^2` and to
//!   `sum t_j^2`), computed here in exact integers.
//! - V-Info = `2 I(S;T) / (H(S) + H(T))` in nats, with Fiji's conventions: if `H(S) = 0`
//!   (one truth segment) precision is 0 and recall 1; if `H(T) = 0` (one proposal segment)
//!   precision is 1 and recall 0; both give V-Info = 0 (even for a perfect proposal).
//!   Where the mutual information is 0 and both entropies are not, Fiji gets 0/0 = NaN; we return 0.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::Result;
use crate::validate::check_len;

/// The contingency sums of a truth segmentation against a proposal segmentation, restricted to
/// the truth's foreground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contingency {
    /// Truth foreground pixels (truth label > 0).
    pub n: u64,
    /// Truth foreground pixels on the proposal's background (label 0), each a singleton.
    pub singletons: u64,
    /// `sum_i s_i^2` over truth segments.
    pub sum_truth_sq: u64,
    /// `sum_j t_j^2` over proposal segments (label > 0), without the singletons.
    pub sum_proposal_sq: u64,
    /// `sum_ij c_ij^2` over truth and proposal segments (label > 0), without the singletons.
    pub sum_joint_sq: u64,
    /// `sum_i s_i ln s_i`.
    pub truth_xlogx: f64,
    /// `sum_j t_j ln t_j` (singletons add `1 ln 1 = 0`).
    pub proposal_xlogx: f64,
    /// `sum_ij c_ij ln c_ij`.
    pub joint_xlogx: f64,
    /// Number of truth segments with pixels.
    pub truth_segments: u64,
    /// Number of proposal segments touching the truth foreground, singletons included.
    pub proposal_segments: u64,
}

/// Entropies (nats) of the truth `S` and the proposal `T` over the truth foreground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entropies {
    /// `H(S)`.
    pub truth: f64,
    /// `H(T)`.
    pub proposal: f64,
    /// `H(S | T)`: false merges.
    pub truth_given_proposal: f64,
    /// `H(T | S)`: false splits.
    pub proposal_given_truth: f64,
}

impl Contingency {
    /// Counts `truth` against `proposal` (label images of the same size; 0 = truth membrane,
    /// ignored / proposal background, singletons).
    pub fn new(truth: &[u32], proposal: &[u32]) -> Result<Self> {
        check_len("proposal", truth.len(), proposal.len())?;
        let truth_count = truth.iter().copied().max().unwrap_or(0);
        let proposal_count = proposal.iter().copied().max().unwrap_or(0);
        let mut truth_sizes = vec![0u64; truth_count as usize + 1];
        for &t in truth {
            truth_sizes[t as usize] += 1;
        }
        let mut scratch = ContingencyScratch::default();
        Ok(scratch.count(truth, &truth_sizes, proposal, proposal_count))
    }

    /// Rand precision `sum c_ij^2 / sum t_j^2` (1 - false merges), singletons included.
    pub fn rand_precision(&self) -> f64 {
        (self.sum_joint_sq + self.singletons) as f64
            / (self.sum_proposal_sq + self.singletons) as f64
    }

    /// Rand recall `sum c_ij^2 / sum s_i^2` (1 - false splits), singletons included.
    pub fn rand_recall(&self) -> f64 {
        (self.sum_joint_sq + self.singletons) as f64 / self.sum_truth_sq as f64
    }

    /// Foreground-restricted Rand F-score, V-Rand. NaN when `n == 0`.
    pub fn v_rand(&self) -> f64 {
        let joint = self.sum_joint_sq + self.singletons;
        let proposal = self.sum_proposal_sq + self.singletons;
        2.0 * joint as f64 / (self.sum_truth_sq + proposal) as f64
    }

    /// scikit-image's `1 - adapted_rand_error(truth, proposal', ignore_labels=(0,))[0]` where
    /// `proposal'` gives every proposal background pixel its own label: the same F-score over
    /// pairs of distinct pixels, i.e. with the `n` self-pairs taken out of every sum:
    /// `2 (sum c_ij^2 - n) / (sum s_i^2 - n + sum t_j^2 - n)`. NaN when there is no pair.
    pub fn v_rand_without_self_pairs(&self) -> f64 {
        let n = self.n as f64;
        let joint = (self.sum_joint_sq + self.singletons) as f64 - n;
        let truth = self.sum_truth_sq as f64 - n;
        let proposal = (self.sum_proposal_sq + self.singletons) as f64 - n;
        2.0 * joint / (truth + proposal)
    }

    /// Entropies of truth and proposal over the truth foreground (NaN when `n == 0`).
    pub fn entropies(&self) -> Entropies {
        let n = self.n as f64;
        let ln_n = n.ln();
        // H(X) = ln n - (1/n) sum x ln x; exactly 0 for a single group, as in Fiji
        // (where p = 1 and ln 1 = 0).
        let entropy = |xlogx: f64, groups: u64| {
            if groups <= 1 {
                0.0
            } else {
                (ln_n - xlogx / n).max(0.0)
            }
        };
        let truth = entropy(self.truth_xlogx, self.truth_segments);
        let proposal = entropy(self.proposal_xlogx, self.proposal_segments);
        let joint = ln_n - self.joint_xlogx / n;
        Entropies {
            truth,
            proposal,
            truth_given_proposal: (joint - proposal).max(0.0),
            proposal_given_truth: (joint - truth).max(0.0),
        }
    }

    /// Foreground-restricted information-theoretic score, V-Info (see the module docs).
    pub fn v_info(&self) -> f64 {
        let h = self.entropies();
        let mut precision = (h.truth - h.truth_given_proposal) / h.truth;
        let mut recall = (h.proposal - h.proposal_given_truth) / h.proposal;
        if h.truth == 0.0 {
            precision = 0.0;
            recall = 1.0;
        }
        if h.proposal == 0.0 {
            precision = 1.0;
            recall = 0.0;
        }
        if precision + recall <= 0.0 {
            return 0.0;
        }
        (2.0 * precision * recall / (precision + recall)).clamp(0.0, 1.0)
    }
}

/// A multiplicative hasher for the packed (truth, proposal) label pairs.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Buffers reused between countings.
#[derive(Default)]
pub(crate) struct ContingencyScratch {
    proposal_sizes: Vec<u64>,
    pairs: HashMap<u64, u64, BuildHasherDefault<PairHasher>>,
}

impl ContingencyScratch {
    /// Counts `truth` (with precomputed segment sizes, index 0 unused) against `proposal`
    /// (labels `0..=proposal_count`).
    pub(crate) fn count(
        &mut self,
        truth: &[u32],
        truth_sizes: &[u64],
        proposal: &[u32],
        proposal_count: u32,
    ) -> Contingency {
        self.proposal_sizes.clear();
        self.proposal_sizes.resize(proposal_count as usize + 1, 0);
        self.pairs.clear();
        let mut run_key = u64::MAX;
        let mut run_len = 0u64;
        for (&t, &p) in truth.iter().zip(proposal) {
            if t == 0 {
                continue;
            }
            self.proposal_sizes[p as usize] += 1;
            if p == 0 {
                continue;
            }
            // Neighbouring pixels mostly share their pair: count runs, hash once per run.
            let key = (u64::from(t) << 32) | u64::from(p);
            if key == run_key {
                run_len += 1;
            } else {
                if run_len > 0 {
                    *self.pairs.entry(run_key).or_insert(0) += run_len;
                }
                run_key = key;
                run_len = 1;
            }
        }
        if run_len > 0 {
            *self.pairs.entry(run_key).or_insert(0) += run_len;
        }

        let xlogx = |x: u64| {
            let x = x as f64;
            x * x.ln()
        };
        let mut c = Contingency {
            n: 0,
            singletons: self.proposal_sizes[0],
            sum_truth_sq: 0,
            sum_proposal_sq: 0,
            sum_joint_sq: 0,
            truth_xlogx: 0.0,
            proposal_xlogx: 0.0,
            joint_xlogx: 0.0,
            truth_segments: 0,
            proposal_segments: self.proposal_sizes[0],
        };
        for &s in truth_sizes.iter().skip(1).filter(|&&s| s > 0) {
            c.n += s;
            c.sum_truth_sq += s * s;
            c.truth_xlogx += xlogx(s);
            c.truth_segments += 1;
        }
        for &s in self.proposal_sizes.iter().skip(1).filter(|&&s| s > 0) {
            c.sum_proposal_sq += s * s;
            c.proposal_xlogx += xlogx(s);
            c.proposal_segments += 1;
        }
        for &s in self.pairs.values() {
            c.sum_joint_sq += s * s;
            c.joint_xlogx += xlogx(s);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn perfect_proposal_scores_one() {
        let truth = [1, 1, 0, 2, 2, 2];
        let proposal = [5, 5, 0, 7, 7, 7];
        let c = Contingency::new(&truth, &proposal).unwrap();
        assert_eq!(c.v_rand(), 1.0);
        approx(c.v_info(), 1.0);
    }

    #[test]
    fn split_cell_by_hand() {
        // One truth cell of 4 pixels split 2 + 2, plus a truth cell of 2 pixels kept whole.
        let truth = [1, 1, 1, 1, 2, 2];
        let proposal = [1, 1, 2, 2, 3, 3];
        let c = Contingency::new(&truth, &proposal).unwrap();
        // sum c^2 = 4+4+4 = 12, sum s^2 = 16+4 = 20, sum t^2 = 12 -> V-Rand = 24/32
        assert_eq!(c.v_rand(), 0.75);
        assert_eq!(c.rand_precision(), 1.0);
        assert_eq!(c.rand_recall(), 0.6);
        // H(S) = ln 6 - (4 ln 4 + 2 ln 2)/6; H(T) = ln 3; H(S|T) = 0, so I = H(S);
        // V-Info = 2 H(S) / (H(S) + H(T)).
        let hs = 6f64.ln() - (4.0 * 4f64.ln() + 2.0 * 2f64.ln()) / 6.0;
        let ht = 3f64.ln();
        approx(c.v_info(), 2.0 * hs / (hs + ht));
        // Without self-pairs: (12-6)*2 / (20-6 + 12-6) = 12/20.
        approx(c.v_rand_without_self_pairs(), 0.6);
    }

    #[test]
    fn merged_pair_by_hand() {
        // Two truth cells of 3 pixels each, merged into one proposal segment.
        let truth = [1, 1, 1, 2, 2, 2];
        let proposal = [4; 6];
        let c = Contingency::new(&truth, &proposal).unwrap();
        // sum c^2 = 18, sum s^2 = 18, sum t^2 = 36 -> 36/54
        approx(c.v_rand(), 2.0 / 3.0);
        // H(T) = 0: Fiji sets precision 1, recall 0, V-Info 0.
        assert_eq!(c.v_info(), 0.0);
    }

    #[test]
    fn all_membrane_proposal_is_all_singletons() {
        // Unthinned proposal with no cell: every truth pixel is a singleton.
        let truth = [1, 1, 0, 2, 2];
        let proposal = [0; 5];
        let c = Contingency::new(&truth, &proposal).unwrap();
        assert_eq!(c.singletons, 4);
        // sum c^2 = 4 (singletons), sum s^2 = 8, sum t^2 = 4 -> 8/12
        approx(c.v_rand(), 2.0 / 3.0);
        // H(S) = ln 2, H(T) = ln 4, H(S|T) = 0 -> I = ln 2 -> V-Info = 2 ln2/(3 ln 2) = 2/3
        approx(c.v_info(), 2.0 / 3.0);
    }

    #[test]
    fn truth_membrane_is_ignored() {
        let truth = [1, 1, 0, 0];
        let a = Contingency::new(&truth, &[1, 1, 1, 2]).unwrap();
        let b = Contingency::new(&truth, &[1, 1, 0, 0]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.n, 2);
    }

    #[test]
    fn independent_partitions_give_zero_info() {
        // truth: left/right halves, proposal: top/bottom halves of a 2x2 image: I = 0.
        let c = Contingency::new(&[1, 2, 1, 2], &[1, 1, 2, 2]).unwrap();
        assert_eq!(c.v_info(), 0.0);
        approx(c.v_rand(), 0.5);
    }
}
