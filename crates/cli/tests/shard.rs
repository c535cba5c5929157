//! Past one machine: three shards run as separate processes (at the same time, as a job array
//! would), then `reveal pool`, give the same files as one unsharded run with the same seeds.

use std::path::{Path, PathBuf};

mod common;
use common::{ok, reconstruct_args, reveal_in, train_tiny, two_dirs};

/// Runs `args` unsharded in `a`, and as shards 1/3, 2/3, 3/3 in parallel processes plus
/// `reveal pool --out OUT` in `b`.
fn unsharded_and_pooled(a: &Path, b: &Path, args: &[&str], out: &str) {
    ok(reveal_in(a).args(args));
    let children: Vec<_> = (1..=3)
        .map(|i| {
            reveal_in(b)
                .args(args)
                .args(["--shard", &format!("{i}/3")])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.contains("reveal pool --out"),
            "{err}"
        );
    }
    ok(reveal_in(b).args(["pool", "--out", out]));
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The files of `a` (but wall times and reports quoting them) are in `b` with the same bytes.
fn same_files(a: &Path, b: &Path) -> usize {
    let mut n = 0;
    for f in files(a) {
        let name = f.display().to_string();
        let timed = name.ends_with("timing.json")
            || name.starts_with("scores/")
            || name == "report.md"
            || name == "results.json";
        if timed {
            continue;
        }
        let (x, y) = (
            std::fs::read(a.join(&f)).unwrap(),
            std::fs::read(b.join(&f)),
        );
        assert!(y.is_ok_and(|y| y == x), "{name} differs");
        n += 1;
    }
    n
}

#[test]
fn three_shards_of_a_search_pool_to_one_run() {
    let (root, a, b) = two_dirs();
    train_tiny(root.path(), 6, "24,24", "m.safetensors");
    let args = reconstruct_args(
        "c.safetensors",
        &["--runs", "4", "--keep", "2", "--iters", "40", "--seed", "5"],
    );
    unsharded_and_pooled(&a, &b, &args, "c.safetensors");
    let compared = same_files(&a, &b);
    assert_eq!(
        compared,
        1 + 1 + 2 * 4,
        "output, summary, 4 runs × (candidates, log)"
    );
    // Each shard recorded itself; pooling again is a no-op with the same result.
    for i in 1..=3 {
        assert!(b.join(format!("c.runs/shard-{i}-of-3.json")).is_file());
    }
    ok(reveal_in(&b).args(["pool", "--out", "c.safetensors"]));
    same_files(&a, &b);
}

#[test]
fn three_shards_of_an_experiment_pool_to_one_run() {
    let (_root, a, b) = two_dirs();
    let args = [
        "experiment",
        "--dataset",
        "synthetic",
        "--out",
        "ex",
        "--per-class",
        "6",
        "--hidden",
        "24,24",
        "--iters",
        "30",
        "--biases",
        "base,corner,contrast",
    ];
    unsharded_and_pooled(&a, &b, &args, "ex");
    assert!(same_files(&a.join("ex"), &b.join("ex")) >= 20);
    let (ra, rb) = (
        std::fs::read_to_string(a.join("ex/report.md")).unwrap(),
        std::fs::read_to_string(b.join("ex/report.md")).unwrap(),
    );
    // The reports agree but for the wall-time column.
    let rows = |r: &str| -> Vec<String> {
        r.lines()
            .filter(|l| l.starts_with("| M") || l.starts_with("| control"))
            .map(|l| l.rsplitn(3, '|').nth(2).unwrap().to_string())
            .collect()
    };
    assert_eq!(rows(&ra), rows(&rb));
    assert!(rows(&ra).len() >= 4, "{ra}");
}

#[test]
fn pool_refuses_missing_shards() {
    let (root, _a, b) = two_dirs();
    train_tiny(root.path(), 4, "8,8", "m.safetensors");
    ok(reveal_in(&b).args(reconstruct_args(
        "c.safetensors",
        &["--runs", "3", "--iters", "5", "--shard", "2/3"],
    )));
    let o = reveal_in(&b)
        .args(["pool", "--out", "c.safetensors"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("shards 1/3, 3/3 have not run"), "{err}");
    assert!(!b.join("c.safetensors").exists());
    let o = reveal_in(&b)
        .args(reconstruct_args("d.safetensors", &["--shard", "4/3"]))
        .output()
        .unwrap();
    assert!(!o.status.success(), "--shard 4/3 accepted");
    assert!(String::from_utf8_lossy(&o.stderr).contains("I/N"));
}
