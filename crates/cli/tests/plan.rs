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
