//! `unet weights`, `unet score` and `unet augment` end to end on small synthetic stacks.

mod common;

use common::{ok_stdout, unet};

use std::path::Path;

use unet_data::{read_stack, read_u8_stack, write_stack, AnyStack, Stack};

/// Two pages of 32x40: two cell rectangles 4 px apart on a membrane background.
fn two_cells() -> Stack<u8> {
    let (h, w) = (32, 40);
    let mut data = vec![0u8; 2 * h * w];
    for p in 0..2 {
        for y in 4..28 {
            for x in 2..18 {
                data[p * h * w + y * w + x] = 255;
            }
            for x in 22..38 {
                data[p * h * w + y * w + x] = 255;
            }
        }
    }
    Stack::new(2, h, w, data).unwrap()
}

#[test]
fn weights_writes_float_maps_with_the_border_term() {
    let dir = tempfile::tempdir().unwrap();
    write_stack(dir.path().join("labels.tif"), &two_cells()).unwrap();
    ok_stdout(&unet(
        &["weights", "--labels", "labels.tif", "--out", "w.tif"],
        dir.path(),
    ));
    let AnyStack::F32(w) = read_stack(dir.path().join("w.tif")).unwrap() else {
        panic!("weights must be 32-bit float")
    };
    assert_eq!((w.pages(), w.height(), w.width()), (2, 32, 40));
    // Between the cells (gap of 4 px, d1 + d2 = 4 at its middle... at most 5) the border term
    // w0 exp(-(d1+d2)^2 / 50) is large; far from both cells it is small.
    let gap = w.page(0)[16 * 40 + 20];
    let corner = w.page(0)[0];
    assert!(gap > corner + 5.0, "gap {gap}, corner {corner}");
}

#[test]
fn weights_rejects_bad_parameters_and_bad_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_stack(dir.path().join("labels.tif"), &two_cells()).unwrap();
    let out = unet(
        &[
            "weights",
            "--labels",
            "labels.tif",
            "--out",
            "w.tif",
            "--sigma",
            "-1",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sigma"));
    let mut bad = two_cells();
    bad.as_mut_slice()[5] = 7;
    write_stack(dir.path().join("bad.tif"), &bad).unwrap();
    let out = unet(
        &["weights", "--labels", "bad.tif", "--out", "w.tif"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.tif page 0: value 7 is not a label"),
        "{err}"
    );
    assert!(!dir.path().join("w.tif").exists());
}

#[test]
fn score_of_a_perfect_prediction_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let labels = two_cells();
    write_stack(dir.path().join("labels.tif"), &labels).unwrap();
    write_stack(
        dir.path().join("p.tif"),
        &labels.map(|v| f32::from(v) / 255.0),
    )
    .unwrap();
    let out = unet(
        &[
            "score",
            "--pred",
            "p.tif",
            "--labels",
            "labels.tif",
            "--json",
            "s.json",
        ],
        dir.path(),
    );
    ok_stdout(&out);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
    for key in ["pixel_accuracy", "mean_iou", "dice", "v_rand", "v_info"] {
        assert_eq!(json[key].as_f64(), Some(1.0), "{key}: {json}");
    }
    for key in [
        "pixel_error",
        "iou_per_class",
        "isbi_pixel_error",
        "v_rand_threshold",
        "v_info_threshold",
        "v_rand_unthinned",
        "v_info_unthinned",
        "sections",
    ] {
        assert!(!json[key].is_null(), "{key} missing: {json}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("V-Rand (thinned)"));
}

#[test]
fn score_names_the_file_with_a_nan() {
    let dir = tempfile::tempdir().unwrap();
    let labels = two_cells();
    write_stack(dir.path().join("labels.tif"), &labels).unwrap();
    let mut p = labels.map(|v| f32::from(v) / 255.0);
    p.page_mut(1)[3 * 40 + 7] = f32::NAN;
    write_stack(dir.path().join("p.tif"), &p).unwrap();
    let out = unet(
        &["score", "--pred", "p.tif", "--labels", "labels.tif"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p.tif page 1: NaN at row 3, column 7"),
        "{err}"
    );
    let small = Stack::new(1, 32, 40, vec![0.5f32; 32 * 40]).unwrap();
    write_stack(dir.path().join("p1.tif"), &small).unwrap();
    let out = unet(
        &["score", "--pred", "p1.tif", "--labels", "labels.tif"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 image pages but 2 label pages"), "{err}");
}

#[test]
fn augment_writes_aligned_binary_samples() {
    let dir = tempfile::tempdir().unwrap();
    let labels = two_cells();
    write_stack(dir.path().join("labels.tif"), &labels).unwrap();
    write_stack(dir.path().join("image.tif"), &labels.map(|v| v / 2 + 40)).unwrap();
    ok_stdout(&unet(
        &["weights", "--labels", "labels.tif", "--out", "w.tif"],
        dir.path(),
    ));
    ok_stdout(&unet(
        &[
            "augment",
            "--image",
            "image.tif",
            "--labels",
            "labels.tif",
            "--weights",
            "w.tif",
            "--page",
            "1",
            "--n",
            "3",
            "--seed",
            "7",
            "--out",
            "aug",
        ],
        dir.path(),
    ));
    let l = read_u8_stack(dir.path().join("aug/labels.tif")).unwrap();
    assert_eq!(l.pages(), 3);
    assert!(l.as_slice().iter().all(|&v| v == 0 || v == 255));
    let AnyStack::F32(img) = read_stack(dir.path().join("aug/image.tif")).unwrap() else {
        panic!("float images")
    };
    assert_eq!(img.pages(), 3);
    assert!(dir.path().join("aug/weights.tif").exists());
    let out = unet(
        &[
            "augment",
            "--image",
            "image.tif",
            "--labels",
            "labels.tif",
            "--page",
            "2",
            "--out",
            "x",
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--page 2"));
}

#[test]
fn model_prints_the_paper_net() {
    let dir = tempfile::tempdir().unwrap();
    let out = unet(&["model", "--preset", "paper"], dir.path());
    ok_stdout(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("31,030,658") || text.contains("31030658"),
        "{text}"
    );
    assert!(text.contains("388"), "{text}");
    let out = unet(
        &["model", "--preset", "paper", "--input", "573"],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("572"), "{err}");
    let out = unet(&["model", "--preset", "huge"], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("paper, reference, small"));
    // PyTorch's count of the same net (tests/fixtures/resnet.json in unet-model).
    let out = unet(
        &["model", "--preset", "resnet34", "--input", "256"],
        dir.path(),
    );
    ok_stdout(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("24344178 trainable parameters"), "{text}");
    assert!(
        text.contains("6 basic blocks, the first stride 2"),
        "{text}"
    );
}

#[test]
fn bench_prints_one_json_line_and_refuses_a_missing_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench", "forward", "--preset", "small", "--size", "32", "--steps", "2", "--warmup", "0",
    ];
    let out = unet(&args, dir.path());
    ok_stdout(&out);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["device"], "cpu");
    assert_eq!(line["mode"], "forward");
    assert_eq!(line["all_ms"].as_array().unwrap().len(), 2);
    assert!(line["median_ms"].as_f64().unwrap() > 0.0);
    // The line names the CPU and the kernel path of each product.
    assert!(line["cpu"]["vendor"].is_string(), "{line}");
    assert!(line["cpu"]["family"].is_u64(), "{line}");
    assert!(line["cpu"]["model_number"].is_u64(), "{line}");
    for product in ["forward", "input_grad", "weight_grad"] {
        assert!(line["cpu_kernels"][product].is_string(), "{line}");
    }
    // ... and the convolution algorithm: the rule, with its thresholds.
    assert_eq!(line["cpu_conv"]["algorithm"], "rule", "{line}");
    assert!(line["cpu_conv"]["winograd_min_channels"]["weight_grad"].is_u64());
    // `var=value` forces a choice: its JSON line and, where it warns, what it says on stderr.
    let run_with = |var: &str, value: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_unet"))
            .args(args)
            .env(var, value)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{var}={value}: {out:?}");
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (line, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // UNET_CPU_KERNELS forces one path; a value it cannot honour is a warning, not a failure.
    let (forced, _) = run_with("UNET_CPU_KERNELS", "generic");
    assert_eq!(forced["cpu_kernels"]["weight_grad"], "generic", "{forced}");
    let (fallback, err) = run_with("UNET_CPU_KERNELS", "sse9");
    assert!(err.contains("UNET_CPU_KERNELS=\"sse9\""), "{err}");
    assert_eq!(fallback["cpu_kernels"], line["cpu_kernels"]);
    // UNET_CPU_CONV likewise forces one convolution algorithm, or warns and keeps the rule.
    let (forced, _) = run_with("UNET_CPU_CONV", "im2col");
    assert_eq!(forced["cpu_conv"]["algorithm"], "im2col", "{forced}");
    let (fallback, err) = run_with("UNET_CPU_CONV", "fft");
    assert!(err.contains("UNET_CPU_CONV=\"fft\""), "{err}");
    assert_eq!(fallback["cpu_conv"]["algorithm"], "rule", "{fallback}");

    // `bench kernels` times each product on every SIMD path this CPU has, next to the choice.
    let out = unet(
        &["bench", "kernels", "--size", "32", "--rounds", "1"],
        dir.path(),
    );
    ok_stdout(&out);
    let kernels: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for product in ["forward", "input_grad", "weight_grad"] {
        let entry = &kernels["products"][product];
        let fastest = entry["fastest"].as_str().unwrap();
        assert!(
            entry[format!("{fastest}_ms")].as_f64().unwrap() > 0.0,
            "{kernels}"
        );
        assert_eq!(entry["chosen"], line["cpu_kernels"][product], "{kernels}");
        // Per level: the small net's five widths at halving sides, each with its fastest path.
        let levels = entry["levels"].as_array().unwrap();
        let shapes: Vec<(u64, u64)> = levels
            .iter()
            .map(|l| (l["channels"].as_u64().unwrap(), l["side"].as_u64().unwrap()))
            .collect();
        assert_eq!(shapes, [(16, 32), (32, 16), (64, 8), (128, 4), (256, 2)]);
        for level in levels {
            // Each level's fastest variant and the rule's (Winograd from 32 channels forward,
            // 64 for the weight gradient) were both timed.
            for key in ["fastest", "chosen"] {
                let variant = level[key].as_str().unwrap();
                assert!(
                    level[format!("{variant}_ms")].as_f64().unwrap() > 0.0,
                    "{level}"
                );
            }
            let wide = level["channels"].as_u64().unwrap() >= 64;
            let winograd = level["chosen"].as_str().unwrap().ends_with("_winograd");
            assert_eq!(
                winograd,
                wide || product != "weight_grad" && level["channels"] == 32
            );
        }
        assert!(entry["chosen_ms"].as_f64().unwrap() > 0.0, "{kernels}");
    }

    if cfg!(not(feature = "cuda")) {
        let out = unet(&[&args[..], &["--device", "cuda"]].concat(), dir.path());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--device cuda: no CUDA device"), "{err}");
    }
}

/// Two 8 x 10 pages of classes 0, 1, 2 in column bands; page 1's first row holds the ignore
/// value 9. The prediction is the truth (0 where ignored) but for three pixels: page 0 (1, 5)
/// class 1 -> 2, page 1 (3, 0) and (3, 1) class 0 -> 1.
fn three_classes() -> (Stack<u8>, Stack<u8>) {
    let (h, w) = (8, 10);
    let band = |x: usize| match x {
        0..=2 => 0u8,
        3..=6 => 1,
        _ => 2,
    };
    let mut truth = vec![0u8; 2 * h * w];
    for p in 0..2 {
        for y in 0..h {
            for x in 0..w {
                truth[(p * h + y) * w + x] = if p == 1 && y == 0 { 9 } else { band(x) };
            }
        }
    }
    let mut predicted: Vec<u8> = truth.iter().map(|&t| if t == 9 { 0 } else { t }).collect();
    predicted[w + 5] = 2;
    predicted[(h + 3) * w] = 1;
    predicted[(h + 3) * w + 1] = 1;
    (
        Stack::new(2, h, w, truth).unwrap(),
        Stack::new(2, h, w, predicted).unwrap(),
    )
}

fn score_json(d: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["score", "--labels", "labels.tif", "--json", "s.json"];
    all.extend(args);
    ok_stdout(&unet(&all, d));
    serde_json::from_slice(&std::fs::read(d.join("s.json")).unwrap()).unwrap()
}

#[test]
fn score_with_classes_counts_per_class_from_every_form_of_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (truth, predicted) = three_classes();
    write_stack(d.join("labels.tif"), &truth).unwrap();
    write_stack(d.join("classes.tif"), &predicted).unwrap();
    write_stack(d.join("classes16.tif"), &predicted.map(u16::from)).unwrap();
    // Per-class probabilities, an ImageJ hyperstack of 3 channels: 0.8 on the predicted class.
    let plane = 8 * 10;
    let mut probs = vec![0.1f32; 2 * 3 * plane];
    for (i, &c) in predicted.as_slice().iter().enumerate() {
        let (s, pixel) = (i / plane, i % plane);
        probs[(s * 3 + usize::from(c)) * plane + pixel] = 0.8;
    }
    let stack = unet_data::ChannelStack::new(3, Stack::new(6, 8, 10, probs).unwrap()).unwrap();
    unet_data::write_channels(d.join("probs.tif"), &stack).unwrap();

    let args = ["--classes", "3", "--ignore-label", "9"];
    let want = score_json(d, &[&["--pred", "classes.tif"][..], &args].concat());
    let close = |v: &serde_json::Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-12;
    assert!(close(&want["pixel_accuracy"], 147.0 / 150.0), "{want}");
    for (key, values) in [
        ("accuracy_per_class", [43.0 / 45.0, 59.0 / 60.0, 1.0]),
        ("iou_per_class", [43.0 / 45.0, 59.0 / 62.0, 45.0 / 46.0]),
        ("dice_per_class", [86.0 / 88.0, 118.0 / 121.0, 90.0 / 91.0]),
    ] {
        for (c, &x) in values.iter().enumerate() {
            assert!(close(&want[key][c], x), "{key}[{c}]: {want}");
        }
    }
    assert!(close(
        &want["mean_foreground_iou"],
        (59.0 / 62.0 + 45.0 / 46.0) / 2.0
    ));
    assert_eq!(
        want["confusion"],
        serde_json::json!([[43, 2, 0], [0, 59, 1], [0, 0, 45]])
    );
    assert_eq!(want["ignore_label"], 9);
    for pred in ["classes16.tif", "probs.tif"] {
        let got = score_json(d, &[&["--pred", pred][..], &args].concat());
        assert_eq!(got, want, "{pred}");
    }

    // Instances of class 2: one band per page, found whole.
    let got = score_json(
        d,
        &[
            &["--pred", "classes.tif", "--instance-class", "2"][..],
            &args,
        ]
        .concat(),
    );
    assert_eq!(got["v_rand"], 1.0, "{got}");
    assert_eq!(got["instance_sections"], 2);
    let out = unet(
        &["score", "--pred", "classes.tif", "--labels", "labels.tif"]
            .iter()
            .chain(&args)
            .copied()
            .collect::<Vec<_>>(),
        d,
    );
    ok_stdout(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fg mean"));
}

#[test]
fn score_with_two_classes_agrees_with_the_binary_scores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let labels = two_cells();
    write_stack(d.join("labels.tif"), &labels).unwrap();
    let p = Stack::new(
        2,
        32,
        40,
        (0..2 * 32 * 40)
            // The same on both pages: `unet score` averages Dice over pages, --classes pools.
            .map(|i| (((i % (32 * 40)) * 7919) % 1000) as f32 / 1000.0)
            .collect(),
    )
    .unwrap();
    write_stack(d.join("p.tif"), &p).unwrap();
    let binary = score_json(d, &["--pred", "p.tif"]);
    let classes = score_json(d, &["--pred", "p.tif", "--classes", "2"]);
    assert_eq!(classes["pixel_accuracy"], binary["pixel_accuracy"]);
    assert_eq!(classes["dice_per_class"][1], binary["dice"]);
}

#[test]
fn score_with_classes_refuses_bad_labels_and_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (truth, predicted) = three_classes();
    write_stack(d.join("labels.tif"), &truth).unwrap();
    write_stack(d.join("classes.tif"), &predicted).unwrap();
    let fails = |args: &[&str], words: &[&str]| {
        let out = unet(args, d);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in words {
            assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
        }
    };
    // 9 is a label value, not a class, when it is not ignored.
    fails(
        &[
            "score",
            "--pred",
            "classes.tif",
            "--labels",
            "labels.tif",
            "--classes",
            "3",
        ],
        &["labels.tif", "page 1", "value 9"],
    );
    // Two channels for three classes.
    let two =
        unet_data::ChannelStack::new(2, Stack::new(4, 8, 10, vec![0.5f32; 320]).unwrap()).unwrap();
    unet_data::write_channels(d.join("two.tif"), &two).unwrap();
    let k3 = ["--classes", "3", "--ignore-label", "9"];
    fails(
        &[
            &["score", "--pred", "two.tif", "--labels", "labels.tif"][..],
            &k3,
        ]
        .concat(),
        &[
            "two.tif",
            "2 channel(s)",
            "3 channels of per-class probabilities",
        ],
    );
    // A predicted class out of range, and a prediction of another size.
    write_stack(d.join("seven.tif"), &predicted.map(|v| v.max(7))).unwrap();
    fails(
        &[
            &["score", "--pred", "seven.tif", "--labels", "labels.tif"][..],
            &k3,
        ]
        .concat(),
        &["seven.tif", "7"],
    );
    let one = Stack::new(1, 8, 10, vec![0u8; 80]).unwrap();
    write_stack(d.join("one.tif"), &one).unwrap();
    fails(
        &[
            &["score", "--pred", "one.tif", "--labels", "labels.tif"][..],
            &k3,
        ]
        .concat(),
        &["one.tif", "labels.tif"],
    );
    // The instance class needs --classes.
    fails(
        &[
            "score",
            "--pred",
            "classes.tif",
            "--labels",
            "labels.tif",
            "--instance-class",
            "1",
        ],
        &["--classes"],
    );
}
