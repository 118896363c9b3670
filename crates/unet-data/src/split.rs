//! Train / validation splits of a stack's sections.

use crate::{Error, Result};

/// Which sections train and which validate.
///
/// Sections of an EM stack are serial and neighbours look alike, so every split here is
/// contiguous: a validation block never sits between training sections it could leak from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training section indices, ascending.
    pub train: Vec<usize>,
    /// Validation section indices, ascending.
    pub validation: Vec<usize>,
}

impl Split {
    /// The reference's split: the first `ceil(0.9 n)` sections train, the rest validate
    /// (27 / 3 for ISBI's 30).
    pub fn reference(n: usize) -> Result<Split> {
        Split::fraction(n, 0.9)
    }

    /// The first `ceil(train_fraction * n)` sections train, the rest validate.
    ///
    /// `train_fraction` must lie in (0, 1]; a fraction of 1 leaves no validation section.
    pub fn fraction(n: usize, train_fraction: f64) -> Result<Split> {
        if n == 0 {
            return Err(Error::Split("no section to split".into()));
        }
        if !(train_fraction > 0.0 && train_fraction <= 1.0) {
            return Err(Error::Split(format!(
                "train fraction {train_fraction} is not in (0, 1]"
            )));
        }
        // Guard against 0.9 * 30 = 27.000000000000004 rounding up to 28.
        let n_train = ((train_fraction * n as f64) - 1e-9).ceil().max(1.0) as usize;
        let n_train = n_train.min(n);
        Ok(Split {
            train: (0..n_train).collect(),
            validation: (n_train..n).collect(),
        })
    }

    /// Fold `fold` (0-based) of `k` contiguous folds validates; the others train.
    ///
    /// Fold sizes differ by at most one; the first `n % k` folds are the larger ones.
    pub fn k_fold(n: usize, k: usize, fold: usize) -> Result<Split> {
        if k < 2 || k > n {
            return Err(Error::Split(format!(
                "{k} folds of {n} sections: need 2 <= k <= n"
            )));
        }
        if fold >= k {
            return Err(Error::Split(format!(
                "fold {fold} of {k} (folds count from 0)"
            )));
        }
        let (base, extra) = (n / k, n % k);
        let start = fold * base + fold.min(extra);
        let len = base + usize::from(fold < extra);
        let validation: Vec<usize> = (start..start + len).collect();
        let train = (0..n).filter(|i| !validation.contains(i)).collect();
        Ok(Split { train, validation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_is_27_3() {
        let s = Split::reference(30).unwrap();
        assert_eq!(s.train, (0..27).collect::<Vec<_>>());
        assert_eq!(s.validation, vec![27, 28, 29]);
    }

    #[test]
    fn bad_parameters() {
        assert!(Split::fraction(0, 0.5).is_err());
        assert!(Split::fraction(10, 0.0).is_err());
        assert!(Split::fraction(10, 1.5).is_err());
        assert!(Split::fraction(10, f64::NAN).is_err());
        assert!(Split::k_fold(10, 1, 0).is_err());
        assert!(Split::k_fold(10, 11, 0).is_err());
        assert!(Split::k_fold(10, 5, 5).is_err());
    }

    proptest! {
        #[test]
        fn k_fold_partitions(n in 2usize..60, k_seed in 0usize..1000) {
            let k = 2 + k_seed % (n - 1);
            let mut seen = vec![0usize; n];
            for fold in 0..k {
                let s = Split::k_fold(n, k, fold).unwrap();
                prop_assert_eq!(s.train.len() + s.validation.len(), n);
                prop_assert!(s.validation.len() >= n / k && s.validation.len() <= n / k + 1);
                for &v in &s.validation { seen[v] += 1; }
            }
            prop_assert!(seen.iter().all(|&c| c == 1));
        }

        #[test]
        fn fraction_covers_all(n in 1usize..100, f in 0.01f64..=1.0) {
            let s = Split::fraction(n, f).unwrap();
            prop_assert!(!s.train.is_empty());
            let all: Vec<usize> = s.train.iter().chain(&s.validation).copied().collect();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
    }
}
