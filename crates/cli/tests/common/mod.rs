//! Helpers shared by the binary's integration tests that run several processes in folders.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `reveal` run from `dir` (the files record paths relative to it).
pub fn reveal_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reveal"));
    c.current_dir(dir);
    c
}

/// Runs the command and fails the test, with its stderr, unless it succeeds.
pub fn ok(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Trains a small model on the synthetic set into `dir/out` (fast schedule).
pub fn train_tiny(dir: &Path, per_class: usize, hidden: &str, out: &str) {
    train_tiny_with(dir, per_class, hidden, out, &[]);
}

/// [`train_tiny`] with more flags.
pub fn train_tiny_with(dir: &Path, per_class: usize, hidden: &str, out: &str, extra: &[&str]) {
    let per_class = per_class.to_string();
    ok(reveal_in(dir)
        .args([
            "train",
            "--dataset",
            "synthetic",
            "--per-class",
            &per_class,
            "--hidden",
            hidden,
            "--out",
            out,
        ])
        .args(extra));
}

/// `reveal reconstruct` of `../m.safetensors` (the model [`train_tiny`] wrote into the root of
/// [`two_dirs`]) into `out`, then `extra`.
pub fn reconstruct_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["reconstruct", "--model", "../m.safetensors", "--out", out];
    args.extend_from_slice(extra);
    args
}

/// Two empty folders `a` and `b` under one temporary root, for running the same command twice
/// with the same relative paths.
pub fn two_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    (root, a, b)
}

/// Fails unless the two files hold the same bytes.
pub fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} and {} differ ({} vs {} bytes)",
        a.display(),
        b.display(),
        x.len(),
        y.len()
    );
}
