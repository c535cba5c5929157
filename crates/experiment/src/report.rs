//! The report: `report.md`, `results.json`, and the plot of test accuracy against S
//! (`accuracy_vs_s.png` / `.svg`, the papers' Figures 6 and 7).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use reveal_io::write_atomic;
use reveal_render::plot::{self, Labelled, Scatter};

use reveal_audit::stats::mean_std;

use crate::{ExperimentConfig, ModelResult};

/// "0.123" or "0.123 ± 0.004" over seeds.
/// A count over the seeds: a whole number for one seed, mean ± std with one decimal for more.
fn count_cell(v: &[f64]) -> String {
    cell(v, if v.len() > 1 { 1 } else { 0 })
}

fn cell(v: &[f64], digits: usize) -> String {
    let (m, s) = mean_std(v);
    if v.len() > 1 {
        format!("{m:.digits$} ± {s:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

/// Results grouped by model name, in the order they first appear.
fn by_model(results: &[ModelResult]) -> Vec<(String, Vec<&ModelResult>)> {
    let mut groups: Vec<(String, Vec<&ModelResult>)> = Vec::new();
    for r in results {
        match groups.iter_mut().find(|(n, _)| *n == r.name) {
            Some((_, g)) => g.push(r),
            None => groups.push((r.name.clone(), vec![r])),
        }
    }
    groups
}

/// A number read off a model's result.
type Metric = dyn Fn(&ModelResult) -> f64;

/// The findings of the paper, checked on these results (means over seeds).
pub fn findings(results: &[ModelResult]) -> Vec<String> {
    let groups = by_model(results);
    let stat = |name: &str, f: &Metric| -> Option<f64> {
        groups
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| mean_std(&g.iter().map(|r| f(r)).collect::<Vec<_>>()).0)
    };
    let mut out = Vec::new();
    let trained: Vec<&str> = groups
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "control")
        .collect();
    let metrics: [(&str, &Metric); 4] = [
        ("test accuracy", &|r| r.test_accuracy),
        ("S", &|r| r.score.summary.s),
        ("ρ10", &|r| r.score.summary.rho10),
        ("recovered", &|r| r.score.recovered.unwrap_or(0) as f64),
    ];
    if trained.contains(&"M1") && trained.len() > 1 {
        for (label, f) in metrics {
            let m1 = stat("M1", f).unwrap_or(f64::NAN);
            let lowest = trained
                .iter()
                .all(|&n| n == "M1" || stat(n, f).is_some_and(|v| m1 < v));
            out.push(format!(
                "M1 (corner trigger) has the lowest {label} of the trained models: {} (M1 {})",
                yes_no(lowest),
                number(label, m1)
            ));
        }
    }
    if let Some(base) = stat("M_base", &|r| r.score.summary.s) {
        for n in ["M2", "M3"] {
            if let Some(v) = stat(n, &|r| r.score.summary.s) {
                out.push(format!(
                    "{n} scores at or above M_base in S: {} ({v:.3} vs {base:.3})",
                    yes_no(v >= base)
                ));
            }
        }
    }
    if stat("control", &|r| r.score.summary.s).is_some() {
        for (label, f) in metrics.iter().skip(1) {
            let c = stat("control", f).unwrap_or(f64::NAN);
            let below = trained.iter().all(|&n| stat(n, f).is_some_and(|v| c < v));
            out.push(format!(
                "the null control is below every trained model in {label}: {} (control {})",
                yes_no(below),
                number(label, c)
            ));
        }
    }
    // The bias map's verdicts against what was planted.
    for (name, g) in &groups {
        let judged: Vec<_> = g
            .iter()
            .filter_map(|r| r.verdict.as_ref().map(|v| (r, v)))
            .collect();
        if judged.is_empty() {
            continue;
        }
        let suspected = judged.iter().filter(|(_, v)| v.shortcut_suspected).count();
        let on_square = judged
            .iter()
            .filter(|(r, _)| r.trigger.as_ref().and_then(|t| t.region_overlaps) == Some(true))
            .count();
        let planted = g[0].trigger.is_some();
        out.push(match planted {
            true => format!("{name}: shortcut suspected in {suspected} of {} seed(s), the region on a planted square in {on_square}", judged.len()),
            false => format!("{name} (no localised trigger planted): shortcut suspected in {suspected} of {} seed(s)", judged.len()),
        });
    }
    out
}

/// A metric's value as text: counts without decimals.
fn number(label: &str, v: f64) -> String {
    if label == "recovered" {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Writes report.md, results.json and the plot.
pub fn write(cfg: &ExperimentConfig, results: &[ModelResult]) -> Result<()> {
    let dir = &cfg.out;
    write_atomic(
        &dir.join("results.json"),
        serde_json::to_string_pretty(results)?.as_bytes(),
    )?;
    let figure = accuracy_vs_s(results);
    plot::write(&dir.join("accuracy_vs_s.png"), &figure, (720, 480))?;
    plot::write(&dir.join("accuracy_vs_s.svg"), &figure, (720, 480))?;
    write_atomic(&dir.join("report.md"), markdown(cfg, results)?.as_bytes())?;
    let intro = format!(
        "Data set {}, {} training images per class, seeds {:?}; details in report.md.",
        cfg.source.name(),
        cfg.per_class,
        cfg.seeds
    );
    let title = "reveal: did the models learn the concept or a shortcut?";
    let page = crate::html::experiment_page(title, &intro, &findings(results), results, dir)?;
    write_atomic(&dir.join("report.html"), page.as_bytes())
}

fn markdown(cfg: &ExperimentConfig, results: &[ModelResult]) -> Result<String> {
    let mut md = String::new();
    let seeds: Vec<String> = cfg.seeds.iter().map(|s| s.to_string()).collect();
    let plan = &cfg.recon.plan;
    let first = plan.configs()?[0];
    let _ = writeln!(
        md,
        "# reveal: did the models learn the concept or a shortcut?\n"
    );
    let _ = writeln!(
        md,
        "Data set **{}**, {} training images per class, seeds {}; network {} (and the output layer); training {:?} (target loss {:e}); \
         reconstruction: {} run(s) of {} iterations ({:?}, {:?} rates, λ lr {:.1e}), best {} pooled, first run at init {:.2e}, lr {:.3e}, λ_min {:.3}, α {:.1}.\n",
        cfg.source.name(), cfg.per_class, seeds.join(", "), cfg.arch, cfg.train.schedule, cfg.train.target_loss,
        plan.runs, plan.iters, first.optimizer, first.schedule, first.lambda_lr, cfg.recon.keep,
        first.hyper.init_scale, first.hyper.lr, first.hyper.lambda_min, first.hyper.alpha
    );
    let _ = writeln!(md, "S = mean kornia-SSIM of the best 10 (training image, nearest reconstruction) pairs; ρ10 = mean Pearson correlation of the best 10 pairs; \
        recovered = training images matched better by a reconstruction than by their nearest held-out real image. \
        Baselines: the mean image alone, and as many held-out real images as there are candidates, scored the same way.\n");
    let _ = writeln!(md, "| model | bias | test acc. | S best-10 | S margin | SSIM>0.4 | ρ10 | recovered | S / ρ10 mean image | S / ρ10 held-out | train epochs | recon s |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, g) in by_model(results) {
        let values = |f: &Metric| g.iter().map(|r| f(r)).collect::<Vec<_>>();
        let col = |f: &Metric, d: usize| cell(&values(f), d);
        let count = |f: &Metric| count_cell(&values(f));
        let bias = g[0]
            .bias
            .map_or("random (norms of M_base)".to_string(), |b| {
                b.name().to_string()
            });
        let n = g[0].score.pairs.len();
        let _ =
            writeln!(
            md,
            "| {name} | {bias} | {} | {} | {} | {} | {} | {} / {n} | {} / {} | {} / {} | {} | {} |",
            col(&|r| r.test_accuracy, 3),
            col(&|r| r.score.summary.s, 3),
            col(&|r| r.score.s_margin.unwrap_or(f64::NAN), 3),
            count(&|r| r.score.summary.above_threshold as f64),
            col(&|r| r.score.summary.rho10, 3),
            count(&|r| r.score.recovered.unwrap_or(0) as f64),
            col(&|r| r.score.baseline_mean.map_or(f64::NAN, |b| b.s), 3),
            col(&|r| r.score.baseline_mean.map_or(f64::NAN, |b| b.rho10), 3),
            col(&|r| r.score.baseline_heldout.map_or(f64::NAN, |b| b.s), 3),
            col(&|r| r.score.baseline_heldout.map_or(f64::NAN, |b| b.rho10), 3),
            count(&|r| r.train.as_ref().map_or(0.0, |t| t.epochs as f64)),
            col(&|r| r.recon_seconds, 0),
        );
    }
    let _ = writeln!(md, "\n## Findings\n");
    for f in findings(results) {
        let _ = writeln!(md, "- {f}");
    }
    let _ = writeln!(md, "\n![test accuracy against S](accuracy_vs_s.png)\n");
    let per_class: Vec<_> = results
        .iter()
        .filter_map(|r| r.score.per_class.as_ref().map(|p| (r, p)))
        .collect();
    if let Some((_, first)) = per_class.first() {
        let _ = writeln!(md, "## Recovered per class\n\nTraining images of each class better matched by a reconstruction than by any held-out image (of the class's count).\n");
        let head: Vec<String> = first.iter().map(|c| c.class.to_string()).collect();
        let _ = writeln!(md, "| model | seed | {} |", head.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---|".repeat(head.len()));
        for (r, p) in &per_class {
            let cells: Vec<String> = p
                .iter()
                .map(|c| format!("{} / {}", c.recovered.unwrap_or(0), c.count))
                .collect();
            let _ = writeln!(md, "| {} | {} | {} |", r.name, r.seed, cells.join(" | "));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "## Bias maps\n");
    let _ = writeln!(md, "The map: where the reconstructions' classes differ (the λ-weighted mean of the +1 candidates minus \
        that of the −1 candidates) beyond what the class difference of clean images held out from the training file explains, sharp or blurred, weighed \
        against the clean images' standard error at each pixel, as a robust z over the image, opened by two-pixel segments (see \
        `crates/audit/src/biasmap.rs`). Its best window (k×k squares, \
        k = 2…6, and one-pixel bars) is held against the best windows of {} maps made from random subsets of the clean images, as many per class as \
        the training set: above all of them, a shortcut is suspected there. Checked against the planted squares: the region's \
        overlap, and the precision of the top-K map pixels (K = trigger area) against chance.\n", reveal_audit::verdict::CLEAN_DRAWS);
    let _ = writeln!(
        md,
        "| model | seed | verdict | region (rows, cols) | score / threshold | precision | chance | squares hit | region on a square | map |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let (k, p, c, hit, on) = match &r.trigger {
            Some(t) => (
                t.trigger_pixels,
                format!("{:.2}", t.precision),
                format!("{:.3}", t.chance),
                format!("{} / {}", t.squares_hit, t.squares),
                t.region_overlaps
                    .map_or("-".into(), |o| yes_no(o).to_string()),
            ),
            None => (0, "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = k;
        let (verdict, region, score) = match &r.verdict {
            Some(v) => (
                v.label(),
                v.region.map_or("-".into(), |[r0, c0, r1, c1]| {
                    format!("{r0}–{r1}, {c0}–{c1}")
                }),
                format!("{:.1} / {:.1}", v.score, v.threshold),
            ),
            None => ("-", "-".into(), "-".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {verdict} | {region} | {score} | {p} | {c} | {hit} | {on} | ![]({}) |",
            r.name, r.seed, r.files.bias_map
        );
    }
    let _ = writeln!(
        md,
        "\n## Grids (best 30 pairs: odd rows reconstructions, even rows their training images)\n"
    );
    let mut previews = BTreeMap::new();
    for r in results {
        let _ = writeln!(
            md,
            "### {} (seed {})\n\n![]({})\n",
            r.name, r.seed, r.files.grid
        );
        if let Some(rows) = &r.files.class_grid {
            let _ = writeln!(md, "One row per class:\n\n![]({rows})\n");
        }
        if let Some(b) = r.bias {
            previews.insert(
                b.name(),
                if b == reveal_data::Bias::None {
                    "base"
                } else {
                    b.name()
                },
            );
        }
    }
    let _ = writeln!(md, "## Training sets\n");
    for (b, f) in previews {
        let _ = writeln!(md, "- {b}: ![](previews/{f}.png)");
    }
    Ok(md)
}

/// Test accuracy against S, one labelled point per model and seed (red: trained on biased data).
fn accuracy_vs_s(results: &[ModelResult]) -> Scatter {
    Scatter {
        title: "test accuracy against S".into(),
        x_desc: "S (kornia SSIM, best 10)".into(),
        y_desc: "test accuracy".into(),
        y_range: (0.4, 1.0),
        points: results
            .iter()
            .map(|r| Labelled {
                at: (r.score.summary.s, r.test_accuracy),
                label: format!("{} s{}", r.name, r.seed),
                marked: r.bias.is_some(),
            })
            .collect(),
    }
}
