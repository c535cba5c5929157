//! `--precision bf16` through the binary: on a CPU with AVX512-BF16 the runs take the bf16
//! products and say so in their outputs; on one without, each command refuses in one line
//! naming the CPU.

mod common;

use std::process::Output;

use common::{ok, reveal_in, train_tiny, train_tiny_with};
use reveal_tape::kernels::gemm::GemmPrecision;

/// Whether this CPU runs bf16 products (says so on stderr when not: the refusals are tested).
fn bf16_here() -> bool {
    let here = GemmPrecision::Bf16.available();
    if !here {
        eprintln!("this CPU has no AVX512-BF16: testing the refusals instead of the runs");
    }
    here
}

/// Fails unless the command failed with one line naming the flag and what the CPU lacks.
fn refused(o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "ran without AVX512-BF16");
    assert!(
        err.contains("--precision bf16") && err.contains("AVX512-BF16") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn bench_reports_bf16_products() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--case",
        "D",
        "--steps",
        "1",
        "--precision",
        "bf16",
        "--json",
    ];
    let o = reveal_in(dir.path()).args(args).output().unwrap();
    if !bf16_here() {
        return refused(&o);
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["precision"], "bf16");
    assert!(line["recon_step_s"].as_f64().unwrap() > 0.0);
}

/// The reconstruction records its precision, and under bf16 it lands near the f32 run of the
/// same seed but not on it (the products were rounded).
#[test]
fn reconstruct_and_audit_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_tiny(d, 8, "16,16", "m.safetensors");
    // `reveal reconstruct` into `out` with products in `precision`.
    let recon = |precision: &str, out: &str| {
        let args = [
            "reconstruct",
            "--model",
            "m.safetensors",
            "--out",
            out,
            "--iters",
            "100",
        ];
        let more = [
            "--candidates",
            "16",
            "--runs",
            "1",
            "--precision",
            precision,
        ];
        reveal_in(d).args(args).args(more).output().unwrap()
    };
    let o = recon("bf16", "bf16.safetensors");
    if !bf16_here() {
        refused(&o);
        let audit = [
            "audit",
            "--model",
            "m.safetensors",
            "--out",
            "a",
            "--precision",
            "bf16",
        ];
        return refused(&reveal_in(d).args(audit).output().unwrap());
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let load = |p: &str| reveal_recon::files::load_candidates::<f32>(&d.join(p)).unwrap();
    let bf16 = load("bf16.safetensors");
    assert_eq!(bf16.metadata["precision"], "bf16");
    assert!(recon("f32", "f32.safetensors").status.success());
    // A rerun resumes only in the precision the runs were made in.
    let o = recon("bf16", "f32.safetensors");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("products were f32"),
        "{err}"
    );
    let f32 = load("f32.safetensors");
    assert_eq!(f32.metadata["precision"], "f32");
    let (a, b) = (&f32.x, &bf16.x);
    let diff = (a - b).mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
    assert!(diff > 0.0, "bf16 gave the f32 candidates to the bit");
    assert!(a.iter().chain(b.iter()).all(|v| v.is_finite()));

    let audit = |precision: &str| -> serde_json::Value {
        let args = [
            "audit",
            "--model",
            "m.safetensors",
            "--out",
            precision,
            "--iters",
            "100",
            "--candidates",
            "16",
            "--json",
            "--precision",
            precision,
        ];
        serde_json::from_slice(&ok(reveal_in(d).args(args)).stdout).unwrap()
    };
    let note = "matrix products in bf16 (operands rounded to bf16, sums in f32)";
    let has_note = |r: &serde_json::Value| r["notes"].as_array().unwrap().iter().any(|n| n == note);
    assert!(has_note(&audit("bf16")));
    // A model trained with bf16 products says so in its training summary.
    train_tiny_with(d, 4, "8,8", "b.safetensors", &["--precision", "bf16"]);
    let meta = reveal_nn::files::load_model::<f32>(&d.join("b.safetensors"))
        .unwrap()
        .metadata;
    let train: serde_json::Value = serde_json::from_str(&meta["train"]).unwrap();
    assert_eq!(train["precision"], "bf16");
    assert!(!has_note(&audit("f32")));
    let o = reveal_in(d)
        .args([
            "audit",
            "--model",
            "m.safetensors",
            "--out",
            "x",
            "--precision",
            "f64",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the audit runs in f32 (or bf16)"));
}
