//! Architecture invariants of docs/ARCHITECTURE.md, checked on `cargo metadata`.
//!
//! - unet-augment, unet-weights and unet-metrics depend on no candle crate and on no other unet
//!   crate, so a user can take any one of them alone.
//! - Only unet-model and what sits above it (unet-cli, xtask) use candle; unet-data does not.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

fn metadata() -> Value {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--format-version", "1"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Every package a workspace crate pulls in through normal (non-dev, non-build) dependencies.
fn normal_closure(meta: &Value, crate_name: &str) -> BTreeSet<String> {
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let start = names
        .iter()
        .find(|(_, &n)| n == crate_name)
        .map(|(&id, _)| id)
        .unwrap_or_else(|| panic!("{crate_name} is a workspace member"));
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(names[dep_id].to_string()) {
                stack.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn lower_crates_stand_alone() {
    let meta = metadata();
    for name in ["unet-augment", "unet-weights", "unet-metrics", "unet-data"] {
        let deps = normal_closure(&meta, name);
        let candle: Vec<_> = deps.iter().filter(|d| d.starts_with("candle")).collect();
        assert!(
            candle.is_empty(),
            "{name} must not depend on candle, but pulls in {candle:?}"
        );
    }
    for name in ["unet-augment", "unet-weights", "unet-metrics"] {
        let deps = normal_closure(&meta, name);
        let ours: Vec<_> = deps.iter().filter(|d| d.starts_with("unet-")).collect();
        assert!(
            ours.is_empty(),
            "{name} must not depend on other unet crates: {ours:?}"
        );
    }
}

#[test]
fn data_sits_below_model() {
    let meta = metadata();
    let data = normal_closure(&meta, "unet-data");
    assert!(
        !data.contains("unet-model"),
        "unet-data must not depend on unet-model"
    );
    let xtask = normal_closure(&meta, "xtask");
    assert!(
        !xtask.iter().any(|d| d.starts_with("candle")),
        "xtask runs the `unet` binary and must not link candle itself"
    );
    let model = normal_closure(&meta, "unet-model");
    assert!(
        model.contains("candle-core"),
        "unet-model is where candle lives"
    );
    assert!(!model.contains("unet-cli"));
}
