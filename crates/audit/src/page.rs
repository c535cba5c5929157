//! The audit's page: one self-contained HTML file built from the finished report.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use reveal_io::write_atomic;
use reveal_render::html::{escape, head, image, scale_legend, TAIL};

use crate::verdict::{MAP_LEGEND, MAP_SCALE};
use crate::workflow::AuditReport;

/// Writes `report.html` of a finished audit into `dir` (where its pictures are), atomically.
pub fn write(r: &AuditReport, dir: &Path) -> Result<()> {
    write_atomic(&dir.join("report.html"), page(r, dir)?.as_bytes())
}

/// The page of an audit.
pub fn page(r: &AuditReport, dir: &Path) -> Result<String> {
    let mut h = head("reveal audit");
    let _ = write!(h, "<h1>reveal audit: {}</h1>", escape(&r.model));
    let class = match (r.verdict.shortcut_suspected, r.verdict.inconclusive) {
        (true, _) => "bad",
        (false, true) => "unsure",
        (false, false) => "good",
    };
    let _ = write!(
        h,
        r#"<div class="verdict {class}">{}</div>"#,
        escape(&r.verdict.text)
    );
    let _ = write!(
        h,
        "<p>Data set {}, images {:?} (C, H, W), budget {:?}, {:.0} s.</p>",
        escape(&r.data_set),
        r.shape,
        r.budget,
        r.seconds
    );
    if let Some(k) = r.verdict.kkt_residual {
        // With the weights before training the reconstruction fitted the step W1 − W1₀.
        let w1 = match r.init {
            Some(_) => "(W1 − W1<sub>0</sub>)",
            None => "W1",
        };
        let _ = write!(
            h,
            "<p>How near the reconstruction came to a KKT point of the model: first-layer residual ‖{w1} − ∇<sub>W1</sub>Φ‖/‖{w1}‖ = {:.3}, against {:.3} for the null models (0 is an exact KKT point; above {:.0} % of the null's, a verdict of no shortcut is inconclusive).</p>",
            k.value,
            k.null,
            100.0 * crate::verdict::KKT_TRUST
        );
    }
    for n in &r.notes {
        let _ = write!(h, "<p><em>Note: {}</em></p>", escape(n));
    }
    let _ = write!(h, "<h2>Evidence against the null models</h2><table><tr><th>figure</th><th>this model</th><th>null models</th><th>z</th></tr>");
    for (name, f) in &r.evidence {
        let z = f.z.map_or("–".to_string(), |z| format!("{z:.1}"));
        let digits = if name == "recovered" { 0 } else { 3 };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.digits$}</td><td>{:.digits$}</td><td>{z}</td></tr>",
            escape(name),
            f.value,
            f.null
        );
    }
    let _ = write!(h, "</table><p>realism: each reconstruction's correlation with its nearest clean image; S, ρ10, recovered: against the training set, as in the paper.</p>");
    let _ = write!(h, "<h2>Where its classes differ</h2>");
    let side = 280;
    let _ = write!(h, "<figure>{}<figcaption>bias map; best window rows {}–{}, columns {}–{}, score {:.1}</figcaption></figure>",
        image(dir, &r.bias_map.map_png, side, "bias map")?,
        r.bias_map.hotspot.region[0], r.bias_map.hotspot.region[2], r.bias_map.hotspot.region[1], r.bias_map.hotspot.region[3], r.bias_map.hotspot.score);
    h.push_str(&scale_legend(MAP_LEGEND, MAP_SCALE));
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let _ = write!(h, "<p>Threshold {:.1}: the largest score of {} maps of random subsets of clean images (largest {:.1}) and of {} null models' reconstructions (largest {:.1}).</p>",
        r.verdict.threshold, r.bias_map.clean_null_scores.len(), max(&r.bias_map.clean_null_scores), r.bias_map.null_model_scores.len(), max(&r.bias_map.null_model_scores));
    if let Some(c) = &r.bias_map.consistency {
        let of = c
            .class
            .map_or(String::new(), |k| format!(" (class {k} against the rest)"));
        let _ = write!(h, "<h2>A pattern spread over the image?</h2><figure>{}<figcaption>what the reconstructions' classes share beyond the concept{of}: grey 0, light positive, dark negative</figcaption></figure>",
            image(dir, crate::workflow::PATTERN_PNG, 140, "pattern")?);
        let _ = write!(h, "<p>ρ_half {:.2}: how much of that pattern two random halves of the reconstructions share (1: all of it). Threshold {:.2}: the largest of {} random subsets of clean images reconstructed faithfully with these candidates' make-up (which images come back how often, with which λ; largest {:.2}) and of {} null models' reconstructions (largest {:.2}). Below {:.2}, the largest for the same subsets given back evenly, no pattern shows; in between the audit cannot tell.</p>",
            c.value, c.threshold(), c.clean.len(), max(&c.clean), c.null_models.len(), max(&c.null_models), max(&c.clean_even));
    }
    let _ = write!(
        h,
        "<h2>Reconstructions</h2>{}",
        image(dir, &r.grid_png, 900, "reconstructions")?
    );
    h.push_str(TAIL);
    Ok(h)
}
