//! `unet weights`, `unet score` and `unet augment` end to end on small synthetic stacks.

use std::path::Path;
use std::process::{Command, Output};

use unet_data::{read_stack, read_u8_stack, write_stack, AnyStack, Stack};

fn unet(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unet"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

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
    ok(&unet(
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
    ok(&out);
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
    ok(&unet(
        &["weights", "--labels", "labels.tif", "--out", "w.tif"],
        dir.path(),
    ));
    ok(&unet(
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
    ok(&out);
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
    ok(&out);
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
    ok(&out);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["device"], "cpu");
    assert_eq!(line["mode"], "forward");
    assert_eq!(line["all_ms"].as_array().unwrap().len(), 2);
    assert!(line["median_ms"].as_f64().unwrap() > 0.0);

    if cfg!(not(feature = "cuda")) {
        let out = unet(&[&args[..], &["--device", "cuda"]].concat(), dir.path());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--device cuda: no CUDA device"), "{err}");
    }
}
