//! `unet predict` end to end with a tiny random checkpoint in a temporary directory.

mod common;

use common::{fails, ok_stderr, ok_stdout, unet};

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use unet_data::{read_png_grey, read_stack, write_png_grey, write_stack, AnyStack, Stack};
use unet_model::{
    overlap_tile_predict, save_checkpoint, Normalisation, Padding, TileOptions, UNet, UNetConfig,
};

const MEAN: f64 = 0.45;
const STD: f64 = 0.2;

/// A depth-2, width-4 valid-padding net, saved as `dir/m.safetensors`, with or without the
/// training normalisation in its sidecar.
fn tiny_model(dir: &Path, with_normalisation: bool) -> UNet {
    let cfg = UNetConfig {
        depth: 2,
        base_width: 4,
        padding: Padding::Valid,
        ..UNetConfig::small()
    };
    let model = UNet::seeded(&cfg, 17, &Device::Cpu).unwrap();
    let normalisation = with_normalisation.then(|| Normalisation::dataset(MEAN, STD).unwrap());
    save_checkpoint(
        dir.join("m.safetensors"),
        &model,
        1,
        normalisation,
        serde_json::json!({}),
        None,
    )
    .unwrap();
    model
}

/// Two 8-bit pages of 20x27 with some structure.
fn pages() -> Stack<u8> {
    let (h, w) = (20, 27);
    let data = (0..2 * h * w)
        .map(|i| ((i * 37 + (i / w) * 11) % 256) as u8)
        .collect();
    Stack::new(2, h, w, data).unwrap()
}

fn f32_stack(path: &Path) -> Stack<f32> {
    match read_stack(path).unwrap() {
        AnyStack::F32(s) => s,
        other => panic!("expected 32-bit float pages, got {}", other.pixel_type()),
    }
}

#[test]
fn predicts_a_stack_with_the_training_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), true);
    let input = pages();
    write_stack(dir.path().join("in.tif"), &input).unwrap();
    let out = unet(
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "in.tif",
            "--out",
            "p.tif",
            "--binary",
            "b.tif",
            "--tile",
            "8",
            "--batch",
            "3",
        ],
        dir.path(),
    );
    let stderr = ok_stderr(&out);
    assert!(!stderr.contains("warning"), "{stderr}");
    // The summary says what computed: the CPU, the kernel paths chosen for it and the
    // convolution algorithm.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(" on the CPU (") && stdout.contains(" kernels, Winograd from 32 channels"),
        "{stdout}"
    );
    let prob = f32_stack(&dir.path().join("p.tif"));
    assert_eq!((prob.pages(), prob.height(), prob.width()), (2, 20, 27));
    // The library on the same normalised page gives the same numbers.
    for p in 0..2 {
        let page: Vec<f32> = input
            .page(p)
            .iter()
            .map(|&v| ((f64::from(v) / 255.0 - MEAN) / STD) as f32)
            .collect();
        let want = overlap_tile_predict(&model, &page, 20, 27, &TileOptions::default()).unwrap();
        let diff = prob
            .page(p)
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "page {p}: {diff}");
    }
    let AnyStack::U8(binary) = read_stack(dir.path().join("b.tif")).unwrap() else {
        panic!("the binary map is 8-bit")
    };
    for (b, p) in binary.as_slice().iter().zip(prob.as_slice()) {
        assert_eq!(*b, if *p > 0.5 { 255 } else { 0 });
    }
    assert!(binary.as_slice().contains(&255) && binary.as_slice().contains(&0));
}

#[test]
fn pngs_directories_tta_and_the_fallback_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), false);
    let input = pages();
    std::fs::create_dir(dir.path().join("sections")).unwrap();
    for p in 0..2 {
        let name = format!("sections/s{p}.png");
        write_png_grey(dir.path().join(name), 20, 27, input.page(p)).unwrap();
    }
    // A stray non-image file in the directory is skipped by its name.
    std::fs::write(dir.path().join("sections/notes.txt"), "not an image").unwrap();
    let stderr = ok_stderr(&unet(
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "sections",
            "--out",
            "p.tif",
            "--tta",
            "--binary",
            "b.png",
            "--threshold",
            "0.4",
        ],
        dir.path(),
    ));
    assert!(
        stderr.contains("warning") && stderr.contains("standardising each page"),
        "{stderr}"
    );
    let prob = f32_stack(&dir.path().join("p.tif"));
    assert_eq!((prob.pages(), prob.height(), prob.width()), (2, 20, 27));
    for p in 0..2 {
        let (h, w, png) = read_png_grey(dir.path().join(format!("b-{p:03}.png"))).unwrap();
        assert_eq!((h, w), (20, 27));
        for (b, q) in png.iter().zip(prob.page(p)) {
            assert_eq!(*b, if *q > 0.4 { 255 } else { 0 });
        }
    }
    // One PNG in, one PNG out.
    ok_stderr(&unet(
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "sections/s1.png",
            "--out",
            "one.tif",
            "--binary",
            "one.png",
        ],
        dir.path(),
    ));
    assert_eq!(f32_stack(&dir.path().join("one.tif")).pages(), 1);
    assert_eq!(read_png_grey(dir.path().join("one.png")).unwrap().0, 20);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), true);
    let d = dir.path();
    let predict = |input: &str| {
        unet(
            &[
                "predict",
                "--model",
                "m.safetensors",
                "--input",
                input,
                "--out",
                "p.tif",
            ],
            d,
        )
    };

    std::fs::write(d.join("notes.tif"), "hello, not an image").unwrap();
    let err = fails(&predict("notes.tif"));
    assert!(err.contains("notes.tif: not an image"), "{err}");

    // 32-bit integer pixels: not a type we read.
    {
        let file = std::fs::File::create(d.join("int.tif")).unwrap();
        let mut enc = tiff::encoder::TiffEncoder::new(file).unwrap();
        enc.write_image::<tiff::encoder::colortype::Gray32>(3, 2, &[1u32; 6])
            .unwrap();
    }
    let err = fails(&predict("int.tif"));
    assert!(
        err.contains("int.tif") && err.contains("nsupported"),
        "{err}"
    );

    // 16-bit PNG: the PNG reader takes 8-bit grey only.
    {
        let file = std::fs::File::create(d.join("deep.png")).unwrap();
        let mut enc = png::Encoder::new(file, 3, 2);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        enc.write_header()
            .unwrap()
            .write_image_data(&[0u8; 12])
            .unwrap();
    }
    let err = fails(&predict("deep.png"));
    assert!(err.contains("deep.png"), "{err}");

    // RGB pages for a one-channel model.
    {
        let file = std::fs::File::create(d.join("rgb.tif")).unwrap();
        let mut enc = tiff::encoder::TiffEncoder::new(file).unwrap();
        enc.write_image::<tiff::encoder::colortype::RGB8>(3, 2, &[9u8; 18])
            .unwrap();
    }
    let err = fails(&predict("rgb.tif"));
    assert!(
        err.contains("3 channel(s) a section") && err.contains("takes 1 input channel"),
        "{err}"
    );

    std::fs::create_dir(d.join("empty")).unwrap();
    let err = fails(&predict("empty"));
    assert!(err.contains("no .tif, .tiff or .png image"), "{err}");

    // A sidecar whose config does not fit the weights.
    write_stack(d.join("in.tif"), &pages()).unwrap();
    let sidecar = d.join("m.json");
    let text = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(
        &sidecar,
        text.replace("\"base_width\": 4", "\"base_width\": 8"),
    )
    .unwrap();
    let err = fails(&predict("in.tif"));
    assert!(
        err.contains("loading m.safetensors") && err.contains("bytes its weights file holds"),
        "{err}"
    );
    // A smaller net than the weights: the tensors that do not fit are named.
    std::fs::write(&sidecar, text.replace("\"depth\": 2", "\"depth\": 1")).unwrap();
    let err = fails(&predict("in.tif"));
    assert!(
        err.contains("loading m.safetensors")
            && err.contains("unexpected tensor down1.conv0.weight"),
        "{err}"
    );

    assert!(!d.join("p.tif").exists());
}

#[test]
fn without_model_the_built_in_default_model_predicts_from_any_directory() {
    // A directory with no models/ in it or above it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_stack(d.join("in.tif"), &pages()).unwrap();
    let out = unet(&["predict", "--input", "in.tif", "--out", "p.tif"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/default.safetensors"
    );
    let args = ["predict", "--input", "in.tif", "--out", "q.tif", "--model"];
    let out = unet(&[&args[..], &[committed]].concat(), d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(d.join("p.tif")).unwrap(),
        std::fs::read(d.join("q.tif")).unwrap(),
        "the built-in model is models/default"
    );
    let out = unet(&["model", "--default"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("built-in default model") && text.contains("input normalisation: {\"mode\":"),
        "{text}"
    );
}

#[test]
fn calibrate_moves_every_prediction_by_the_fitted_logit_offset() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path(), true);
    let images = pages();
    let labels = Stack::new(
        2,
        images.height(),
        images.width(),
        images
            .as_slice()
            .iter()
            .map(|&v| if v > 90 { 255_u8 } else { 0 })
            .collect(),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    write_stack(dir.path().join("data/train-volume.tif"), &images).unwrap();
    write_stack(dir.path().join("data/train-labels.tif"), &labels).unwrap();
    write_stack(dir.path().join("in.tif"), &images).unwrap();
    let predict = |out: &str| {
        ok_stderr(&unet(
            &[
                "predict",
                "--model",
                "m.safetensors",
                "--input",
                "in.tif",
                "--out",
                out,
            ],
            dir.path(),
        ));
        f32_stack(&dir.path().join(out))
    };
    let before = predict("p0.tif");
    let calibrate = [
        "calibrate",
        "--checkpoint",
        "m.safetensors",
        "--sections",
        "0,1",
        "--data",
        "data",
    ];
    let out = unet(&calibrate, dir.path());
    ok_stderr(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("logit offset"));
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    let offset = sidecar["metrics"]["calibration"]["logit_offset"]
        .as_f64()
        .unwrap();
    assert_eq!(
        sidecar["metrics"]["calibration"]["sections"],
        serde_json::json!([0, 1])
    );
    let after = predict("p1.tif");
    assert!(offset != 0.0, "this net and these labels need an offset");
    let logit = |p: f32| (f64::from(p) / (1.0 - f64::from(p))).ln();
    let mut compared = 0;
    for (&b, &a) in before.as_slice().iter().zip(after.as_slice()) {
        // Away from saturation, where f32 probabilities still resolve the logit.
        if (0.001..0.999).contains(&b) && (0.001..0.999).contains(&a) {
            assert!((logit(a) - logit(b) - offset).abs() < 5e-3, "{b} -> {a}");
            compared += 1;
        }
    }
    assert!(
        compared > before.as_slice().len() / 3,
        "{compared} pixels compared"
    );
    assert!(fails(&unet(&calibrate, dir.path())).contains("already calibrated"));
}

#[test]
fn outputs_are_never_lost_or_left_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d, true);
    write_stack(d.join("in.tif"), &pages()).unwrap();
    let predict = |out: &str, extra: &[&str]| {
        let args = [
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "in.tif",
            "--out",
            out,
        ];
        unet(&[&args[..], extra].concat(), d)
    };
    ok_stderr(&predict("p.tif", &[]));
    let first = std::fs::read(d.join("p.tif")).unwrap();
    // An existing output is refused, and left as it was, unless --overwrite.
    std::fs::write(d.join("p.tif"), b"the user's own file").unwrap();
    let err = fails(&predict("p.tif", &[]));
    assert!(
        err.contains("p.tif exists") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.join("p.tif")).unwrap(),
        b"the user's own file"
    );
    ok_stderr(&predict("p.tif", &["--overwrite"]));
    assert_eq!(std::fs::read(d.join("p.tif")).unwrap(), first);
    // A directory that cannot be made is refused before any prediction.
    std::fs::write(d.join("a-file"), b"").unwrap();
    let err = fails(&predict("a-file/p.tif", &[]));
    assert!(err.contains("cannot write a-file/p.tif"), "{err}");
    // A killed prediction leaves nothing under the output's name.
    let big = Stack::new(100, 160, 160, vec![100u8; 100 * 160 * 160]).unwrap();
    write_stack(d.join("big.tif"), &big).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_unet"))
        .current_dir(d)
        .args([
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "big.tif",
            "--out",
            "k.tif",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the prediction ended before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!d.join("k.tif").exists());
}

#[test]
fn an_input_far_from_the_training_statistics_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d, true);
    write_stack(d.join("in.tif"), &pages()).unwrap();
    // The same sections at a fifth of their contrast.
    let faint = pages().map(|v| 100 + v / 5);
    write_stack(d.join("faint.tif"), &faint).unwrap();
    let predict = |input: &str, out: &str| {
        let args = [
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            input,
            "--out",
            out,
        ];
        ok_stderr(&unet(&args, d))
    };
    let stderr = predict("in.tif", "p.tif");
    assert!(!stderr.contains("far from the training"), "{stderr}");
    let stderr = predict("faint.tif", "q.tif");
    assert!(
        stderr.contains("faint.tif: grey mean") && stderr.contains("far from the training"),
        "{stderr}"
    );
}

#[test]
fn an_exported_package_predicts_as_its_checkpoint_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d, true);
    write_stack(d.join("in.tif"), &pages()).unwrap();
    // A 64x64 sample for the test tensors and the cover.
    let sample = Stack::new(1, 64, 64, (0..64 * 64).map(|i| (i % 251) as u8).collect()).unwrap();
    write_stack(d.join("sample.tif"), &sample).unwrap();
    ok_stderr(&unet(
        &[
            "export",
            "--model",
            "m.safetensors",
            "--sample",
            "sample.tif",
            "--out",
            "m.bioimageio.zip",
        ],
        d,
    ));
    // The package predicts exactly what its checkpoint predicts.
    ok_stderr(&unet(
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "in.tif",
            "--out",
            "a.tif",
        ],
        d,
    ));
    ok_stderr(&unet(
        &[
            "predict",
            "--model",
            "m.bioimageio.zip",
            "--input",
            "in.tif",
            "--out",
            "b.tif",
        ],
        d,
    ));
    assert_eq!(
        std::fs::read(d.join("a.tif")).unwrap(),
        std::fs::read(d.join("b.tif")).unwrap()
    );
    // The bare ONNX graph: a protobuf whose first field is the IR version (tag 1, varint).
    ok_stderr(&unet(
        &[
            "export",
            "--model",
            "m.safetensors",
            "--format",
            "onnx",
            "--out",
            "m.onnx",
        ],
        d,
    ));
    assert_eq!(std::fs::read(d.join("m.onnx")).unwrap()[0], 0x08);
    // An existing output is kept unless --overwrite.
    let err = fails(&unet(
        &[
            "export",
            "--model",
            "m.safetensors",
            "--format",
            "onnx",
            "--out",
            "m.onnx",
        ],
        d,
    ));
    assert!(err.contains("m.onnx exists"), "{err}");
    // A truncated package is refused, naming it.
    let bytes = std::fs::read(d.join("m.bioimageio.zip")).unwrap();
    std::fs::write(d.join("cut.bioimageio.zip"), &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&unet(
        &[
            "predict",
            "--model",
            "cut.bioimageio.zip",
            "--input",
            "in.tif",
            "--out",
            "c.tif",
        ],
        d,
    ));
    assert!(err.contains("cut.bioimageio.zip"), "{err}");
}

#[test]
fn a_three_class_model_writes_every_class_probability_or_the_most_probable_class() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = UNetConfig {
        depth: 2,
        base_width: 4,
        padding: Padding::Same,
        n_classes: 3,
        ..UNetConfig::small()
    };
    let model = UNet::seeded(&cfg, 5, &Device::Cpu).unwrap();
    let normalisation = Normalisation::dataset(MEAN, STD).unwrap();
    save_checkpoint(
        d.join("k3.safetensors"),
        &model,
        1,
        Some(normalisation.clone()),
        serde_json::json!({}),
        None,
    )
    .unwrap();
    let input = pages();
    write_stack(d.join("in.tif"), &input).unwrap();
    let tiling = ["--tile", "16", "--overlap", "4", "--tta"];
    let mut args = vec![
        "predict",
        "--model",
        "k3.safetensors",
        "--input",
        "in.tif",
        "--out",
        "p.tif",
    ];
    args.extend(tiling);
    ok_stderr(&unet(&args, d));
    let probs = unet_data::read_channels(d.join("p.tif")).unwrap();
    let (h, w) = (input.height(), input.width());
    assert_eq!(
        (
            probs.sections(),
            probs.channels(),
            probs.height(),
            probs.width()
        ),
        (2, 3, h, w)
    );
    let values = probs.to_unit_f32();
    let values = values.as_slice();
    let plane = h * w;
    // The library's numbers, and every pixel's probabilities sum to one.
    let opts = TileOptions {
        output_tile: 16,
        overlap: 4,
        tta: true,
        ..TileOptions::default()
    };
    for s in 0..2 {
        let mut page: Vec<f32> = input
            .page(s)
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect();
        normalisation.apply(&mut page, 1);
        let want = unet_model::overlap_tile_predict_probs(&model, &page, h, w, &opts).unwrap();
        assert_eq!(
            &values[s * 3 * plane..(s + 1) * 3 * plane],
            &want[..],
            "section {s}"
        );
        for i in 0..plane {
            let sum: f32 = (0..3).map(|c| want[c * plane + i]).sum();
            assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        }
    }
    // --argmax: the class-index image of those probabilities.
    let mut args = vec![
        "predict",
        "--model",
        "k3.safetensors",
        "--input",
        "in.tif",
        "--out",
        "c.tif",
        "--argmax",
    ];
    args.extend(tiling);
    ok_stderr(&unet(&args, d));
    let classes = match read_stack(d.join("c.tif")).unwrap() {
        AnyStack::U8(s) => s,
        other => panic!("{}", other.pixel_type()),
    };
    for s in 0..2 {
        let want =
            unet_metrics::argmax_classes(&values[s * 3 * plane..(s + 1) * 3 * plane], 3).unwrap();
        let got: Vec<u16> = classes.page(s).iter().map(|&c| u16::from(c)).collect();
        assert_eq!(got, want);
    }
    // What a three-class model cannot give.
    let err = fails(&unet(
        &[
            "predict",
            "--model",
            "k3.safetensors",
            "--input",
            "in.tif",
            "--out",
            "b1.tif",
            "--binary",
            "b.tif",
        ],
        d,
    ));
    assert!(
        err.contains("3 classes") && err.contains("--argmax"),
        "{err}"
    );
}

/// A stack is read and written section by section (memory holds one section): a BigTIFF input
/// predicts as its classic TIFF twin, and the output reads back as the whole-stack writer's.
#[test]
fn bigtiff_stacks_predict_section_by_section() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d, true);
    let stack = pages();
    write_stack(d.join("classic.tif"), &stack).unwrap();
    let (n, h, w) = (stack.pages(), stack.height(), stack.width());
    let mut big =
        unet_data::TiffSectionWriter::<u8>::create_big(d.join("big.tif"), n, 1, h, w).unwrap();
    for p in 0..n {
        big.write_section(stack.page(p)).unwrap();
    }
    big.finish().unwrap();
    assert_eq!(&std::fs::read(d.join("big.tif")).unwrap()[..4], b"II+\0");
    for input in ["classic.tif", "big.tif"] {
        let out = format!("p-{input}");
        ok_stdout(&unet(
            &[
                "predict",
                "--model",
                "m.safetensors",
                "--input",
                input,
                "--out",
                &out,
            ],
            d,
        ));
    }
    let classic = read_stack(d.join("p-classic.tif")).unwrap();
    assert_eq!(classic.dims(), (n, h, w, 1));
    assert_eq!(read_stack(d.join("p-big.tif")).unwrap(), classic);
    // No temporary file is left beside the outputs.
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}
