//! `unet predict` on OME-Zarr volumes, end to end with tiny random checkpoints: blockwise equals
//! whole-section TIFF prediction, workers of a job array share a store, a killed worker's block
//! is redone, a store of another model is refused, bad volumes are clear errors.
//!
//! Input volumes are written here with `zarrs`, with the metadata zarr-python 2 (OME-Zarr 0.4)
//! and zarr-python 3 (0.5, sharded) write: odd sizes and chunks that do not divide them.

mod common;

use common::{fails, ok_stdout, unet};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use serde_json::{json, Value};
use unet_data::{read_stack, write_stack, AnyStack, Stack};
use unet_model::{save_checkpoint, Normalisation, Padding, UNet, UNetConfig};
use zarrs::array::Array;
use zarrs::filesystem::FilesystemStore;

/// A depth-2, width-4 net with the training statistics in its sidecar, as `dir/NAME`.
fn tiny_model(dir: &Path, name: &str, padding: Padding, seed: u64) {
    let dataset = Normalisation::dataset(0.45, 0.2).unwrap();
    tiny_model_normalised(dir, name, padding, seed, dataset);
}

/// As [`tiny_model`], with the given input normalisation.
fn tiny_model_normalised(
    dir: &Path,
    name: &str,
    padding: Padding,
    seed: u64,
    normalisation: Normalisation,
) {
    let cfg = UNetConfig {
        depth: 2,
        base_width: 4,
        padding,
        ..UNetConfig::small()
    };
    save_model(dir, name, &cfg, seed, normalisation);
}

/// A net of `cfg` seeded with `seed`, saved as `dir/NAME` with `normalisation`.
fn save_model(dir: &Path, name: &str, cfg: &UNetConfig, seed: u64, normalisation: Normalisation) {
    let model = UNet::seeded(cfg, seed, &Device::Cpu).unwrap();
    save_checkpoint(
        dir.join(name),
        &model,
        1,
        Some(normalisation),
        json!({}),
        None,
    )
    .unwrap();
}

/// Grey values with some structure.
fn voxels(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 37 + (i / 45) * 11 + (i / 997) * 5) % 256) as u8)
        .collect()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

fn multiscales(version: Option<&str>, axes: &[&str]) -> Value {
    let axes: Vec<Value> = axes
        .iter()
        .map(|&a| match a {
            "c" => json!({ "name": "c", "type": "channel" }),
            _ => json!({ "name": a, "type": "space", "unit": "nanometer" }),
        })
        .collect();
    let mut scale = vec![1.0; axes.len() - 3];
    scale.extend([40.0, 4.0, 4.5]);
    let mut ms = json!({
        "name": "raw",
        "axes": axes,
        "datasets": [{
            "path": "0",
            "coordinateTransformations": [{ "type": "scale", "scale": scale }],
        }],
    });
    if let Some(v) = version {
        ms["version"] = json!(v);
    }
    ms
}

/// An OME-Zarr 0.4 group on Zarr v2 as zarr-python 2 writes it (blosc-lz4, `.` keys), holding
/// `data` in array `0`.
fn write_v2<T: zarrs::array::Element>(
    root: &Path,
    dtype: &str,
    shape: &[u64],
    chunks: &[u64],
    axes: &[&str],
    data: &[T],
) {
    write_json(&root.join(".zgroup"), &json!({ "zarr_format": 2 }));
    write_json(
        &root.join(".zattrs"),
        &json!({ "multiscales": [multiscales(Some("0.4"), axes)] }),
    );
    write_json(
        &root.join("0/.zarray"),
        &json!({
            "zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype,
            "compressor": { "id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0 },
            "fill_value": 0, "order": "C", "filters": null, "dimension_separator": ".",
        }),
    );
    fill(root, data);
}

/// An OME-Zarr 0.5 group on Zarr v3 with sharding (gzip inside), holding `data` in array `0`.
fn write_v3<T: zarrs::array::Element>(
    root: &Path,
    dtype: &str,
    shape: &[u64],
    shard: &[u64],
    inner: &[u64],
    axes: &[&str],
    data: &[T],
) {
    write_json(
        &root.join("zarr.json"),
        &json!({
            "zarr_format": 3, "node_type": "group",
            "attributes": { "ome": { "version": "0.5", "multiscales": [multiscales(None, axes)] } },
        }),
    );
    write_json(
        &root.join("0/zarr.json"),
        &json!({
            "zarr_format": 3, "node_type": "array", "shape": shape, "data_type": dtype,
            "chunk_grid": { "name": "regular", "configuration": { "chunk_shape": shard } },
            "chunk_key_encoding": { "name": "default", "configuration": { "separator": "/" } },
            "fill_value": 0,
            "codecs": [{ "name": "sharding_indexed", "configuration": {
                "chunk_shape": inner,
                "codecs": [{ "name": "bytes", "configuration": { "endian": "little" } },
                           { "name": "gzip", "configuration": { "level": 5 } }],
                "index_codecs": [{ "name": "bytes", "configuration": { "endian": "little" } },
                                 { "name": "crc32c" }],
                "index_location": "end",
            }}],
            "dimension_names": axes,
        }),
    );
    fill(root, data);
}

fn fill<T: zarrs::array::Element>(root: &Path, data: &[T]) {
    let array = Array::open(Arc::new(FilesystemStore::new(root).unwrap()), "/0").unwrap();
    array
        .store_array_subset_elements(&array.subset_all(), data)
        .unwrap();
}

fn read_out<T: zarrs::array::ElementOwned>(root: &Path) -> Vec<T> {
    let array = Array::open(Arc::new(FilesystemStore::new(root).unwrap()), "/0").unwrap();
    array
        .retrieve_array_subset_elements(&array.subset_all())
        .unwrap()
}

/// P(cell) of whole sections: `unet predict` on the same voxels as a TIFF stack.
fn tiff_reference(dir: &Path, model: &str, stack: AnyStack, extra: &[&str]) -> Vec<f32> {
    write_stack_any(&dir.join("in.tif"), &stack);
    let mut args = vec![
        "predict", "--model", model, "--input", "in.tif", "--out", "ref.tif",
    ];
    args.extend(extra);
    args.push("--overwrite");
    ok_stdout(&unet(&args, dir));
    match read_stack(dir.join("ref.tif")).unwrap() {
        AnyStack::F32(s) => s.as_slice().to_vec(),
        other => panic!("{}", other.pixel_type()),
    }
}

fn write_stack_any(path: &Path, stack: &AnyStack) {
    match stack {
        AnyStack::U8(s) => write_stack(path, s).unwrap(),
        AnyStack::U16(s) => write_stack(path, s).unwrap(),
        AnyStack::F32(s) => write_stack(path, s).unwrap(),
    }
}

fn to_u8(p: f32) -> u8 {
    (p * 255.0).round() as u8
}

const SHAPE: [usize; 3] = [5, 37, 45];

/// A v2 uint8 volume of 5 x 37 x 45 in chunks of 2 x 16 x 20, and its TIFF twin.
fn v2_volume(dir: &Path) -> AnyStack {
    let [d, h, w] = SHAPE;
    let data = voxels(d * h * w);
    write_v2(
        &dir.join("vol.zarr"),
        "|u1",
        &[5, 37, 45],
        &[2, 16, 20],
        &["z", "y", "x"],
        &data,
    );
    AnyStack::U8(Stack::new(d, h, w, data).unwrap())
}

/// Blocks of a few chunks each give the whole sections' numbers bit for bit: valid padding, and
/// same padding with Gaussian blending over several tiles a section; uint8 is round(P x 255).
#[test]
fn blockwise_equals_whole_section_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = v2_volume(d);
    for (model, padding, tiling) in [
        (
            "valid.safetensors",
            Padding::Valid,
            ["--tile", "8", "--overlap", "0"],
        ),
        (
            "same.safetensors",
            Padding::Same,
            ["--tile", "16", "--overlap", "6"],
        ),
    ] {
        tiny_model(d, model, padding, 3);
        let want = tiff_reference(d, model, stack.clone(), &tiling);
        let mut args = vec!["predict", "--model", model, "--input", "vol.zarr"];
        args.extend(tiling);
        let f32_out = format!("{model}-f32.zarr");
        let mut f32_args = args.clone();
        f32_args.extend([
            "--out",
            f32_out.as_str(),
            "--dtype",
            "f32",
            "--block",
            "1,16,20",
            "--batch",
            "3",
        ]);
        let summary: Value = serde_json::from_str(ok_stdout(&unet(&f32_args, d)).trim()).unwrap();
        // 3 x 3 x 3 blocks of one chunk (2 x 16 x 20) each.
        assert_eq!(summary["blocks_total"], 27, "{summary}");
        assert_eq!(summary["blocks_done_in_store"], 27);
        assert_eq!(read_out::<f32>(&d.join(&f32_out)), want, "{model}");

        let u8_out = format!("{model}-u8.zarr");
        let mut u8_args = args.clone();
        u8_args.extend(["--out", u8_out.as_str(), "--block", "4,40,20"]);
        ok_stdout(&unet(&u8_args, d));
        let got = read_out::<u8>(&d.join(&u8_out));
        assert_eq!(got, want.iter().map(|&p| to_u8(p)).collect::<Vec<_>>());
        if padding == Padding::Valid {
            // Half precision: P rounded to the nearest f16, in blocks unlike the f32 run's.
            let f16_out = format!("{model}-f16.zarr");
            let mut f16_args = args.clone();
            f16_args.extend([
                "--out",
                f16_out.as_str(),
                "--dtype",
                "f16",
                "--block",
                "2,16,40",
            ]);
            ok_stdout(&unet(&f16_args, d));
            let got = read_out::<half::f16>(&d.join(&f16_out));
            let halves: Vec<half::f16> = want.iter().map(|&p| half::f16::from_f32(p)).collect();
            assert_eq!(got, halves, "{model}");
            let zarray: Value =
                serde_json::from_slice(&std::fs::read(d.join(&f16_out).join("0/.zarray")).unwrap())
                    .unwrap();
            assert_eq!(zarray["dtype"], "<f2");
        }
    }
    // Per-image standardisation: each whole section's mean and std, gathered in bands of rows
    // before its blocks are predicted.
    tiny_model_normalised(
        d,
        "per-image.safetensors",
        Padding::Same,
        6,
        Normalisation::PerImage,
    );
    let tiling = ["--tile", "16", "--overlap", "4"];
    let want = tiff_reference(d, "per-image.safetensors", stack.clone(), &tiling);
    let mut args = vec![
        "predict",
        "--model",
        "per-image.safetensors",
        "--input",
        "vol.zarr",
    ];
    args.extend(tiling);
    args.extend([
        "--out",
        "per-image.zarr",
        "--dtype",
        "f32",
        "--block",
        "1,16,40",
    ]);
    ok_stdout(&unet(&args, d));
    assert_eq!(read_out::<f32>(&d.join("per-image.zarr")), want);

    // The output carries the input's axes and voxel size, as OME-Zarr 0.4 on Zarr v2.
    let attrs: Value = serde_json::from_slice(
        &std::fs::read(d.join("valid.safetensors-u8.zarr/.zattrs")).unwrap(),
    )
    .unwrap();
    let ms = &attrs["multiscales"][0];
    assert_eq!(ms["version"], "0.4");
    assert_eq!(
        ms["axes"][0],
        json!({ "name": "z", "type": "space", "unit": "nanometer" })
    );
    assert_eq!(
        ms["datasets"][0]["coordinateTransformations"][0]["scale"],
        json!([40.0, 4.0, 4.5])
    );
    let zarray: Value = serde_json::from_slice(
        &std::fs::read(d.join("valid.safetensors-u8.zarr/0/.zarray")).unwrap(),
    )
    .unwrap();
    assert_eq!(zarray["dtype"], "|u1");
    assert_eq!(zarray["chunks"], json!([2, 16, 20]));
}

/// A sharded Zarr v3 uint16 volume with a channel axis (and a time axis of one point) in,
/// OME-Zarr 0.5 on sharded v3 out, through `VOL.zarr/ARRAY`.
#[test]
fn sharded_v3_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d, "m.safetensors", Padding::Valid, 9);
    let (depth, h, w) = (3, 30, 33);
    let data: Vec<u16> = voxels(depth * h * w)
        .iter()
        .enumerate()
        .map(|(i, &v)| u16::from(v) * 200 + (i % 7) as u16)
        .collect();
    write_v3(
        &d.join("v3.zarr"),
        "uint16",
        &[1, 1, 3, 30, 33],
        &[1, 1, 2, 16, 16],
        &[1, 1, 1, 8, 8],
        &["t", "c", "z", "y", "x"],
        &data,
    );
    let want = tiff_reference(
        d,
        "m.safetensors",
        AnyStack::U16(Stack::new(depth, h, w, data).unwrap()),
        &["--tile", "8"],
    );
    let run = |out: &str| {
        unet(
            &[
                "predict",
                "--model",
                "m.safetensors",
                "--input",
                "v3.zarr/0",
                "--out",
                out,
                "--tile",
                "8",
                "--zarr-version",
                "3",
                "--dtype",
                "f32",
                "--chunks",
                "1,8,8",
                "--block",
                "1,16,24",
            ],
            d,
        )
    };
    ok_stdout(&run("p.zarr"));
    assert_eq!(read_out::<f32>(&d.join("p.zarr")), want);
    let group: Value =
        serde_json::from_slice(&std::fs::read(d.join("p.zarr/zarr.json")).unwrap()).unwrap();
    assert_eq!(group["attributes"]["ome"]["version"], "0.5");
    let axes = &group["attributes"]["ome"]["multiscales"][0]["axes"];
    assert_eq!(axes.as_array().unwrap().len(), 3, "{axes}");
    let array: Value =
        serde_json::from_slice(&std::fs::read(d.join("p.zarr/0/zarr.json")).unwrap()).unwrap();
    assert_eq!(array["codecs"][0]["name"], "sharding_indexed");
    assert_eq!(
        array["chunk_grid"]["configuration"]["chunk_shape"],
        json!([1, 16, 24])
    );
}

/// A net of two input channels and three classes (depth 2, width 4), with `normalisation`.
fn two_channel_three_class_model(dir: &Path, name: &str, normalisation: Normalisation) {
    let cfg = UNetConfig {
        depth: 2,
        base_width: 4,
        padding: Padding::Same,
        in_channels: 2,
        n_classes: 3,
        ..UNetConfig::small()
    };
    save_model(dir, name, &cfg, 11, normalisation);
}

/// A two-channel volume (c, z, y, x) through three-class models: every class's probability as
/// a channel axis, or the classes (--argmax), equal to the TIFF hyperstack's prediction; each
/// channel normalised by its own statistics, fixed or each section's own.
#[test]
fn channels_in_and_class_probabilities_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (depth, h, w) = (3, 21, 26);
    let plane = h * w;
    let grey = voxels(depth * plane);
    // Channel 1 is channel 0 inverted and compressed: other statistics.
    let data: Vec<u8> = grey
        .iter()
        .copied()
        .chain(grey.iter().map(|&v| 200 - v / 2))
        .collect();
    for (version, root) in [("2", "c2.zarr"), ("3", "c3.zarr")] {
        match version {
            "2" => write_v2(
                &d.join(root),
                "|u1",
                &[2, 3, 21, 26],
                &[1, 2, 16, 16],
                &["c", "z", "y", "x"],
                &data,
            ),
            _ => write_v3(
                &d.join(root),
                "uint8",
                &[2, 3, 21, 26],
                &[2, 2, 16, 16],
                &[1, 1, 8, 8],
                &["c", "z", "y", "x"],
                &data,
            ),
        }
    }
    // The TIFF twin: an ImageJ hyperstack, section after section, channel-fastest.
    let sections: Vec<u8> = (0..depth)
        .flat_map(|z| {
            (0..2).flat_map(move |c| {
                let start = (c * depth + z) * plane;
                start..start + plane
            })
        })
        .map(|i| data[i])
        .collect();
    let stack = unet_data::ChannelStack::new(2, Stack::new(2 * depth, h, w, sections).unwrap());
    unet_data::write_channels(d.join("in2.tif"), &stack.unwrap()).unwrap();
    let tiling = ["--tile", "8", "--overlap", "4"];
    for (model, normalisation) in [
        (
            "fixed.safetensors",
            Normalisation::dataset_per_channel(vec![0.5, 0.6], vec![0.28, 0.14]).unwrap(),
        ),
        ("own.safetensors", Normalisation::PerImage),
    ] {
        two_channel_three_class_model(d, model, normalisation);
        let predict = |input: &str, out: &str, extra: &[&str]| {
            let mut args = vec!["predict", "--model", model, "--input", input, "--out", out];
            args.extend(tiling);
            args.extend(extra);
            ok_stdout(&unet(&args, d));
        };
        predict("in2.tif", "ref.tif", &["--overwrite"]);
        let AnyStack::F32(reference) = read_stack(d.join("ref.tif")).unwrap() else {
            panic!("probabilities are float")
        };
        // [z][c][y][x] in the hyperstack, [c][z][y][x] in the store.
        let want: Vec<f32> = (0..3)
            .flat_map(|c| {
                let r = &reference;
                (0..depth).flat_map(move |z| r.page(z * 3 + c).iter().copied())
            })
            .collect();
        predict("in2.tif", "ref-classes.tif", &["--overwrite", "--argmax"]);
        let want_classes = unet_data::read_u8_stack(d.join("ref-classes.tif")).unwrap();
        for (root, version) in [("c2.zarr", "2"), ("c3.zarr", "3")] {
            let out = format!("{model}-{version}.zarr");
            let blocks = ["--block", "2,16,16", "--zarr-version", version];
            predict(root, &out, &[&blocks[..], &["--dtype", "f32"]].concat());
            assert_eq!(read_out::<f32>(&d.join(&out)), want, "{model} {root}");
            let classes = format!("{model}-{version}-classes.zarr");
            predict(root, &classes, &[&blocks[..], &["--argmax"]].concat());
            assert_eq!(
                read_out::<u8>(&d.join(&classes)),
                want_classes.as_slice(),
                "{model} {root}"
            );
        }
    }
    // A channel axis in the metadata, and names that say what the voxels hold.
    let attrs: Value =
        serde_json::from_slice(&std::fs::read(d.join("fixed.safetensors-2.zarr/.zattrs")).unwrap())
            .unwrap();
    let ms = &attrs["multiscales"][0];
    assert_eq!(ms["name"], "class_probabilities");
    assert_eq!(ms["axes"][0], json!({ "name": "c", "type": "channel" }));
    assert_eq!(
        ms["datasets"][0]["coordinateTransformations"][0]["scale"],
        json!([1.0, 40.0, 4.0, 4.5])
    );
    let zarray: Value = serde_json::from_slice(
        &std::fs::read(d.join("fixed.safetensors-2.zarr/0/.zarray")).unwrap(),
    )
    .unwrap();
    assert_eq!(zarray["shape"], json!([3, 3, 21, 26]));
    assert_eq!(zarray["chunks"], json!([1, 2, 16, 16]));
    let array: Value = serde_json::from_slice(
        &std::fs::read(d.join("fixed.safetensors-3.zarr/0/zarr.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(array["dimension_names"], json!(["c", "z", "y", "x"]));
    assert_eq!(
        array["chunk_grid"]["configuration"]["chunk_shape"],
        json!([3, 2, 16, 16])
    );
    let group: Value = serde_json::from_slice(
        &std::fs::read(d.join("fixed.safetensors-3-classes.zarr/zarr.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        group["attributes"]["ome"]["multiscales"][0]["name"],
        "classes"
    );
    // A store of probabilities is not resumed as one of classes.
    let mut args = vec![
        "predict",
        "--model",
        "fixed.safetensors",
        "--input",
        "c2.zarr",
        "--out",
        "fixed.safetensors-2.zarr",
        "--argmax",
        "--block",
        "2,16,16",
    ];
    args.extend(tiling);
    let err = fails(&unet(&args, d));
    assert!(err.contains("another job"), "{err}");
}

#[test]
fn float16_and_float64_volumes_predict_as_their_float32_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d, "m.safetensors", Padding::Valid, 4);
    let (depth, h, w) = (2, 20, 24);
    // Values exact in half precision, so all three types hold the same numbers.
    let values: Vec<f32> = voxels(depth * h * w)
        .iter()
        .map(|&v| f32::from(v) / 256.0)
        .collect();
    let want = tiff_reference(
        d,
        "m.safetensors",
        AnyStack::F32(Stack::new(depth, h, w, values.clone()).unwrap()),
        &["--tile", "8"],
    );
    let shape = [depth as u64, h as u64, w as u64];
    let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
    let doubles: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    write_v2(
        &d.join("h.zarr"),
        "<f2",
        &shape,
        &[1, 8, 8],
        &["z", "y", "x"],
        &halves,
    );
    write_v3(
        &d.join("d.zarr"),
        "float64",
        &shape,
        &[1, 16, 16],
        &[1, 8, 8],
        &["z", "y", "x"],
        &doubles,
    );
    for input in ["h.zarr", "d.zarr"] {
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
                "--tile",
                "8",
                "--dtype",
                "f32",
            ],
            d,
        ));
        assert_eq!(read_out::<f32>(&d.join(&out)), want, "{input}");
    }
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The store's array, its chunk files' names, and its done-markers, for comparing stores.
fn store_state(root: &Path) -> (Vec<u8>, Vec<PathBuf>, usize) {
    let rel = |p: PathBuf| p.strip_prefix(root).unwrap().to_path_buf();
    let chunks = files(&root.join("0")).into_iter().map(rel).collect();
    (
        read_out::<u8>(root),
        chunks,
        files(&root.join(".unet/blocks")).len(),
    )
}

const JOB: [&str; 10] = [
    "predict",
    "--model",
    "m.safetensors",
    "--input",
    "vol.zarr",
    "--tile",
    "8",
    "--block",
    "1,16,20",
    "--out",
];

/// Three workers started at once on one store, each with `--blocks i/3`, give the store one
/// worker gives; `--status` counts the blocks; a rerun predicts nothing.
#[test]
fn three_workers_share_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    v2_volume(d);
    tiny_model(d, "m.safetensors", Padding::Valid, 4);
    let mut args = JOB.to_vec();
    args.push("one.zarr");
    ok_stdout(&unet(&args, d));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let share = format!("{i}/3");
            let mut args = JOB.to_vec();
            args.extend(["three.zarr", "--blocks", share.as_str()]);
            Command::new(env!("CARGO_BIN_EXE_unet"))
                .current_dir(d)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut predicted = 0;
    for w in workers {
        let summary: Value =
            serde_json::from_str(ok_stdout(&w.wait_with_output().unwrap()).trim()).unwrap();
        predicted += summary["blocks_predicted"].as_u64().unwrap();
    }
    assert_eq!(predicted, 27);
    assert_eq!(
        store_state(&d.join("three.zarr")),
        store_state(&d.join("one.zarr"))
    );
    let status = ok_stdout(&unet(&["predict", "--out", "three.zarr", "--status"], d));
    assert!(status.contains("27 / 27 blocks done"), "{status}");
    let mut again = JOB.to_vec();
    again.push("three.zarr");
    let summary: Value = serde_json::from_str(ok_stdout(&unet(&again, d)).trim()).unwrap();
    assert_eq!(summary["blocks_predicted"], 0, "{summary}");
    assert_eq!(summary["blocks_skipped"], 27);
}

/// A worker killed with SIGKILL after writing a block's chunks but before its marker leaves
/// that block undone (and a chunk half written, as a kill mid-write would); the rerun redoes it
/// and the store equals an uninterrupted one.
#[test]
fn a_killed_worker_leaves_its_block_to_be_redone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    v2_volume(d);
    tiny_model(d, "m.safetensors", Padding::Valid, 4);
    let mut args = JOB.to_vec();
    args.push("clean.zarr");
    ok_stdout(&unet(&args, d));

    let mut args = JOB.to_vec();
    args.push("killed.zarr");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_unet"))
        .current_dir(d)
        .args(&args)
        .env("UNET_TEST_PAUSE_BEFORE_MARKER_MS", "3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let chunk_dir = d.join("killed.zarr/0");
    let started = Instant::now();
    let written = loop {
        let chunks: Vec<PathBuf> = files(&chunk_dir)
            .into_iter()
            // Not `.zarray`, nor the temporary files of atomic metadata writes.
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        if !chunks.is_empty() {
            break chunks;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk written"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // In the pause between the first block's chunks and its marker.
    worker.kill().unwrap();
    worker.wait().unwrap();
    let status = ok_stdout(&unet(&["predict", "--out", "killed.zarr", "--status"], d));
    assert!(status.contains("0 / 27 blocks done"), "{status}");
    let half = &written[0];
    let bytes = std::fs::read(half).unwrap();
    std::fs::write(half, &bytes[..bytes.len() / 2]).unwrap();

    ok_stdout(&unet(&args, d));
    assert_eq!(
        store_state(&d.join("killed.zarr")),
        store_state(&d.join("clean.zarr"))
    );
}

/// A store finished with one model refuses another model, and other options, naming the store
/// and what differs; nothing in it changes.
#[test]
fn a_store_of_another_model_or_options_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    v2_volume(d);
    tiny_model(d, "m.safetensors", Padding::Valid, 4);
    tiny_model(d, "other.safetensors", Padding::Valid, 5);
    let mut args = JOB.to_vec();
    args.push("p.zarr");
    ok_stdout(&unet(&args, d));
    let before = store_state(&d.join("p.zarr"));
    let mut other = args.clone();
    other[2] = "other.safetensors";
    let err = fails(&unet(&other, d));
    assert!(
        err.contains("p.zarr") && err.contains("another job") && err.contains("model_sha256"),
        "{err}"
    );
    let mut tile = args.clone();
    tile[6] = "12";
    let err = fails(&unet(&tile, d));
    assert!(err.contains("p.zarr") && err.contains("job.tile"), "{err}");
    let mut dtype = args.clone();
    dtype.extend(["--dtype", "f32"]);
    let err = fails(&unet(&dtype, d));
    assert!(err.contains("dtype"), "{err}");
    assert_eq!(store_state(&d.join("p.zarr")), before);
}

/// Bad volumes are refused with the path and what is wrong.
#[test]
fn bad_volumes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d, "m.safetensors", Padding::Valid, 4);
    let predict = |input: &str| {
        fails(&unet(
            &[
                "predict",
                "--model",
                "m.safetensors",
                "--input",
                input,
                "--out",
                "o.zarr",
            ],
            d,
        ))
    };
    let check = |input: &str, why: &str| {
        let err = predict(input);
        assert!(err.contains(input) && err.contains(why), "{input}: {err}");
        assert!(!d.join("o.zarr").exists(), "{input}: an output was made");
    };
    check("missing.zarr", "no such file");
    std::fs::write(d.join("file.zarr"), b"not a store").unwrap();
    check("file.zarr", "not a Zarr store");
    std::fs::create_dir(d.join("empty.zarr")).unwrap();
    check("empty.zarr", "not a Zarr array or group");
    write_v2(
        &d.join("xyz.zarr"),
        "|u1",
        &[4, 5, 6],
        &[4, 5, 6],
        &["x", "y", "z"],
        &[0u8; 120],
    );
    check("xyz.zarr", "wrong order");
    // 4-D without OME metadata: which axis is the channel?
    write_v2(
        &d.join("four.zarr"),
        "|u1",
        &[2, 4, 5, 6],
        &[2, 4, 5, 6],
        &["c", "z", "y", "x"],
        &[0u8; 240],
    );
    std::fs::remove_file(d.join("four.zarr/.zattrs")).unwrap();
    check("four.zarr/0", "without OME axes metadata");
    check("four.zarr", "without OME multiscales");
    write_v2(
        &d.join("i32.zarr"),
        "<i4",
        &[2, 3, 4],
        &[2, 3, 4],
        &["z", "y", "x"],
        &[0i32; 24],
    );
    check("i32.zarr", "unet reads uint8, uint16 and float16/32/64");
    write_v2(
        &d.join("two.zarr"),
        "|u1",
        &[2, 2, 3, 4],
        &[2, 2, 3, 4],
        &["c", "z", "y", "x"],
        &[0u8; 48],
    );
    check("two.zarr", "2 channel(s)");
    // An existing directory that is not this job's store is never written into.
    std::fs::create_dir_all(d.join("user.zarr")).unwrap();
    std::fs::write(d.join("user.zarr/precious.txt"), b"data").unwrap();
    write_v2(
        &d.join("ok.zarr"),
        "|u1",
        &[2, 3, 4],
        &[2, 3, 4],
        &["z", "y", "x"],
        &[9u8; 24],
    );
    let err = fails(&unet(
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "ok.zarr",
            "--out",
            "user.zarr",
        ],
        d,
    ));
    assert!(
        err.contains("user.zarr") && err.contains("precious.txt"),
        "{err}"
    );
    let err = fails(&unet(&["predict", "--out", "nothing.zarr", "--status"], d));
    assert!(err.contains("nothing.zarr"), "{err}");
    // Flags of one format are refused with the other.
    let err = fails(&unet(
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "ok.zarr",
            "--out",
            "t.zarr",
            "--tta",
        ],
        d,
    ));
    assert!(err.contains("--tta is not offered for OME-Zarr"), "{err}");
    write_stack(
        d.join("s.tif"),
        &Stack::new(1, 4, 4, vec![7u8; 16]).unwrap(),
    )
    .unwrap();
    let err = fails(&unet(
        &[
            "predict",
            "--model",
            "m.safetensors",
            "--input",
            "s.tif",
            "--out",
            "s-p.tif",
            "--workers",
            "2",
        ],
        d,
    ));
    assert!(err.contains("are for volumes"), "{err}");
}

/// Array `level` of the store at `root`, all of it, with its shape.
fn read_level<T: zarrs::array::ElementOwned>(root: &Path, level: u32) -> (Vec<T>, Vec<u64>) {
    let array = Array::open(
        Arc::new(FilesystemStore::new(root).unwrap()),
        &format!("/{level}"),
    )
    .unwrap();
    let values = array
        .retrieve_array_subset_elements(&array.subset_all())
        .unwrap();
    (values, array.shape().to_vec())
}

/// One pyramid step as the store should hold it: each 2 x 2 group's mean in y and x, summed in
/// f32 row by row and divided by the count (the same order as `unet`, so f32 compares exactly);
/// an odd last row or column averages the voxels there are.
fn halve(values: &[f32], [depth, h, w]: [usize; 3]) -> (Vec<f32>, [usize; 3]) {
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = Vec::new();
    for z in 0..depth {
        let plane = &values[z * h * w..(z + 1) * h * w];
        for y in 0..h2 {
            for x in 0..w2 {
                let (mut sum, mut n) = (0f32, 0f32);
                for yy in 2 * y..(2 * y + 2).min(h) {
                    for xx in 2 * x..(2 * x + 2).min(w) {
                        sum += plane[yy * w + xx];
                        n += 1.0;
                    }
                }
                out.push(sum / n);
            }
        }
    }
    (out, [depth, h2, w2])
}

/// Every level's voxels (uint8), the chunk files of the store, and its done-markers.
fn pyramid_state(root: &Path, levels: u32) -> (Vec<Vec<u8>>, Vec<PathBuf>, usize) {
    let rel = |p: PathBuf| p.strip_prefix(root).unwrap().to_path_buf();
    let data = (0..=levels).map(|l| read_level::<u8>(root, l).0).collect();
    let chunks = (0..=levels)
        .flat_map(|l| files(&root.join(l.to_string())))
        .map(rel)
        .collect();
    (data, chunks, files(&root.join(".unet/blocks")).len())
}

/// `--pyramid 2` on Zarr v2 and v3, f32 and uint8: level 0 is the store without a pyramid,
/// levels 1 and 2 the 2 x 2 means of the level before (in f32, then stored as level 0 is), with
/// odd sizes at the far edge; the metadata lists three datasets with their scales; two workers
/// give one worker's store; a pyramid the chunks cannot halve, or a rerun with another
/// pyramid, is refused. `--argmax` classes take each group's top-left voxel.
#[test]
fn pyramid_levels_are_2x2_means_of_level_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    v2_volume(d);
    tiny_model(d, "m.safetensors", Padding::Valid, 4);
    let predict = |out: &str, extra: &[&str]| {
        let mut args = JOB.to_vec();
        args[8] = "2,32,20";
        args.push(out);
        args.extend(extra);
        unet(&args, d)
    };
    for version in ["2", "3"] {
        let flat = format!("flat-f32-{version}.zarr");
        ok_stdout(&predict(
            &flat,
            &["--zarr-version", version, "--dtype", "f32"],
        ));
        let level0 = read_out::<f32>(&d.join(&flat));
        // The levels want: 5 x 19 x 23, then 5 x 10 x 12 (37 and 45 are odd, and so is 19).
        let (level1, dims1) = halve(&level0, SHAPE);
        let (level2, dims2) = halve(&level1, dims1);
        assert_eq!((dims1, dims2), ([5, 19, 23], [5, 10, 12]));
        let want = [level0.clone(), level1, level2];

        let out = format!("pyr-f32-{version}.zarr");
        let summary: Value = serde_json::from_str(
            ok_stdout(&predict(
                &out,
                &[
                    "--zarr-version",
                    version,
                    "--dtype",
                    "f32",
                    "--pyramid",
                    "2",
                ],
            ))
            .trim(),
        )
        .unwrap();
        assert_eq!(summary["blocks_done_in_store"], 18, "{summary}");
        for (l, (want, dims)) in want.iter().zip([SHAPE, dims1, dims2]).enumerate() {
            let (got, shape) = read_level::<f32>(&d.join(&out), l as u32);
            assert_eq!(shape, dims.map(|n| n as u64), "v{version} level {l}");
            assert_eq!(&got, want, "v{version} f32 level {l}");
        }

        let flat_u8 = format!("flat-u8-{version}.zarr");
        ok_stdout(&predict(&flat_u8, &["--zarr-version", version]));
        let out_u8 = format!("pyr-u8-{version}.zarr");
        ok_stdout(&predict(
            &out_u8,
            &["--zarr-version", version, "--pyramid", "2"],
        ));
        assert_eq!(
            read_level::<u8>(&d.join(&out_u8), 0).0,
            read_out::<u8>(&d.join(&flat_u8))
        );
        for (l, want) in want.iter().enumerate().skip(1) {
            let rounded: Vec<u8> = want.iter().map(|&p| to_u8(p)).collect();
            assert_eq!(
                read_level::<u8>(&d.join(&out_u8), l as u32).0,
                rounded,
                "v{version} uint8 level {l}"
            );
        }

        // Three datasets, y and x scaled by 2^l.
        let (attrs, level1_meta): (Value, Value) = match version {
            "2" => (
                serde_json::from_slice(&std::fs::read(d.join(&out).join(".zattrs")).unwrap())
                    .unwrap(),
                serde_json::from_slice(&std::fs::read(d.join(&out).join("1/.zarray")).unwrap())
                    .unwrap(),
            ),
            _ => {
                let group: Value =
                    serde_json::from_slice(&std::fs::read(d.join(&out).join("zarr.json")).unwrap())
                        .unwrap();
                (
                    group["attributes"]["ome"].clone(),
                    serde_json::from_slice(
                        &std::fs::read(d.join(&out).join("1/zarr.json")).unwrap(),
                    )
                    .unwrap(),
                )
            }
        };
        let datasets = attrs["multiscales"][0]["datasets"].as_array().unwrap();
        assert_eq!(datasets.len(), 3, "{attrs}");
        for (l, scale) in [[40.0, 4.0, 4.5], [40.0, 8.0, 9.0], [40.0, 16.0, 18.0]]
            .iter()
            .enumerate()
        {
            assert_eq!(datasets[l]["path"], l.to_string());
            assert_eq!(
                datasets[l]["coordinateTransformations"][0]["scale"],
                json!(scale)
            );
        }
        // A mean of 2^l x 2^l voxels is centred (2^l - 1) / 2 level-0 voxels on.
        assert_eq!(
            datasets[0]["coordinateTransformations"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            datasets[2]["coordinateTransformations"][1],
            json!({ "type": "translation", "translation": [0.0, 6.0, 6.75] })
        );
        match version {
            "2" => assert_eq!(level1_meta["chunks"], json!([2, 8, 10])),
            _ => {
                // The block's shard at level 1: 2 x 32 x 20 halved in y and x.
                assert_eq!(
                    level1_meta["chunk_grid"]["configuration"]["chunk_shape"],
                    json!([2, 16, 10])
                );
                assert_eq!(
                    level1_meta["codecs"][0]["configuration"]["chunk_shape"],
                    json!([2, 8, 10])
                );
            }
        }
    }

    // Two workers, the second first, give the store one worker gave.
    for share in ["1/2", "0/2"] {
        ok_stdout(&predict("two.zarr", &["--pyramid", "2", "--blocks", share]));
    }
    assert_eq!(
        pyramid_state(&d.join("two.zarr"), 2),
        pyramid_state(&d.join("pyr-u8-2.zarr"), 2)
    );

    // Classes: the top-left voxel of each group, never a mean.
    ok_stdout(&predict("classes.zarr", &["--argmax", "--pyramid", "1"]));
    let (classes, _) = read_level::<u8>(&d.join("classes.zarr"), 0);
    let (halved, shape) = read_level::<u8>(&d.join("classes.zarr"), 1);
    assert_eq!(shape, [5, 19, 23]);
    let [depth, h, w] = SHAPE;
    let nearest: Vec<u8> = (0..depth)
        .flat_map(|z| (0..19).flat_map(move |y| (0..23).map(move |x| (z, y, x))))
        .map(|(z, y, x)| classes[(z * h + 2 * y) * w + 2 * x])
        .collect();
    assert_eq!(halved, nearest);
    assert!(classes.iter().all(|&c| c < 2));

    // Chunks of 20 in x cannot be halved 3 times into whole voxels: refused before any output.
    let err = fails(&predict("deep.zarr", &["--pyramid", "3"]));
    assert!(
        err.contains("--pyramid 3") && err.contains("--chunks"),
        "{err}"
    );
    assert!(!d.join("deep.zarr").exists());
    // A store with one pyramid is not resumed with another, nor with none.
    let before = pyramid_state(&d.join("two.zarr"), 2);
    for other in [&["--pyramid", "1"][..], &[]] {
        let err = fails(&predict("two.zarr", other));
        assert!(
            err.contains("another job") && err.contains("pyramid"),
            "{err}"
        );
    }
    assert_eq!(pyramid_state(&d.join("two.zarr"), 2), before);
}

/// `data` (C order over `shape`, (z, y, x)) as the N5 dataset `dataset` of the container
/// `root`, gzip blocks of `block` (z, y, x; N5 lists them reversed), written with the `n5`
/// crate as Fiji's N5 export cuts them: the edge blocks cut to the volume.
fn write_n5(root: &Path, dataset: &str, shape: [u64; 3], block: [u64; 3], data: &[u8]) {
    use n5::prelude::*;
    let n5 = N5Filesystem::open_or_create(root).unwrap();
    let attrs = DatasetAttributes::new(
        shape.iter().rev().copied().collect(),
        block.iter().rev().map(|&b| b as u32).collect(),
        DataType::UINT8,
        CompressionType::new::<compression::gzip::GzipCompression>(),
    );
    n5.create_dataset(dataset, &attrs).unwrap();
    let counts = [0, 1, 2].map(|d| shape[d].div_ceil(block[d]));
    for gz in 0..counts[0] {
        for gy in 0..counts[1] {
            for gx in 0..counts[2] {
                let at = [gz, gy, gx];
                let r = [0, 1, 2].map(|d| at[d] * block[d]..((at[d] + 1) * block[d]).min(shape[d]));
                let mut values = Vec::new();
                for z in r[0].clone() {
                    for y in r[1].clone() {
                        let row = ((z * shape[1] + y) * shape[2]) as usize;
                        values.extend_from_slice(
                            &data[row + r[2].start as usize..row + r[2].end as usize],
                        );
                    }
                }
                let size = r.iter().rev().map(|r| (r.end - r.start) as u32).collect();
                let b = VecDataBlock::<u8>::new(size, [gx, gy, gz].into_iter().collect(), values);
                n5.write_block(dataset, &attrs, &b).unwrap();
            }
        }
    }
}

/// An N5 uint8 dataset, all of it, read with the `n5` crate: its voxels in (z, y, x) C order
/// and its dimensions (N5's x, y, z).
fn read_n5(root: &Path, dataset: &str) -> (Vec<u8>, Vec<u64>) {
    use n5::prelude::*;
    let n5 = N5Filesystem::open(root).unwrap();
    let attrs = n5.get_dataset_attributes(dataset).unwrap();
    let dims = attrs.get_dimensions().to_vec();
    let block: Vec<u64> = attrs
        .get_block_size()
        .iter()
        .map(|&b| u64::from(b))
        .collect();
    let (w, h, depth) = (dims[0], dims[1], dims[2]);
    let mut out = vec![0u8; (w * h * depth) as usize];
    for gz in 0..depth.div_ceil(block[2]) {
        for gy in 0..h.div_ceil(block[1]) {
            for gx in 0..w.div_ceil(block[0]) {
                let b = n5
                    .read_block::<u8>(dataset, &attrs, [gx, gy, gz].into_iter().collect())
                    .unwrap()
                    .expect("every block written");
                let size = b.get_size();
                let data = b.get_data();
                let mut i = 0;
                for z in 0..u64::from(size[2]) {
                    for y in 0..u64::from(size[1]) {
                        for x in 0..u64::from(size[0]) {
                            let (z, y, x) =
                                (gz * block[2] + z, gy * block[1] + y, gx * block[0] + x);
                            out[((z * h + y) * w + x) as usize] = data[i];
                            i += 1;
                        }
                    }
                }
            }
        }
    }
    (out, dims)
}

/// N5 in gives the Zarr output Zarr in gives; Zarr in to N5 out holds the same uint8 voxels
/// (read with the `n5` crate), with n5-viewer's multiscale attributes; a rerun skips the done
/// blocks, `--status` counts them, and a store of another job, `--zarr-version` and f16 are
/// refused for N5.
#[test]
fn n5_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let AnyStack::U8(stack) = v2_volume(d) else {
        unreachable!()
    };
    // The same voxels as a multiscale N5 group (its s0), in blocks unlike the Zarr chunks.
    write_n5(
        &d.join("vol.n5"),
        "s0",
        [5, 37, 45],
        [2, 16, 20],
        stack.as_slice(),
    );
    write_json(
        &d.join("vol.n5/attributes.json"),
        &json!({
            "n5": "2.1.3", "multiScale": true,
            "pixelResolution": { "unit": "nm", "dimensions": [4.5, 4.0, 40.0] },
        }),
    );
    tiny_model(d, "m.safetensors", Padding::Valid, 4);
    let run = |input: &str, out: &str| -> Value {
        let mut args = JOB.to_vec();
        args[4] = input;
        args.push(out);
        serde_json::from_str(ok_stdout(&unet(&args, d)).trim()).unwrap()
    };
    run("vol.zarr", "z.zarr");
    run("vol.n5", "n.zarr");
    assert_eq!(
        store_state(&d.join("n.zarr")),
        store_state(&d.join("z.zarr"))
    );
    let zattrs = |p: &str| -> Value {
        serde_json::from_slice(&std::fs::read(d.join(p).join(".zattrs")).unwrap()).unwrap()
    };
    assert_eq!(zattrs("n.zarr"), zattrs("z.zarr"));

    let summary = run("vol.zarr", "p.n5");
    assert_eq!(summary["blocks_predicted"], 27, "{summary}");
    // Every figure says where it came from: the CPU and its kernel paths.
    assert!(
        summary["cpu"]["vendor"].is_string() && summary["cpu_kernels"]["forward"].is_string(),
        "{summary}"
    );
    let (got, dims) = read_n5(&d.join("p.n5"), "s0");
    assert_eq!(dims, [45, 37, 5]);
    assert_eq!(got, read_out::<u8>(&d.join("z.zarr")));
    let root: Value =
        serde_json::from_slice(&std::fs::read(d.join("p.n5/attributes.json")).unwrap()).unwrap();
    assert_eq!(root["multiScale"], true);
    assert_eq!(
        root["pixelResolution"],
        json!({ "unit": "nm", "dimensions": [4.5, 4.0, 40.0] })
    );
    let s0: Value =
        serde_json::from_slice(&std::fs::read(d.join("p.n5/s0/attributes.json")).unwrap()).unwrap();
    assert_eq!(s0["blockSize"], json!([20, 16, 2]));
    assert_eq!(s0["compression"]["type"], "gzip");
    // Resumed: every block done is skipped.
    let again = run("vol.zarr", "p.n5");
    assert_eq!(again["blocks_predicted"], 0, "{again}");
    assert_eq!(again["blocks_skipped"], 27);
    let status = ok_stdout(&unet(&["predict", "--out", "p.n5", "--status"], d));
    assert!(status.contains("27 / 27 blocks done"), "{status}");
    // N5 in, and an --out without an extension takes the input's format.
    run("vol.n5", "plain");
    assert_eq!(read_n5(&d.join("plain"), "s0").0, got);

    tiny_model(d, "other.safetensors", Padding::Valid, 5);
    let mut other = JOB.to_vec();
    other[2] = "other.safetensors";
    other.push("p.n5");
    let err = fails(&unet(&other, d));
    assert!(
        err.contains("p.n5") && err.contains("another job") && err.contains("model_sha256"),
        "{err}"
    );
    assert_eq!(read_n5(&d.join("p.n5"), "s0").0, got);
    for (flags, why) in [
        (
            ["--zarr-version", "3"],
            "--zarr-version is for Zarr outputs",
        ),
        (["--dtype", "f16"], "N5 has no float16"),
    ] {
        let mut args = JOB.to_vec();
        args.push("q.n5");
        args.extend(flags);
        let err = fails(&unet(&args, d));
        assert!(err.contains(why), "{err}");
    }
}
