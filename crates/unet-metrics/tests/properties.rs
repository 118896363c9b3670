//! Properties of the scores on random inputs.

use proptest::prelude::*;
use unet_metrics::{
    isbi_scores, label_components, pixel_scores, thin_borders, ConfusionMatrix, IsbiOptions,
};

/// A random section: `(height, width, labels 0/255, probabilities)`.
fn section() -> impl Strategy<Value = (usize, usize, Vec<u8>, Vec<f32>)> {
    (2usize..14, 2usize..14).prop_flat_map(|(h, w)| {
        (
            Just(h),
            Just(w),
            prop::collection::vec(prop_oneof![1 => Just(0u8), 2 => Just(255u8)], h * w),
            prop::collection::vec(0.0f32..=1.0, h * w),
        )
    })
}

fn in_unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn perfect_prediction_scores_one((h, w, labels, _) in section()) {
        prop_assume!(labels.iter().any(|&l| l > 0));
        let prob: Vec<f32> = labels.iter().map(|&l| if l > 0 { 1.0 } else { 0.0 }).collect();
        let px = pixel_scores(&prob, &labels, 0.5).unwrap();
        prop_assert_eq!(px.pixel_accuracy, 1.0);
        prop_assert_eq!(px.mean_iou, 1.0);
        prop_assert_eq!(px.mean_dice, 1.0);
        let r = isbi_scores(&prob, &labels, 1, h, w, &IsbiOptions::default()).unwrap();
        let unthinned = r.unthinned.as_ref().unwrap();
        prop_assert_eq!(r.pixel_error.value, 0.0);
        // Every threshold in [0, 1) recovers the truth exactly, with or without thinning.
        for scores in [&r.thinned, unthinned] {
            for s in &scores.per_threshold {
                prop_assert_eq!(s.v_rand, 1.0);
            }
        }
        // V-Info is 1 too, except that Fiji scores a single truth segment 0 (H(S) = 0).
        let mask: Vec<bool> = labels.iter().map(|&l| l > 0).collect();
        if label_components(&mask, h, w).unwrap().count >= 2 {
            prop_assert!((r.thinned.v_info.value - 1.0).abs() < 1e-12);
            prop_assert!((unthinned.v_info.value - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn scores_lie_in_the_unit_interval((h, w, labels, prob) in section(), t in 0.0f64..1.0) {
        prop_assume!(labels.iter().any(|&l| l > 0));
        let px = pixel_scores(&prob, &labels, t).unwrap();
        for x in px.iou_per_class.iter().chain(&px.dice_per_class) {
            prop_assert!(in_unit(*x));
        }
        prop_assert!(in_unit(px.pixel_accuracy) && in_unit(px.mean_iou));
        let r = isbi_scores(&prob, &labels, 1, h, w, &IsbiOptions::default()).unwrap();
        prop_assert!(in_unit(r.pixel_error.value));
        for scores in [&r.thinned, r.unthinned.as_ref().unwrap()] {
            for s in &scores.per_threshold {
                prop_assert!(s.v_rand > 0.0 && s.v_rand <= 1.0, "v_rand {}", s.v_rand);
                prop_assert!(in_unit(s.v_info), "v_info {}", s.v_info);
            }
        }
    }

    #[test]
    fn iou_and_dice_are_symmetric(
        (a, b) in (1usize..60).prop_flat_map(|n| (
            prop::collection::vec(0u8..3, n),
            prop::collection::vec(0u8..3, n),
        ))
    ) {
        let ab = ConfusionMatrix::from_class_maps(&a, &b, 3, None).unwrap().scores();
        let ba = ConfusionMatrix::from_class_maps(&b, &a, 3, None).unwrap().scores();
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn thinning_keeps_cells_apart_and_adds_no_region((h, w, labels, _) in section()) {
        let mask: Vec<bool> = labels.iter().map(|&l| l > 0).collect();
        prop_assume!(mask.iter().any(|&m| m));
        let cells = label_components(&mask, h, w).unwrap();
        let regions = thin_borders(&mask, h, w).unwrap();
        // One region per cell component, and no region without a cell.
        let mut region_of = vec![0u32; cells.count as usize + 1];
        for i in 0..mask.len() {
            if mask[i] {
                let c = cells.labels[i] as usize;
                prop_assert!(regions[i] > 0);
                if region_of[c] == 0 {
                    region_of[c] = regions[i];
                }
                prop_assert_eq!(region_of[c], regions[i]);
            }
        }
        let mut distinct = region_of[1..].to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        prop_assert_eq!(distinct.len(), cells.count as usize);
        for &r in &regions {
            prop_assert!(r == 0 || distinct.binary_search(&r).is_ok());
        }
    }
}
