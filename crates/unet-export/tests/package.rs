//! A BioImage Model Zoo package of the committed default model: written, read back to the same
//! checkpoint bytes, its rdf.yaml naming every file with the right SHA-256, and a damaged
//! package refused with the package named.

use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::Device;
use sha2::{Digest, Sha256};
use unet_export::package::{package, read_package_bytes, CheckpointBytes, PackageOptions, Sample};
use unet_model::load_model_from_bytes;

const SIDECAR: &[u8] = include_bytes!("../../../models/default.json");
const WEIGHTS: &[u8] = include_bytes!("../../../models/default.safetensors");

fn default_package() -> (Vec<u8>, CheckpointBytes) {
    let (model, meta) =
        load_model_from_bytes("models/default", SIDECAR, WEIGHTS, &Device::Cpu).unwrap();
    let checkpoint = CheckpointBytes {
        sidecar: SIDECAR.to_vec(),
        weights: WEIGHTS.to_vec(),
    };
    let (h, w) = (96, 96);
    let sample = Sample {
        height: h,
        width: w,
        pixels: (0..h * w)
            .map(|i| (((i % w) as f32 * 0.3).sin() * 90.0 + 128.0) as u8)
            .collect(),
    };
    let opts = PackageOptions {
        test_size: 64,
        ..PackageOptions::default()
    };
    let bytes = package(&model, &meta, &checkpoint, &sample, &opts).unwrap();
    (bytes, checkpoint)
}

fn entry(zip: &[u8], name: &str) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let mut out = Vec::new();
    archive
        .by_name(name)
        .unwrap_or_else(|e| panic!("{name} is not in the package: {e}"))
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_package_reads_back_to_its_checkpoint_and_lists_its_files_with_their_digests() {
    let (bytes, checkpoint) = default_package();
    let back = read_package_bytes(&bytes, Path::new("m.bioimageio.zip")).unwrap();
    assert_eq!(back, checkpoint);

    let rdf = String::from_utf8(entry(&bytes, "rdf.yaml")).unwrap();
    assert!(rdf.contains("format_version"), "{rdf}");
    let archive = zip::ZipArchive::new(Cursor::new(bytes.as_slice())).unwrap();
    let names: Vec<String> = (0..archive.len())
        .map(|i| archive.name_for_index(i).unwrap().unwrap().to_string())
        .collect();
    for name in &names {
        if name == "rdf.yaml" {
            continue;
        }
        // Every file is named in rdf.yaml; those with a digest carry the right one.
        assert!(
            rdf.contains(name.as_str()),
            "{name} is not named in rdf.yaml"
        );
        let digest = format!("{:x}", Sha256::digest(entry(&bytes, name)));
        if name.ends_with(".onnx") || name.ends_with(".npy") || name.ends_with(".safetensors") {
            assert!(
                rdf.contains(&digest),
                "rdf.yaml lacks {name}'s sha256 {digest}"
            );
        }
    }
    assert!(names.iter().any(|n| n.ends_with(".onnx")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".npy")), "{names:?}");
}

#[test]
fn a_damaged_package_is_refused_naming_it() {
    let (bytes, _) = default_package();
    let path = Path::new("damaged.bioimageio.zip");
    // Not a zip at all.
    let err = read_package_bytes(&bytes[..bytes.len() / 3], path).unwrap_err();
    assert!(err.to_string().contains("damaged.bioimageio.zip"), "{err}");
    // A byte flipped in the middle of the archive: a CRC, a digest or the zip reader objects.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    let err = read_package_bytes(&flipped, path).unwrap_err();
    assert!(err.to_string().contains("damaged.bioimageio.zip"), "{err}");
}
