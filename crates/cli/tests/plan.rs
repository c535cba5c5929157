//! `reveal experiment` and `reveal reconstruct --runs N` plan their searches with the same
//! function: for the same model and seed they run the same settings.

mod common;

use common::{ok, reveal_in};

fn run_configs(summary: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(summary).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["config"].clone())
        .collect()
}

#[test]
fn experiment_and_reconstruct_search_the_same_settings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(reveal_in(d).args([
        "experiment",
        "--dataset",
        "synthetic",
        "--out",
        "ex",
        "--per-class",
        "4",
        "--hidden",
        "12,12",
        "--iters",
        "3",
        "--runs",
        "3",
        "--biases",
        "base",
        "--no-control",
        "--seeds",
        "5",
    ]));
    // The experiment's base model of seed 5, reconstructed again by hand with the same seed.
    ok(reveal_in(d).args([
        "reconstruct",
        "--model",
        "ex/models/base-s5.safetensors",
        "--out",
        "r.safetensors",
        "--iters",
        "3",
        "--runs",
        "3",
        "--seed",
        "5",
    ]));
    let from_experiment = run_configs(&d.join("ex/recon/base-s5.runs/summary.json"));
    let from_reconstruct = run_configs(&d.join("r.runs/summary.json"));
    assert_eq!(from_experiment.len(), 3);
    assert_eq!(from_experiment, from_reconstruct);
    // Run 0 is the preset, the others are random draws that differ from it and each other.
    assert_ne!(from_experiment[1]["hyper"], from_experiment[0]["hyper"]);
    assert_ne!(from_experiment[1]["hyper"], from_experiment[2]["hyper"]);
}

/// Before long work the experiment says what it will do and how long that takes; `--dry-run`
/// stops there, and the estimate scales with the budget.
#[test]
fn experiment_prints_its_plan_and_estimate_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["experiment", "--out", "ex", "--dry-run", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_slice(&ok(reveal_in(d).args(&args)).stdout).unwrap()
    };
    let quick = plan(&["--per-class", "4", "--hidden", "24,24", "--iters", "20"]);
    assert!(!d.join("ex").exists(), "a dry run writes nothing");
    assert_eq!(quick["models"], 6);
    assert_eq!(quick["runs_per_model"], 1);
    assert_eq!(quick["iterations_per_run"], 20);
    assert_eq!(quick["candidates"], 16);
    let paper = plan(&["--budget", "paper", "--seeds", "1,2"]);
    assert_eq!(paper["models"], 12);
    assert_eq!(paper["runs_per_model"], 20);
    assert_eq!(paper["iterations_per_run"], 5_000);
    let reference = plan(&["--budget", "paper", "--optimizer", "sgd"]);
    assert_eq!(reference["iterations_per_run"], 50_000);
    assert_eq!(paper["max_epochs"], 1_000_000);
    let secs = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(secs(&paper, "iteration_seconds") > 0.0 && secs(&paper, "epoch_seconds") > 0.0);
    assert!(
        secs(&paper, "reconstruction_seconds") > 1000.0 * secs(&quick, "reconstruction_seconds")
    );
    // Without --dry-run the same plan is the first thing on stderr, then the work runs.
    let o = ok(reveal_in(d).args([
        "experiment",
        "--out",
        "ex",
        "--per-class",
        "4",
        "--hidden",
        "24,24",
        "--iters",
        "20",
        "--biases",
        "base",
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("plan: 2 models (1 seed(s)) × 1 run(s) × 20 iterations"),
        "{err}"
    );
    assert!(err.contains("estimate: "), "{err}");
    assert!(d.join("ex/report.md").is_file());
}
