//! `unet info` end to end.

use std::path::PathBuf;
use std::process::Command;

/// The real stacks, found by the project's one rule (`UNET_DATA`, else `data/isbi2012/`).
fn isbi_dir() -> PathBuf {
    unet_data::locate_data_dir(None)
        .unwrap_or_else(|e| panic!("the ISBI data is needed for this test: {e}"))
}

fn unet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_unet"))
}

#[test]
fn info_prints_the_isbi_summary() {
    let out = unet()
        .arg("info")
        .arg("--data")
        .arg(isbi_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("30 sections of 512x512"), "{text}");
    assert!(text.contains("train") && text.contains("0-26"), "{text}");
    assert!(
        text.contains("validation") && text.contains("27-29"),
        "{text}"
    );
}

#[test]
fn info_without_data_says_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let out = unet()
        .current_dir(empty.path())
        .env("UNET_DATA", empty.path())
        .arg("info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UNET_DATA") && err.contains("cargo xtask fetch-data"),
        "{err}"
    );
}
