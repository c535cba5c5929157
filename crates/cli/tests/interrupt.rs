//! Interrupting real runs of the binary: SIGTERM during `reveal train`, SIGINT during
//! `reveal reconstruct`. Each writes a checkpoint and says how to resume; the resumed run ends
//! with output files byte-identical to an uninterrupted run's, even when the newest checkpoint
//! was corrupted in between (the previous one is used, and the user is told).

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{ok, reconstruct_args, reveal_in, same_bytes, train_tiny, two_dirs};

/// Runs `reveal ARGS` in `dir` and fails unless it succeeds.
fn run(dir: &Path, args: &[&str]) -> Output {
    ok(reveal_in(dir).args(args))
}
use std::time::{Duration, Instant};

/// Starts the command, sends `signal` once `ready` holds, and returns what it printed.
fn interrupted(dir: &Path, args: &[&str], signal: &str, ready: impl Fn() -> bool) -> Output {
    let child = reveal_in(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    child.wait_with_output().unwrap()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

#[test]
fn sigterm_during_train_resumes_to_identical_files() {
    let (_root, a, b) = two_dirs();
    let args = [
        "train",
        "--dataset",
        "synthetic",
        "--per-class",
        "40",
        "--hidden",
        "100,100",
        "--schedule",
        "reference",
        "--epochs",
        "3000",
        "--target-loss",
        "1e-12",
        "--checkpoint-every",
        "100",
        "--out",
        "m.safetensors",
    ];
    run(&a, &args);

    let log = b.join("m.train.jsonl");
    let o = interrupted(&b, &args, "-TERM", || lines(&log) >= 350);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("interrupted at epoch") && err.contains("--resume"),
        "{err}"
    );
    let ckpt = b.join("m.ckpt.safetensors");
    let prev = b.join("m.ckpt.safetensors.prev");
    assert!(
        ckpt.exists() && prev.exists(),
        "checkpoint and its predecessor"
    );
    assert!(!b.join("m.safetensors").exists());

    // The newest checkpoint is damaged: the previous one is used, and the user told.
    std::fs::write(&ckpt, b"half a file").unwrap();
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = run(&b, &resume);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("m.ckpt.safetensors") && err.contains("previous checkpoint"),
        "{err}"
    );
    for f in ["m.safetensors", "m.train.jsonl"] {
        same_bytes(&a.join(f), &b.join(f));
    }
    assert!(
        !ckpt.exists() && !prev.exists(),
        "checkpoints removed at the end"
    );
}

#[test]
fn sigint_during_reconstruct_resumes_to_identical_files() {
    let (root, a, b) = two_dirs();
    train_tiny(root.path(), 20, "100,100", "m.safetensors");
    let args = reconstruct_args(
        "c.safetensors",
        &[
            "--iters",
            "1500",
            "--checkpoint-every",
            "100",
            "--log-every",
            "10",
        ],
    );
    run(&a, &args);

    let log = b.join("c.runs").join("run-0.jsonl");
    let o = interrupted(&b, &args, "-INT", || lines(&log) >= 40);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("interrupted at iteration") && err.contains("rerun the same command"),
        "{err}"
    );
    assert!(!b.join("c.safetensors").exists());
    run(&b, &args);
    for f in [
        "c.safetensors",
        "c.runs/run-0.safetensors",
        "c.runs/run-0.jsonl",
        "c.runs/summary.json",
    ] {
        same_bytes(&a.join(f), &b.join(f));
    }
}

/// Same command, same seed, one thread or two: byte-identical model and candidates. (The GEMMs
/// are split by output columns, so every element is summed in the same order either way.)
#[test]
fn thread_count_does_not_change_the_files() {
    let (_root, a, b) = two_dirs();
    for (dir, threads) in [(&a, "1"), (&b, "2")] {
        for args in [
            &[
                "train",
                "--dataset",
                "synthetic",
                "--per-class",
                "20",
                "--hidden",
                "300,300",
                "--out",
                "m.safetensors",
            ][..],
            &[
                "reconstruct",
                "--model",
                "m.safetensors",
                "--out",
                "c.safetensors",
                "--iters",
                "100",
            ][..],
        ] {
            ok(reveal_in(dir).args(args).env("RAYON_NUM_THREADS", threads));
        }
    }
    for f in ["m.safetensors", "c.safetensors", "c.runs/run-0.jsonl"] {
        same_bytes(&a.join(f), &b.join(f));
    }
}
