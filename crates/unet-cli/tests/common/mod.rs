//! What the CLI's integration tests share: running the `unet` binary in a directory and checking
//! how it ended.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `unet ARGS` run in `dir` (no backtraces in its error messages), to its end.
pub fn unet(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unet"))
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that the command succeeded (showing its output if not); returns its stdout.
pub fn ok_stdout(out: &Output) -> String {
    assert_succeeded(out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that the command succeeded (showing its output if not); returns its stderr.
pub fn ok_stderr(out: &Output) -> String {
    assert_succeeded(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the command failed (showing its stdout if not); returns its stderr.
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
