//! The audit of one model, trained by reveal or elsewhere: reconstruct its training samples,
//! set every figure beside the same figure of null models (random models with its layer
//! norms), map where its classes differ beyond what clean images of the task explain, and say
//! whether a compact shortcut shows.
//!
//! Every step writes its result into the output folder and is skipped when it is there, so
//! rerunning the same command finishes an interrupted audit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::{Array1, Array2, Axis};
use reveal_data::{prepare, DataSpec, Prepared};
use reveal_io::write_atomic;
use reveal_nn::files::{load_model, load_model_with, save_model, LayerNames};
use reveal_nn::Mlp;
use reveal_recon::files::load_candidates;
use reveal_recon::plan::Plan;
use reveal_recon::search::{run_search, SearchJob, Tick};
use reveal_recon::stats::RankBy;
use reveal_score::score::{pairs, to_pixels};
use reveal_ssim::Ssim;
use serde::{Deserialize, Serialize};

use crate::biasmap::{self, Hotspot};
use crate::scoring::{model_data_spec, score_candidates};
use crate::{control, grid};

/// How much compute an audit spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditBudget {
    /// One reconstruction run, one null model.
    Quick,
    /// Two runs pooled, three null models.
    Standard,
}

impl AuditBudget {
    /// (reconstruction runs, null models).
    pub fn sizes(self) -> (usize, usize) {
        match self {
            AuditBudget::Quick => (1, 1),
            AuditBudget::Standard => (2, 3),
        }
    }
}

/// What to audit and against what.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub model: PathBuf,
    pub layers: LayerNames,
    /// The task's data: its held-out split is the clean reference. Used when the model's
    /// metadata does not name its data set.
    pub data: Option<DataSpec>,
    /// Whether `data`'s training selection is the model's training set (always so when the
    /// metadata names it): then S, ρ10 and the recovered count are computed too.
    pub train_known: bool,
    pub data_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub budget: AuditBudget,
    /// Candidates per run (default: twice the training set, or 200 when unknown).
    pub candidates: Option<usize>,
    /// Iterations per run (default: the default plan's).
    pub iters: Option<usize>,
    pub seed: u64,
}

/// One figure of the evidence, beside the null models'.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    /// The mean over the null models.
    pub null: f64,
    /// Welch's t between the audited model's items (its candidates, or its best ten pairs)
    /// and the null models' pooled items: how many standard errors the value lies above
    /// (none for a count).
    pub z: Option<f64>,
}

/// What the audit concludes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub shortcut_suspected: bool,
    /// The most compact spot of the bias map, [r0, c0, r1, c1] inclusive, when suspected.
    pub region: Option<[usize; 4]>,
    /// The spot's score and the threshold it is held against.
    pub score: f64,
    pub threshold: f64,
    /// Whether the reconstructions resemble real images more than the null models' do.
    pub concept_evidence: bool,
    /// One sentence for the top of the report.
    pub text: String,
}

/// The bias map and what calibrated it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BiasMapResult {
    /// (row, col), strongest first.
    pub top_pixels: Vec<[usize; 2]>,
    pub hotspot: Hotspot,
    /// Hotspot scores of maps with no shortcut: random subsets of clean images, then the null
    /// models' reconstructions.
    pub clean_null_scores: Vec<f64>,
    pub null_model_scores: Vec<f64>,
    pub map_png: String,
}

/// The audit's result (`results.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditReport {
    pub model: String,
    pub data_set: String,
    pub shape: (usize, usize, usize),
    pub budget: AuditBudget,
    pub verdict: Verdict,
    /// Each figure beside its null value: `realism_rho10` (best ten candidates' correlation
    /// with their nearest clean image), `realism_mean`, and with the training set `s`, `rho10`,
    /// `recovered`.
    pub evidence: BTreeMap<String, Figure>,
    pub bias_map: BiasMapResult,
    /// What the audit assumed, for the report (e.g. the mean it used).
    pub notes: Vec<String>,
    pub grid_png: String,
    pub seconds: f64,
}

/// Loads the model and its data: the clean reference (held-out split), and the training set
/// when known. Fails before any work on a model that does not fit the data.
fn load(cfg: &AuditConfig) -> Result<(Mlp<f32>, Prepared, Vec<String>, bool)> {
    let file = load_model_with::<f32>(&cfg.model, &cfg.layers)?;
    let mut notes = Vec::new();
    let (spec, train_known) = match model_data_spec(&cfg.model, &file.metadata) {
        Ok(spec) => (spec, true),
        Err(_) => match &cfg.data {
            Some(spec) => (spec.clone(), cfg.train_known),
            None => bail!(
                "{}: the model names no data set; pass the task's data flags (--dataset mnist|cifar10 [--task …] or --folder DIR --class0 … --class1 …)",
                cfg.model.display()
            ),
        },
    };
    let mut data = prepare(&spec, cfg.data_dir.as_deref())?;
    let d = file.mlp.input_dim();
    if data.test.x.ncols() != d {
        bail!(
            "{}: the model takes {d} inputs but the images of {} have {} values ({:?})",
            cfg.model.display(),
            spec.source.name(),
            data.test.x.ncols(),
            data.shape
        );
    }
    crate::scoring::check_outputs(file.mlp.outputs(), &data, &cfg.model)?;
    match &file.mean {
        Some(m) => data.mean = m.row(0).to_owned(),
        None if !train_known => {
            data.mean = data.test.pixels.mean_axis(Axis(0)).expect("clean images");
            notes.push("the model file holds no data.mean: the mean of the clean images was used to centre them".into());
        }
        None => {
            notes.push("the model file holds no data.mean: its training set's mean was used".into())
        }
    }
    data.test.x = &data.test.pixels - &data.mean;
    data.reference.x = &data.reference.pixels - &data.mean;
    if train_known {
        data.train.x = &data.train.pixels - &data.mean;
    } else {
        notes.push("the training set is unknown: no S, ρ10 or recovered count (pass --train-selection to give it)".into());
    }
    Ok((file.mlp, data, notes, train_known))
}

/// Reconstructs from `model` into `out` (resumable), with the default plan.
fn reconstruct(
    cfg: &AuditConfig,
    model: &Mlp<f32>,
    data: &Prepared,
    out: &Path,
    runs: usize,
    m: usize,
    tick: &(dyn Fn(Tick) -> bool + Sync),
) -> Result<Candidates> {
    if !out.exists() {
        let default = Plan::new(Some(&data.spec.source), m, cfg.seed);
        let plan = Plan {
            runs,
            iters: cfg.iters.unwrap_or(default.iters),
            ..default
        };
        let job = SearchJob {
            runs: plan.configs()?,
            keep: runs,
            out: out.to_path_buf(),
            rank_by: RankBy::Kkt,
            checkpoint_every: 500,
            log_every: 100,
            parallel: 1,
            metadata: BTreeMap::new(),
            shard: None,
        };
        run_search(model, &job, None, tick)?;
    }
    let c = load_candidates::<f32>(out)?;
    Ok((
        c.x,
        c.y.iter().copied().collect(),
        biasmap::weights(&c.lambda),
    ))
}

/// Each candidate's correlation with its nearest clean image (NCC), best first.
fn realism(x: &Array2<f32>, data: &Prepared) -> Vec<f64> {
    let recon = to_pixels(x, data.mean.view());
    let clean = &data.test.pixels;
    let mut rho: Vec<f64> = pairs(&recon, clean, data.shape, &Ssim::kornia3())
        .iter()
        .map(|p| p.rho)
        .collect();
    rho.sort_by(|a, b| b.total_cmp(a));
    rho
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Welch's t of a's mean over b's.
fn welch(a: &[f64], b: &[f64]) -> f64 {
    let var = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64
    };
    let se = (var(a) / a.len().max(1) as f64 + var(b) / b.len().max(1) as f64).sqrt();
    (mean(a) - mean(b)) / se.max(1e-12)
}

/// A figure from the audited model's items and the null models' items (`top` best of each).
fn figure(value_items: &[f64], null_items: &[Vec<f64>], top: usize) -> Figure {
    let best = |v: &[f64]| v.iter().take(top).copied().collect::<Vec<_>>();
    let pooled: Vec<f64> = null_items.iter().flat_map(|v| best(v)).collect();
    Figure {
        value: mean(&best(value_items)),
        null: mean(
            &null_items
                .iter()
                .map(|v| mean(&best(v)))
                .collect::<Vec<_>>(),
        ),
        z: Some(welch(&best(value_items), &pooled)),
    }
}

/// The verdict of a bias map's hotspot against its calibration, with the realism figure
/// against the null models when there is one; `class` names the class whose map against the
/// rest it is (multiclass models, see [`model_bias_map`]).
pub fn verdict(
    hotspot: Hotspot,
    threshold: f64,
    concept: Option<&Figure>,
    class: Option<usize>,
) -> Verdict {
    let suspected = hotspot.score > threshold;
    let [r0, c0, r1, c1] = hotspot.region;
    let z = concept.and_then(|c| c.z).unwrap_or(0.0);
    let concept_evidence = z > 3.0;
    let learned = concept.map_or(String::new(), |c| {
        let how = if concept_evidence { "more" } else { "no more" };
        format!(
            "; its reconstructions resemble real images {how} than a random model's do (realism ρ10 {:.3} against {:.3}, z {z:.1})",
            c.value, c.null
        )
    });
    let of_class = class.map_or(String::new(), |c| format!("Class {c} against the rest: "));
    let text = match suspected {
        true => format!(
            "{of_class}Shortcut suspected at rows {r0}–{r1}, columns {c0}–{c1} (score {:.1}, threshold {:.1}){learned}.",
            hotspot.score, threshold
        ),
        false => format!(
            "{of_class}No localised shortcut found (best window {:.1} < threshold {:.1}){learned}.",
            hotspot.score, threshold
        ),
    };
    Verdict {
        shortcut_suspected: suspected,
        region: suspected.then_some(hotspot.region),
        score: hotspot.score,
        threshold,
        concept_evidence,
        text,
    }
}

/// Draws of clean class-difference maps for the threshold.
pub const CLEAN_DRAWS: usize = 40;

/// Candidates for a bias map: images, labels (±1, or class indices) and weights (see
/// [`biasmap::weights`]).
pub type Candidates = (Array2<f32>, Vec<f32>, Vec<f64>);

/// The bias map of candidates (labels ±1) against the clean images, and its calibration from
/// [`CLEAN_DRAWS`] clean maps and the null models' candidates.
pub fn bias_map(
    (x, y, w): (&Array2<f32>, &[f32], &[f64]),
    nulls: &[Candidates],
    data: &Prepared,
    train_per_class: usize,
    seed: u64,
) -> (Array1<f64>, Hotspot, Vec<f64>, Vec<f64>) {
    let clean_y: Vec<f32> = data.reference.y.iter().copied().collect();
    let nulls: Vec<_> = nulls
        .iter()
        .map(|(x, y, w)| (x, y.clone(), w.as_slice()))
        .collect();
    let clean_maps = (train_per_class, CLEAN_DRAWS);
    bias_map_with((x, y, w), &nulls, &clean_y, data, clean_maps, seed)
}

/// [`bias_map`] with the clean images' labels ±1 given (`clean_y`, for `data.reference.x`) and
/// calibrated from `draws` clean maps of `per_class` images per class.
fn bias_map_with(
    (x, y, w): (&Array2<f32>, &[f32], &[f64]),
    nulls: &[(&Array2<f32>, Vec<f32>, &[f64])],
    clean_y: &[f32],
    data: &Prepared,
    (per_class, draws): (usize, usize),
    seed: u64,
) -> (Array1<f64>, Hotspot, Vec<f64>, Vec<f64>) {
    let reference = biasmap::Reference::new(&data.reference.x, clean_y, data.shape);
    let (_, h, wd) = data.shape;
    let map_of =
        |x: &Array2<f32>, y: &[f32], w: &[f64]| reference.map(&biasmap::class_difference(x, y, w));
    let z = map_of(x, y, w);
    let hotspot = biasmap::hotspot(&z, h, wd);
    let clean = biasmap::clean_null_scores(
        &data.reference.x,
        clean_y,
        &reference,
        per_class,
        draws,
        seed,
    );
    let null_models = nulls
        .iter()
        .map(|(x, y, w)| biasmap::hotspot(&map_of(x, y, w), h, wd).score)
        .collect();
    (z, hotspot, clean, null_models)
}

/// The bias map of a model's candidates (labels `y` as the model takes them) and its
/// calibration: [`bias_map`] for one output; for C outputs, for each class c the map of c against
/// the rest (labels +1 for c, −1 for the others, for the candidates, the null models' candidates
/// and the clean images alike) with its own threshold, and the class whose hotspot stands highest
/// above its threshold (score / threshold) is returned with its map, hotspot, clean-map and
/// null-model scores. C maps are searched, so each class's clean threshold is the largest of
/// C·[`CLEAN_DRAWS`] clean maps (not [`CLEAN_DRAWS`]): the chance that any of the C exceeds its
/// own stays that of one binary map (a union bound).
pub fn model_bias_map(
    (x, y, w): (&Array2<f32>, &[f32], &[f64]),
    nulls: &[Candidates],
    data: &Prepared,
    train_per_class: usize,
    seed: u64,
) -> (Option<usize>, Array1<f64>, Hotspot, Vec<f64>, Vec<f64>) {
    if data.outputs() == 1 {
        let (map, hotspot, clean, null_scores) =
            bias_map((x, y, w), nulls, data, train_per_class, seed);
        return (None, map, hotspot, clean, null_scores);
    }
    let classes = data.classes();
    let one_vs_rest = |labels: &[f32], c: usize| -> Vec<f32> {
        labels
            .iter()
            .map(|&v| if v as usize == c { 1.0 } else { -1.0 })
            .collect()
    };
    let clean_labels: Vec<f32> = data.reference.y.iter().copied().collect();
    (0..classes)
        .map(|c| {
            let null_sets: Vec<_> = nulls
                .iter()
                .map(|(x, y, w)| (x, one_vs_rest(y, c), w.as_slice()))
                .collect();
            let (map, hotspot, clean, null_scores) = bias_map_with(
                (x, &one_vs_rest(y, c), w),
                &null_sets,
                &one_vs_rest(&clean_labels, c),
                data,
                (train_per_class, classes * CLEAN_DRAWS),
                seed + c as u64,
            );
            (Some(c), map, hotspot, clean, null_scores)
        })
        .max_by(|a, b| {
            let ratio = |r: &(Option<usize>, Array1<f64>, Hotspot, Vec<f64>, Vec<f64>)| {
                r.2.score / threshold(&r.3, &r.4)
            };
            ratio(a).total_cmp(&ratio(b))
        })
        .expect("at least two classes")
}

/// The threshold of a map's hotspot: the largest score of the maps that carry no shortcut.
pub fn threshold(clean: &[f64], null_models: &[f64]) -> f64 {
    clean
        .iter()
        .chain(null_models)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Runs (or resumes) an audit and writes `results.json`, `report.md`, `report.html` and the
/// pictures into `cfg.out`.
pub fn audit(cfg: &AuditConfig, tick: &(dyn Fn(Tick) -> bool + Sync)) -> Result<AuditReport> {
    let started = std::time::Instant::now();
    let (model, data, notes, train_known) = load(cfg)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create", cfg.out.display()))?;
    let (runs, k) = cfg.budget.sizes();
    let n_train = if train_known { data.train.y.len() } else { 0 };
    let m = cfg
        .candidates
        .unwrap_or(if train_known { 2 * n_train } else { 200 });
    if m < 2 || !m.is_multiple_of(2) {
        bail!("--candidates {m}: must be even and at least 2");
    }
    let cand = reconstruct(
        cfg,
        &model,
        &data,
        &cfg.out.join("recon.safetensors"),
        runs,
        m,
        tick,
    )?;
    let mut nulls = Vec::new();
    for i in 0..k {
        let path = cfg.out.join(format!("null-{i}.safetensors"));
        if !path.exists() {
            let mean = data.mean.view().insert_axis(Axis(0)).to_owned();
            save_model(
                &path,
                &control::random_like(&model, cfg.seed + 7919 + i as u64),
                Some(&mean),
                &BTreeMap::new(),
            )?;
        }
        let null = load_model::<f32>(&path)?.mlp;
        nulls.push(reconstruct(
            cfg,
            &null,
            &data,
            &cfg.out.join(format!("null-{i}-recon.safetensors")),
            runs,
            m,
            tick,
        )?);
    }
    let (x, y, w) = (&cand.0, &cand.1, &cand.2);

    // Evidence: realism for every audit; S, ρ10, recovered with the training set.
    let mut evidence = BTreeMap::new();
    let real = realism(x, &data);
    let null_real: Vec<Vec<f64>> = nulls.iter().map(|n| realism(&n.0, &data)).collect();
    let concept = figure(&real, &null_real, 10);
    evidence.insert("realism_rho10".to_string(), concept);
    evidence.insert(
        "realism_mean".to_string(),
        figure(&real, &null_real, real.len()),
    );
    if train_known {
        let s = score_candidates(&data, x, Some(&model), 10, &Ssim::kornia3());
        let ns: Vec<_> = nulls
            .iter()
            .map(|n| score_candidates(&data, &n.0, None, 10, &Ssim::kornia3()))
            .collect();
        let items = |s: &reveal_score::Score, f: fn(&reveal_score::Pair) -> f64| {
            let mut v: Vec<f64> = s.pairs.iter().map(f).collect();
            v.sort_by(|a, b| b.total_cmp(a));
            v
        };
        evidence.insert(
            "s".into(),
            figure(
                &items(&s, |p| p.ssim),
                &ns.iter().map(|n| items(n, |p| p.ssim)).collect::<Vec<_>>(),
                10,
            ),
        );
        evidence.insert(
            "rho10".into(),
            figure(
                &items(&s, |p| p.rho),
                &ns.iter().map(|n| items(n, |p| p.rho)).collect::<Vec<_>>(),
                10,
            ),
        );
        let rec = |s: &reveal_score::Score| s.recovered.unwrap_or(0) as f64;
        let null_rec: Vec<f64> = ns.iter().map(rec).collect();
        evidence.insert(
            "recovered".into(),
            Figure {
                value: rec(&s),
                null: mean(&null_rec),
                z: None,
            },
        );
    }

    // The bias map and the verdict.
    let classes = data.classes();
    let per_class = if train_known {
        n_train / classes
    } else {
        m / (2 * classes)
    };
    let (class, z, hotspot, clean_scores, null_scores) =
        model_bias_map((x, y, w), &nulls, &data, per_class.max(1), cfg.seed);
    let t = threshold(&clean_scores, &null_scores);
    let verdict = verdict(hotspot, t, Some(&concept), class);
    let (_, h, w) = data.shape;
    let map_png = "bias_map.png".to_string();
    grid::write_png(
        &cfg.out.join(&map_png),
        &[biasmap::heat_image(&z, MAP_SCALE).view()],
        (3, h, w),
        1,
        grid::default_scale(w).max(8),
    )?;
    let grid_png = "candidates.png".to_string();
    let pix = to_pixels(x, data.mean.view());
    // 40 candidates; of a C-class model, the first 10 of each class, one row per class.
    let shown = match model.outputs() {
        1 => pix.slice(ndarray::s![..pix.nrows().min(40), ..]).to_owned(),
        _ => crate::scoring::class_rows(&pix, y, classes, 10, None),
    };
    let best: Vec<_> = shown.rows().into_iter().collect();
    grid::write_png(
        &cfg.out.join(&grid_png),
        &best,
        data.shape,
        10,
        grid::default_scale(w),
    )?;
    let report = AuditReport {
        model: cfg.model.display().to_string(),
        data_set: data.spec.source.name().to_string(),
        shape: data.shape,
        budget: cfg.budget,
        verdict,
        evidence,
        bias_map: BiasMapResult {
            top_pixels: biasmap::top_pixels(&z, w, 64.max(h * w / 10)),
            hotspot,
            clean_null_scores: clean_scores,
            null_model_scores: null_scores,
            map_png,
        },
        notes,
        grid_png,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &cfg.out.join("results.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    write_atomic(
        &cfg.out.join("report.html"),
        crate::html::audit_page(&report, &cfg.out)?.as_bytes(),
    )?;
    Ok(report)
}

/// The z at which the bias map's colour scale saturates.
pub const MAP_SCALE: f64 = 20.0;
