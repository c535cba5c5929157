//! `reveal experiment` end to end on a tiny synthetic configuration: the report has every
//! model's row, and a second run resumes instead of recomputing.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use reveal_data::{Bias, Source, TestSelection};
use reveal_experiment::{run, Budget, ExperimentConfig, Hooks};
use reveal_train::Control;

#[test]
fn tiny_experiment_writes_the_report_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ExperimentConfig::new(
        Source::Synthetic { size: 12 },
        dir.path().to_path_buf(),
        Budget::Demo,
    );
    cfg.per_class = 6;
    cfg.arch = reveal_nn::Arch::mlp(&[24, 24]);
    cfg.recon.plan.iters = 30;
    cfg.biases = vec![Bias::None, Bias::Corner, Bias::Contrast];
    cfg.test = TestSelection::PerClass(20);

    let epochs = Cell::new(0usize);
    let ticks = AtomicUsize::new(0);
    let stages = std::cell::RefCell::new(Vec::new());
    let stage = |name: &str, _: u64, st: reveal_experiment::Stage| {
        stages.borrow_mut().push(format!("{name} {st}"))
    };
    let epoch = |_: &reveal_train::TrainState<f32>| {
        epochs.set(epochs.get() + 1);
        Control::Continue
    };
    let tick = |_: reveal_recon::search::Tick| {
        ticks.fetch_add(1, Ordering::Relaxed);
        true
    };
    let hooks = Hooks {
        stage: &stage,
        epoch: &epoch,
        tick: &tick,
        warn: &|w: &str| panic!("no warning expected: {w}"),
    };
    let results = run(&cfg, &hooks).unwrap();
    assert_eq!(results.len(), 4, "three biases and the control");
    assert!(epochs.get() > 0);
    assert_eq!(ticks.load(Ordering::Relaxed), 4 * 30);
    assert_eq!(
        stages.borrow().len(),
        12,
        "three stages for each of four models"
    );
    assert_eq!(stages.borrow()[3], "M1 training");

    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    for row in [
        "| M_base | none |",
        "| M1 | corner |",
        "| M_contrast | contrast |",
        "| control | random",
    ] {
        assert!(report.contains(row), "missing {row} in\n{report}");
    }
    // Counts of one seed are whole numbers: the recovered column reads "k / n", not "k.0 / n".
    let m1 = report.lines().find(|l| l.starts_with("| M1 |")).unwrap();
    let cells: Vec<&str> = m1.split('|').map(str::trim).collect();
    let recovered = cells[8];
    assert!(
        recovered.ends_with(" / 12")
            && recovered
                .split(" / ")
                .next()
                .unwrap()
                .parse::<usize>()
                .is_ok(),
        "recovered cell {recovered:?} in {m1}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    for f in [
        "accuracy_vs_s.png",
        "accuracy_vs_s.svg",
        "grids/base-s0.png",
        "maps/corner-s0.png",
        "previews/corner.png",
        "models/control-s0.safetensors",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(dir.path().join("accuracy_vs_s.svg")).unwrap();
    assert!(svg.contains("M1 s0"), "the plot labels its points");
    // M1's bias map is checked against its planted square.
    assert!(results[1].trigger.is_some() && results[0].trigger.is_none());

    // Second run: nothing is trained or reconstructed again.
    let mtime = |f: &str| {
        std::fs::metadata(dir.path().join(f))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = (
        mtime("models/base-s0.safetensors"),
        mtime("recon/corner-s0.safetensors"),
    );
    let (e0, t0) = (epochs.get(), ticks.load(Ordering::Relaxed));
    let again = run(&cfg, &hooks).unwrap();
    assert_eq!(
        (epochs.get(), ticks.load(Ordering::Relaxed)),
        (e0, t0),
        "a re-run must not recompute"
    );
    assert_eq!(
        (
            mtime("models/base-s0.safetensors"),
            mtime("recon/corner-s0.safetensors")
        ),
        before
    );
    assert_eq!(again[1].score.summary, results[1].score.summary);

    // With one score removed, only scoring is redone (models and candidates are reused).
    std::fs::remove_file(dir.path().join("scores/corner-s0.json")).unwrap();
    let third = run(&cfg, &hooks).unwrap();
    assert_eq!(ticks.load(Ordering::Relaxed), t0);
    assert_eq!(third[1].score.summary, results[1].score.summary);

    // The same configuration in another folder writes byte-identical files; only wall times
    // (the *.timing.json files and the reports that quote them) differ.
    let other = tempfile::tempdir().unwrap();
    let cfg2 = ExperimentConfig {
        out: other.path().to_path_buf(),
        ..cfg.clone()
    };
    run(&cfg2, &hooks).unwrap();
    let timed = |f: &str| {
        f.ends_with("timing.json")
            || f.starts_with("scores/")
            || f == "report.md"
            || f == "results.json"
    };
    let mut compared = 0;
    for entry in walk(dir.path()) {
        let f = entry
            .strip_prefix(dir.path())
            .unwrap()
            .display()
            .to_string();
        if timed(&f) {
            continue;
        }
        let (a, b) = (
            std::fs::read(&entry).unwrap(),
            std::fs::read(other.path().join(&f)),
        );
        assert!(b.is_ok_and(|b| b == a), "{f} differs between two runs");
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} files compared");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
