//! Self-contained HTML reports: one file, every picture embedded as a data URI, no scripts and
//! nothing fetched, readable in any browser.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::audit::{AuditReport, MAP_SCALE};
use crate::ModelResult;

/// Standard base64 (RFC 4648) with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An `<img>` of a PNG file in `dir`, embedded, drawn `width` pixels wide without smoothing.
fn image(dir: &Path, file: &str, width: usize, alt: &str) -> Result<String> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(format!(
        r#"<img alt="{}" src="data:image/png;base64,{}" style="width:{width}px;image-rendering:pixelated">"#,
        escape(alt),
        base64(&bytes)
    ))
}

/// Text made safe for HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
.verdict{border:3px solid;padding:1em;margin:1em 0;font-size:1.15em}.bad{border-color:#b00;background:#fff3f3}\
.good{border-color:#070;background:#f3fff3}.scale{display:inline-block;width:200px;height:14px;vertical-align:middle;\
background:linear-gradient(to right,#fff,#b20000);border:1px solid #999}figure{display:inline-block;margin:0 1em 1em 0}";

/// The colour scale of the bias maps.
fn scale_legend() -> String {
    format!(
        r#"<p>Bias map: z of the reconstructions' class difference (each weighted by its λ) beyond that of clean images held out from the training file (sharp or blurred), per pixel over the clean images' standard error, opened by a 2×2 square. <span>0 </span><span class="scale"></span><span> {MAP_SCALE:.0} and above</span></p>"#
    )
}

/// The page of an audit.
pub fn audit_page(r: &AuditReport, dir: &Path) -> Result<String> {
    let mut h = String::new();
    let _ = write!(h, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>reveal audit</title><style>{STYLE}</style></head><body>");
    let _ = write!(h, "<h1>reveal audit: {}</h1>", escape(&r.model));
    let class = if r.verdict.shortcut_suspected {
        "bad"
    } else {
        "good"
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
    let _ = write!(h, "{}", scale_legend());
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let _ = write!(h, "<p>Threshold {:.1}: the largest score of {} maps of random subsets of clean images (largest {:.1}) and of {} null models' reconstructions (largest {:.1}).</p>",
        r.verdict.threshold, r.bias_map.clean_null_scores.len(), max(&r.bias_map.clean_null_scores), r.bias_map.null_model_scores.len(), max(&r.bias_map.null_model_scores));
    let _ = write!(
        h,
        "<h2>Reconstructions</h2>{}",
        image(dir, &r.grid_png, 900, "reconstructions")?
    );
    h.push_str("</body></html>\n");
    Ok(h)
}

/// The page of an experiment: the table, every model's verdict beside its planted truth, and
/// every grid and bias map.
pub fn experiment_page(
    title: &str,
    intro: &str,
    findings: &[String],
    results: &[ModelResult],
    dir: &Path,
) -> Result<String> {
    let mut h = String::new();
    let _ = write!(h, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>", escape(title));
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
                if v.shortcut_suspected {
                    "shortcut suspected"
                } else {
                    "no localised shortcut"
                },
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
    let _ = write!(h, "</table>{}", scale_legend());
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
    h.push_str("</body></html>\n");
    Ok(h)
}
