//! Architecture invariants of docs/ARCHITECTURE.md, checked on `cargo metadata`.
//!
//! - The layers: `unet-cli`, `unet-py`, `xtask` -> `unet-train`, `unet-export` -> `unet-model` -> `unet-data`, with
//!   `unet-augment`, `unet-weights` and `unet-metrics` beside `unet-data` at the bottom. Arrows
//!   point down only; `unet-model` uses no unet crate but `unet-data`.
//! - unet-augment, unet-weights and unet-metrics depend on no candle crate and on no other unet
//!   crate, so a user can take any one of them alone.
//! - Only unet-model and what sits above it (unet-train, unet-export, unet-cli, unet-py) use candle; unet-data and
//!   xtask do not.

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

/// The package whose `key` (`name` or `id`) is `value`.
fn package<'a>(meta: &'a Value, key: &str, value: &str) -> &'a Value {
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[key] == value)
        .unwrap_or_else(|| panic!("no package with {key} {value}"))
}

/// The direct normal dependencies of a workspace crate.
fn direct_deps(meta: &Value, crate_name: &str) -> BTreeSet<String> {
    package(meta, "name", crate_name)["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
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

/// Each workspace crate's layer (0 is the bottom) and the unet crates it may use directly.
const LAYERS: [(&str, usize, &[&str]); 10] = [
    ("unet-augment", 0, &[]),
    ("unet-weights", 0, &[]),
    ("unet-metrics", 0, &[]),
    ("unet-data", 0, &[]),
    ("unet-model", 1, &["unet-data"]),
    (
        "unet-train",
        2,
        &[
            "unet-model",
            "unet-data",
            "unet-augment",
            "unet-weights",
            "unet-metrics",
        ],
    ),
    ("unet-export", 2, &["unet-model", "unet-data"]),
    (
        "unet-cli",
        3,
        &[
            "unet-train",
            "unet-export",
            "unet-model",
            "unet-data",
            "unet-augment",
            "unet-weights",
            "unet-metrics",
        ],
    ),
    (
        "unet-py",
        3,
        &[
            "unet-export",
            "unet-model",
            "unet-augment",
            "unet-weights",
            "unet-metrics",
        ],
    ),
    ("xtask", 3, &["unet-data", "unet-augment", "unet-weights"]),
];

#[test]
fn every_crate_uses_only_the_layers_below_it() {
    let meta = metadata();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            package(&meta, "id", id.as_str().unwrap())["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let placed: BTreeSet<String> = LAYERS.iter().map(|(n, _, _)| n.to_string()).collect();
    assert_eq!(
        members, placed,
        "every workspace crate has a place in LAYERS (and ARCHITECTURE.md)"
    );
    let layer: HashMap<&str, usize> = LAYERS.iter().map(|&(n, l, _)| (n, l)).collect();
    for (name, level, allowed) in LAYERS {
        for dep in direct_deps(&meta, name) {
            let Some(&dep_level) = layer.get(dep.as_str()) else {
                continue;
            };
            assert!(
                allowed.contains(&dep.as_str()),
                "{name} must not depend on {dep} (allowed: {allowed:?})"
            );
            assert!(
                dep_level < level,
                "{name} (layer {level}) depends on {dep} (layer {dep_level}): arrows point down"
            );
        }
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
    assert!(!model.contains("unet-cli") && !model.contains("unet-train"));
    for unwanted in ["unet-augment", "unet-weights", "unet-metrics"] {
        assert!(
            !model.contains(unwanted),
            "unet-model must not pull in {unwanted}: training code belongs in unet-train"
        );
    }
}
