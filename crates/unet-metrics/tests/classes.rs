//! Properties of the `K`-class scores against a naive reference written out with count loops,
//! and the two-class case against the binary scores.

use proptest::prelude::*;
use unet_metrics::{
    argmax_classes, class_pixel_scores, instance_contingency, label_components, pixel_scores,
    section_scores, ConfusionMatrix, Contingency, Error,
};

/// The reference's per-class scores: `(pixel accuracy, accuracy, IoU, Dice)` per class.
fn naive_scores(
    predicted: &[u16],
    truth: &[u16],
    k: usize,
    ignore: Option<u16>,
) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut counted = 0u64;
    let mut correct = 0u64;
    let (mut accuracy, mut iou, mut dice) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..predicted.len() {
        if Some(truth[i]) != ignore {
            counted += 1;
            if predicted[i] == truth[i] {
                correct += 1;
            }
        }
    }
    for c in 0..k {
        let c = c as u16;
        let (mut tp, mut in_truth, mut in_prediction) = (0u64, 0u64, 0u64);
        for i in 0..predicted.len() {
            if Some(truth[i]) == ignore {
                continue;
            }
            if truth[i] == c {
                in_truth += 1;
            }
            if predicted[i] == c {
                in_prediction += 1;
            }
            if truth[i] == c && predicted[i] == c {
                tp += 1;
            }
        }
        let absent = in_truth == 0 && in_prediction == 0;
        accuracy.push(if absent {
            1.0
        } else if in_truth == 0 {
            0.0
        } else {
            tp as f64 / in_truth as f64
        });
        iou.push(if absent {
            1.0
        } else {
            tp as f64 / (in_truth + in_prediction - tp) as f64
        });
        dice.push(if absent {
            1.0
        } else {
            2.0 * tp as f64 / (in_truth + in_prediction) as f64
        });
    }
    let pixel_accuracy = if counted == 0 {
        1.0
    } else {
        correct as f64 / counted as f64
    };
    (pixel_accuracy, accuracy, iou, dice)
}

/// The reference's argmax: the first class of maximal score per pixel.
fn naive_argmax(probs: &[f32], k: usize) -> Vec<u16> {
    let pixels = probs.len() / k;
    (0..pixels)
        .map(|i| {
            let mut best = 0;
            for c in 1..k {
                if probs[c * pixels + i] > probs[best * pixels + i] {
                    best = c;
                }
            }
            best as u16
        })
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// `(K, ignore, predicted, truth, class-major probabilities, height, width)`: truth values in
/// `0..K` or the ignore value (a large `u16` or one of the classes), predicted values in
/// `0..K`, probabilities quantised so that ties happen.
#[allow(clippy::type_complexity)]
fn case() -> impl Strategy<
    Value = (
        usize,
        Option<u16>,
        Vec<u16>,
        Vec<u16>,
        Vec<f32>,
        usize,
        usize,
    ),
> {
    (2usize..6, 1usize..10, 1usize..10).prop_flat_map(|(k, h, w)| {
        let n = h * w;
        let ignore = prop_oneof![
            Just(None),
            Just(Some(65535u16)),
            Just(Some(300u16)),
            (0..k as u16).prop_map(Some),
        ];
        (Just(k), ignore).prop_flat_map(move |(k, ignore)| {
            let truth_value = match ignore {
                Some(v) => prop_oneof![4 => 0..k as u16, 1 => Just(v)].boxed(),
                None => (0..k as u16).boxed(),
            };
            (
                Just(k),
                Just(ignore),
                prop::collection::vec(0..k as u16, n),
                prop::collection::vec(truth_value, n),
                prop::collection::vec((0u8..=4).prop_map(|q| f32::from(q) / 4.0), k * n),
                Just(h),
                Just(w),
            )
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn class_scores_match_the_naive_reference(
        (k, ignore, predicted, truth, _, _, _) in case()
    ) {
        let s = class_pixel_scores(&predicted, &truth, k, ignore).unwrap();
        let (pixel_accuracy, accuracy, iou, dice) = naive_scores(&predicted, &truth, k, ignore);
        prop_assert_eq!(s.pixel_accuracy, pixel_accuracy);
        prop_assert_eq!(&s.accuracy_per_class, &accuracy);
        prop_assert_eq!(&s.iou_per_class, &iou);
        prop_assert_eq!(&s.dice_per_class, &dice);
        prop_assert!(close(s.mean_foreground_accuracy, mean(&accuracy[1..])));
        prop_assert!(close(s.mean_foreground_iou, mean(&iou[1..])));
        prop_assert!(close(s.mean_foreground_dice, mean(&dice[1..])));
        // IoU and Dice are symmetric in truth and prediction when nothing is ignored.
        if ignore.is_none() {
            let swapped = class_pixel_scores(&truth, &predicted, k, None).unwrap();
            prop_assert_eq!(swapped.iou_per_class, s.iou_per_class);
            prop_assert_eq!(swapped.dice_per_class, s.dice_per_class);
        }
    }

    #[test]
    fn u8_and_u16_maps_agree((k, ignore, predicted, truth, _, _, _) in case()) {
        // Only where the ignore value fits a u8.
        prop_assume!(ignore.is_none_or(|v| v < 256));
        let p8: Vec<u8> = predicted.iter().map(|&v| v as u8).collect();
        let t8: Vec<u8> = truth.iter().map(|&v| v as u8).collect();
        let a = ConfusionMatrix::from_class_maps(&p8, &t8, k, ignore.map(|v| v as u8)).unwrap();
        let b = ConfusionMatrix::from_class_maps(&predicted, &truth, k, ignore).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn argmax_matches_the_naive_reference((k, ignore, _, truth, probs, _, _) in case()) {
        let classes = argmax_classes(&probs, k).unwrap();
        prop_assert_eq!(&classes, &naive_argmax(&probs, k));
        let from_probs = ConfusionMatrix::from_class_probabilities(&probs, &truth, k, ignore)
            .unwrap();
        let from_maps = ConfusionMatrix::from_class_maps(&classes, &truth, k, ignore).unwrap();
        prop_assert_eq!(from_probs, from_maps);
    }

    #[test]
    fn instance_scores_ignore_like_background(
        (k, ignore, predicted, truth, _, h, w) in case(),
        class in 0usize..6,
    ) {
        prop_assume!(class < k);
        let in_truth = |t: u16| Some(t) != ignore && usize::from(t) == class;
        let result = instance_contingency(&predicted, &truth, h, w, k, class, ignore);
        if !truth.iter().any(|&t| in_truth(t)) {
            prop_assert!(
                matches!(result, Err(Error::NoTruthInstances { class: c }) if c == class),
                "expected NoTruthInstances",
            );
            return Ok(());
        }
        // The reference: components of the two masks, counted by Contingency.
        let t = label_components(&truth.iter().map(|&t| in_truth(t)).collect::<Vec<_>>(), h, w)
            .unwrap();
        let p = label_components(
            &predicted.iter().map(|&p| usize::from(p) == class).collect::<Vec<_>>(),
            h,
            w,
        )
        .unwrap();
        let reference = Contingency::new(&t.labels, &p.labels).unwrap();
        let c = result.unwrap();
        prop_assert_eq!(c, reference);
        prop_assert!(c.v_rand() > 0.0 && c.v_rand() <= 1.0);
        prop_assert!((0.0..=1.0).contains(&c.v_info()));
    }

    /// With two classes, probabilities `[1 - p, p]` give today's binary pixel scores (cell where
    /// `p > 0.5`) and, with instance class 1, today's unthinned V-Rand and V-Info.
    #[test]
    fn two_classes_are_the_binary_scores(
        (h, w) in (1usize..12, 1usize..12),
        seed in any::<u64>(),
    ) {
        let n = h * w;
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let labels: Vec<u8> = (0..n).map(|_| if next() % 3 == 0 { 0 } else { 255 }).collect();
        // Probabilities with exact halves among them, to test the tie rule.
        let prob: Vec<f32> = (0..n)
            .map(|_| match next() % 4 {
                0 => 0.5,
                _ => (next() % 1001) as f32 / 1000.0,
            })
            .collect();
        let truth: Vec<u8> = labels.iter().map(|&l| u8::from(l > 0)).collect();
        let planes: Vec<f32> = prob.iter().map(|p| 1.0 - p).chain(prob.iter().copied()).collect();

        let binary = ConfusionMatrix::from_probabilities(&prob, &labels, 0.5).unwrap();
        let classes = ConfusionMatrix::from_class_probabilities(&planes, &truth, 2, None).unwrap();
        prop_assert_eq!(&classes, &binary);
        let b = pixel_scores(&prob, &labels, 0.5).unwrap();
        let c = classes.class_scores();
        prop_assert_eq!(c.pixel_accuracy, b.pixel_accuracy);
        prop_assert_eq!(&c.iou_per_class, &b.iou_per_class);
        prop_assert_eq!(&c.dice_per_class, &b.dice_per_class);
        prop_assert_eq!(c.mean_foreground_iou, b.iou_per_class[1]);
        prop_assert_eq!(binary.scores(), b);

        let predicted = argmax_classes(&planes, 2).unwrap();
        match section_scores(&prob, &labels, h, w, 0.5, false) {
            Ok((v_rand, v_info)) => {
                let contingency = instance_contingency(&predicted, &truth, h, w, 2, 1, None)
                    .unwrap();
                prop_assert_eq!(contingency.v_rand(), v_rand);
                prop_assert!((contingency.v_info() - v_info).abs() < 1e-12);
            }
            Err(Error::NoTruthForeground { .. }) => {
                let result = instance_contingency(&predicted, &truth, h, w, 2, 1, None);
                prop_assert!(
                    matches!(result, Err(Error::NoTruthInstances { class: 1 })),
                    "expected NoTruthInstances",
                );
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
