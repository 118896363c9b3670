//! Mutation fuzzing of the checkpoint reader: mutated sidecars with valid weights, and mutated
//! weights files with a sidecar that records their size and checksum (so the safetensors parser
//! itself sees them) load or give a typed error, never a panic, within an allocation bound.
//! `UNET_FUZZ_CASES=N` sets the mutants per target; `tests/bad/fuzz/` holds inputs that once
//! failed.

use std::path::Path;

use candle_core::Device;
use unet_data::fuzz::{self, CountingAllocator};
use unet_model::{load_model_from_bytes, save_checkpoint, Normalisation, UNet, UNetConfig};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What one input may allocate: the tiny net many times over, far below a damaged header's
/// claims.
const MAX_BYTES: usize = 64 << 20;

/// FNV-1a 64, as the sidecar records it (an independent copy of the checkpoint's checksum).
fn fnv1a64(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A tiny checkpoint's sidecar and weights bytes.
fn tiny_checkpoint(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let cfg = UNetConfig {
        depth: 2,
        base_width: 2,
        ..UNetConfig::small()
    };
    let model = UNet::seeded(&cfg, 3, &Device::Cpu).unwrap();
    let path = dir.join("m.safetensors");
    let normalisation = Some(Normalisation::dataset(0.5, 0.2).unwrap());
    let metrics = serde_json::json!({"record": {"epoch": 1}});
    save_checkpoint(&path, &model, 1, normalisation, metrics, None).unwrap();
    (
        std::fs::read(path.with_extension("json")).unwrap(),
        std::fs::read(&path).unwrap(),
    )
}

/// The sidecar with its weights record set to `weights`' size and checksum.
fn sidecar_for(sidecar: &[u8], weights: &[u8]) -> Vec<u8> {
    let mut meta: serde_json::Value = serde_json::from_slice(sidecar).unwrap();
    meta["weights"]["bytes"] = weights.len().into();
    meta["weights"]["fnv1a64"] = fnv1a64(weights).into();
    serde_json::to_vec(&meta).unwrap()
}

#[test]
fn damaged_sidecars_and_weights_load_or_give_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, weights) = tiny_checkpoint(dir.path());
    let cases = fuzz::cases(800);
    let cpu = Device::Cpu;
    let mut sidecars = vec![sidecar.clone()];
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad/fuzz");
    sidecars.extend(fuzz::files_in(&bad));
    fuzz::run("sidecar", &sidecars, cases, 11, MAX_BYTES, |s| {
        load_model_from_bytes("fuzz", s, &weights, &cpu).map(|_| ())
    })
    .assert_clean();
    fuzz::run(
        "weights",
        std::slice::from_ref(&weights),
        cases,
        12,
        MAX_BYTES,
        |w| load_model_from_bytes("fuzz", &sidecar_for(&sidecar, w), w, &cpu).map(|_| ()),
    )
    .assert_clean();
}

#[test]
fn a_sidecar_describing_a_net_larger_than_its_weights_is_refused_before_building_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, weights) = tiny_checkpoint(dir.path());
    let mut meta: serde_json::Value = serde_json::from_slice(&sidecar).unwrap();
    // The widest net the config allows: about 2.4 G parameters, 9.7 GB as f32.
    meta["config"]["depth"] = 5.into();
    meta["config"]["base_width"] = 1024.into();
    let text = serde_json::to_vec(&meta).unwrap();
    let err = load_model_from_bytes("big", &text, &weights, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("big.json")
            && err.contains("more than the")
            && err.contains("bytes its weights file holds"),
        "{err}"
    );
}
