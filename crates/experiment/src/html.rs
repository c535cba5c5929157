//! The experiment's page: one self-contained HTML file built from its finished results.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use reveal_audit::verdict::{MAP_LEGEND, MAP_SCALE};
use reveal_render::html::{escape, head, image, scale_legend, TAIL};

use crate::ModelResult;

/// The page of an experiment: the table, every model's verdict beside its planted truth, and
/// every grid and bias map.
pub fn experiment_page(
    title: &str,
    intro: &str,
    findings: &[String],
    results: &[ModelResult],
    dir: &Path,
) -> Result<String> {
    let mut h = head(title);
    let _ = write!(
        h,
        "<h1>{}</h1><p>{}</p><h2>Findings</h2><ul>",
        escape(title),
        escape(intro)
    );
    for f in findings {
        let _ = write!(h, "<li>{}</li>", escape(f));
    }
    h.push_str("</ul><h2>Models</h2>");
    let _ = write!(h, "<table><tr><th>model</th><th>seed</th><th>planted</th><th>verdict</th><th>region</th><th>score / threshold</th><th>precision</th><th>test acc.</th><th>S</th><th>ρ10</th><th>recovered</th></tr>");
    for r in results {
        let planted = r
            .bias
            .map_or("none (random model)".to_string(), |b| b.name().to_string());
        let (verdict, region, score) = match &r.verdict {
            Some(v) => (
                v.label(),
                v.region.map_or("–".into(), |[a, b, c, d]| {
                    format!("rows {a}–{c}, cols {b}–{d}")
                }),
                format!("{:.1} / {:.1}", v.score, v.threshold),
            ),
            None => ("–", "–".into(), "–".into()),
        };
        let precision = r.trigger.as_ref().map_or("–".into(), |t| {
            format!("{:.2} (chance {:.2})", t.precision, t.chance)
        });
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{verdict}</td><td>{region}</td><td>{score}</td><td>{precision}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{} / {}</td></tr>",
            escape(&r.name), r.seed, escape(&planted), r.test_accuracy, r.score.summary.s, r.score.summary.rho10, r.score.recovered.unwrap_or(0), r.score.pairs.len());
    }
    h.push_str("</table>");
    h.push_str(&scale_legend(MAP_LEGEND, MAP_SCALE));
    if dir.join("accuracy_vs_s.png").exists() {
        let _ = write!(
            h,
            "<h2>Test accuracy against S</h2>{}",
            image(dir, "accuracy_vs_s.png", 600, "test accuracy against S")?
        );
    }
    for r in results {
        let _ = write!(h, "<h2>{} (seed {})</h2>", escape(&r.name), r.seed);
        let _ = write!(
            h,
            "<figure>{}<figcaption>bias map</figcaption></figure>",
            image(dir, &r.files.bias_map, 224, "bias map")?
        );
        let _ = write!(h, "<figure>{}<figcaption>best pairs: reconstructions above their training images</figcaption></figure>", image(dir, &r.files.grid, 700, "pairs")?);
        if let Some(rows) = &r.files.class_grid {
            let _ = write!(h, "<figure>{}<figcaption>reconstructions, one row per class (best matched first)</figcaption></figure>", image(dir, rows, 700, "one row per class")?);
        }
    }
    h.push_str(TAIL);
    Ok(h)
}
