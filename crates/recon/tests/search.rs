//! The search: an interrupted run resumes from its checkpoint to exactly the result of an
//! uninterrupted one; pooling and ranking.

use std::collections::BTreeMap;

use reveal_nn::Mlp;
use reveal_recon::files::load_candidates;
use reveal_recon::search::{run_search, runs_dir, SearchJob, Tick};
use reveal_recon::stats::{spearman, RankBy};
use reveal_recon::{Hyper, RunConfig};

fn model() -> Mlp<f64> {
    let mut m = Mlp::<f64>::init(6, &[8, 8], 3);
    m.weights[0].mapv_inplace(|v| v * 5e3);
    m.biases[0].mapv_inplace(|v| v * 5e3);
    m
}

fn job(out: std::path::PathBuf, runs: usize, keep: usize) -> SearchJob {
    let runs = (0..runs)
        .map(|i| {
            RunConfig::new(
                Hyper {
                    init_scale: 0.1,
                    lr: 0.01 * (i + 1) as f64,
                    lambda_min: 0.4,
                    alpha: 20.0,
                },
                4,
                60,
                i as u64,
            )
        })
        .collect();
    SearchJob {
        runs,
        keep,
        out,
        rank_by: RankBy::Kkt,
        checkpoint_every: 7,
        log_every: 5,
        parallel: 2,
        metadata: BTreeMap::new(),
        shard: None,
    }
}

#[test]
fn interrupted_run_resumes_to_the_identical_result() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let whole = job(dir.path().join("whole.safetensors"), 1, 1);
    run_search(&m.theta(), &whole, None, &|_: Tick| true).unwrap();

    let parts = job(dir.path().join("parts.safetensors"), 1, 1);
    let stop_at_23 = |t: Tick| t.iter != 23;
    let err = run_search(&m.theta(), &parts, None, &stop_at_23)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("interrupted at iteration 23") && err.contains("rerun"),
        "{err}"
    );
    assert!(runs_dir(&parts.out)
        .join("run-0.ckpt.safetensors")
        .is_file());
    let summary = run_search(&m.theta(), &parts, None, &|_: Tick| true).unwrap();
    assert_eq!(summary.runs[0].iters, 60);
    assert!(
        !runs_dir(&parts.out).join("run-0.ckpt.safetensors").exists(),
        "checkpoint removed when done"
    );

    let (a, b) = (
        load_candidates::<f64>(&whole.out).unwrap(),
        load_candidates::<f64>(&parts.out).unwrap(),
    );
    assert_eq!(a.x, b.x, "bit-identical candidates");
    assert_eq!(a.lambda, b.lambda);
    // The curve log has every logged iteration once.
    let log = std::fs::read_to_string(runs_dir(&parts.out).join("run-0.jsonl")).unwrap();
    let iters: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["iter"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(iters.first(), Some(&1));
    assert_eq!(iters.last(), Some(&60));
}

#[test]
fn best_runs_are_pooled_and_finished_runs_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let j = job(dir.path().join("c.safetensors"), 3, 2);
    let s = run_search(&m.theta(), &j, None, &|_: Tick| true).unwrap();
    assert_eq!(s.pooled.len(), 2);
    assert_eq!(s.pooled, s.ranking[..2]);
    let r = &s.runs;
    assert!(r[s.ranking[0]].layer1_residual <= r[s.ranking[1]].layer1_residual);
    assert_eq!(load_candidates::<f64>(&j.out).unwrap().x.nrows(), 8);
    // A second call finds every run finished and does no iteration.
    let again = run_search(&m.theta(), &j, None, &|_: Tick| {
        panic!("no iteration should run")
    })
    .unwrap();
    assert_eq!(again.ranking, s.ranking);
}

#[test]
fn spearman_of_rankings() {
    assert_eq!(spearman(&[0, 1, 2, 3], &[0, 1, 2, 3]), 1.0);
    assert_eq!(spearman(&[0, 1, 2, 3], &[3, 2, 1, 0]), -1.0);
}
