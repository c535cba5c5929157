//! The audit of one model, trained by reveal or elsewhere: reconstruct its training samples,
//! set every figure beside the same figure of null models (random models with its layer
//! norms), map where its classes differ beyond what clean images of the task explain, and say
//! whether a compact shortcut shows.
//!
//! Every step writes its result into the output folder and is skipped when it is there, so
//! rerunning the same command finishes an interrupted audit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ndarray::{Array2, Axis};
use reveal_data::{prepare, DataSpec, Prepared};
use reveal_io::write_atomic;
use reveal_io::{parse_tensors, read_file};
use reveal_nn::files::{check_input_width, load_init, model_from_tensors, LayerNames};
use reveal_nn::{Arch, Grid};
use reveal_nn::{Mlp, Theta};
use reveal_recon::files::load_candidates;
use reveal_recon::objective::{evaluate_with, Method};
use reveal_recon::optim::layer1_residual;
use reveal_recon::plan::{Plan, PlanError};
use reveal_recon::search::{run_search, SearchJob, Tick};
use reveal_recon::Multipliers;
use reveal_render::grid;
use reveal_render::heat::write_heat_png;
use reveal_score::score::{pairs, to_pixels};
use reveal_ssim::Ssim;
use serde::{Deserialize, Serialize};

use crate::biasmap::{self, Hotspot};
use crate::nulls;
use crate::scoring::{check_outputs, model_data_spec, model_multipliers, score_candidates};
use crate::stats::{mean, welch};
use crate::verdict::{
    model_bias_map, verdict, Candidates, Consistency, Figure, Residual, Trust, Verdict, MAP_SCALE,
};

/// How much compute an audit spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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
    /// The model's weights before training (same layer names), when kept: the reconstruction then
    /// fits the step training took, θ − θ0, which is what the training points' gradients span.
    pub init: Option<PathBuf>,
    pub layers: LayerNames,
    /// The architecture, for a network with convolutions whose file does not say its own (a
    /// PyTorch `state_dict` holds no strides or paddings); its fc widths must match the file's.
    pub arch: Option<Arch>,
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
    /// The form of the multipliers (default: what the model's training recipe calls for, read
    /// from its metadata; the margin form for a model trained elsewhere).
    pub multipliers: Option<Multipliers>,
    pub seed: u64,
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
    /// ρ_half of the candidates, the global statistic, beside its clean and null values.
    #[serde(default)]
    pub consistency: Option<Consistency>,
}

/// The picture of what the candidates' classes share beyond the concept (ρ_half's R).
pub const PATTERN_PNG: &str = "pattern.png";

/// The audit's result (`results.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditReport {
    pub model: String,
    /// The weights before training the reconstruction started from, when given.
    #[serde(default)]
    pub init: Option<String>,
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

/// The audited model and its data.
struct Loaded {
    model: Mlp<f32>,
    /// The weights before training, when given.
    init: Option<Mlp<f32>>,
    /// The clean reference (held-out images), and the training set when known.
    data: Prepared,
    /// What the audit assumed, for the report.
    notes: Vec<String>,
    /// Whether `data.train` is the model's training set.
    train_known: bool,
    /// The form of the multipliers the reconstruction fits.
    multipliers: Multipliers,
}

/// Loads the model and its data: the clean reference (held-out split), and the training set
/// when known. Fails before any work on a model that does not fit the data.
fn load(cfg: &AuditConfig) -> Result<Loaded> {
    let tensors = parse_tensors::<f32>(&read_file(&cfg.model)?, &cfg.model)?;
    let mut notes = Vec::new();
    let (spec, train_known) = match model_data_spec(&cfg.model, &tensors.metadata) {
        Ok(spec) => (spec, true),
        Err(_) => match &cfg.data {
            Some(spec) => (spec.clone(), cfg.train_known),
            None => bail!(
                "{}: the model names no data set; give the task's data (a data set and task, or an image folder)",
                cfg.model.display()
            ),
        },
    };
    let mut data = prepare(&spec, cfg.data_dir.as_deref())?;
    // The convolutional front given over the data's images, checked against the file as it loads.
    let (channels, height, width) = data.shape;
    let input = Grid {
        channels,
        height,
        width,
    };
    let given = match &cfg.arch {
        Some(arch) => arch
            .features(input)
            .map_err(|e| anyhow!("--arch {arch}: {e}"))?,
        None => None,
    };
    let file = model_from_tensors(tensors, &cfg.model, &cfg.layers, given.as_ref())?;
    if let Some(arch) = cfg.arch.as_ref().filter(|a| file.mlp.hidden() != a.hidden) {
        bail!(
            "{}: its fc hidden widths are {:?}, --arch {arch} says {:?}",
            cfg.model.display(),
            file.mlp.hidden(),
            arch.hidden
        );
    }
    let what = format!("the images of {} ({:?})", spec.source.name(), data.shape);
    check_input_width(file.mlp.input_dim(), data.test.x.ncols(), &cfg.model, &what)?;
    check_outputs(file.mlp.outputs(), &data, &cfg.model)?;
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
    let init = match &cfg.init {
        Some(path) => {
            let init = load_init(path, &cfg.layers, &file.mlp, &cfg.model)?;
            notes.push(format!(
                "the weights before training were given ({}): the reconstruction fitted the step training took, θ − θ0",
                path.display()
            ));
            Some(init)
        }
        None => None,
    };
    data.test.x = &data.test.pixels - &data.mean;
    data.reference.x = &data.reference.pixels - &data.mean;
    if train_known {
        data.train.x = &data.train.pixels - &data.mean;
    } else {
        notes.push("the training set is unknown: no S, ρ10 or recovered count (name the training selection to give it)".into());
    }
    let outputs = file.mlp.outputs();
    let multipliers = model_multipliers(cfg.multipliers, &file.metadata, outputs);
    if multipliers != Multipliers::Margin {
        notes.push(format!(
            "multipliers of the {} form, after the model's loss and weight decay",
            serde_json::to_string(&multipliers)?.trim_matches('"')
        ));
    }
    if reveal_tape::kernels::gemm::product_precision::<f32>() == "bf16" {
        notes.push("matrix products in bf16 (operands rounded to bf16, sums in f32)".into());
    }
    Ok(Loaded {
        model: file.mlp,
        init,
        data,
        notes,
        train_known,
        multipliers,
    })
}

/// Reconstructs from θ into `out` (resumable) as `plan` says, pooling all its runs.
fn reconstruct(
    cfg: &AuditConfig,
    theta: &Theta<f32>,
    plan: &Plan,
    out: &Path,
    tick: &(dyn Fn(Tick) -> bool + Sync),
) -> Result<Candidates> {
    // Whether the candidates were fitted from weights before training (their file names them).
    let origin = cfg.init.as_ref().map(|p| p.display().to_string());
    if !out.exists() {
        let mut job = SearchJob::new(plan.configs()?, plan.runs, out.to_path_buf());
        if let Some(origin) = &origin {
            job.metadata.insert("init".into(), origin.clone());
        }
        run_search(theta, &job, None, tick)?;
    }
    let file = load_candidates::<f32>(out)?;
    let made_from = file.metadata.get("init");
    if made_from.is_some() != origin.is_some() {
        bail!(
            "{}: reconstructed {} the weights before training; audit into another output folder",
            out.display(),
            if made_from.is_some() {
                "from"
            } else {
                "without"
            }
        );
    }
    Ok(Candidates::from_file(file))
}

/// The first layer's relative KKT residual √(‖W1 − ∇_{W1}Φ‖² / ‖W1‖²) at the candidates of a
/// file (W1 − W1₀ with an origin), with the objective settings of its best run: 0 at an exact
/// KKT point, about 1 when the candidates explain nothing of W1. (L_kkt over all of θ is
/// dominated by the part of the later layers that no candidate's gradient spans, so it hardly
/// tells models apart.)
pub fn kkt_residual(theta: &Theta<f32>, path: &Path) -> Result<f64> {
    let c = load_candidates::<f32>(path)?;
    let objective = match c.run_config() {
        Some(run) => run.objective(),
        None => bail!("{}: no run settings in the metadata", path.display()),
    };
    let method = Method::auto(theta, c.x.nrows());
    let e = evaluate_with(method, theta, &c.x, &c.lambda, &c.y, objective);
    Ok(layer1_residual(theta, &e.terms.map(|v| v as f64)).sqrt())
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

impl AuditConfig {
    /// Candidates per run: as given, else twice the training set when it is known (m = 2n, as
    /// the experiment uses), else 200.
    pub fn candidates_for(&self, n_train: Option<usize>) -> usize {
        self.candidates.unwrap_or(n_train.map_or(200, |n| 2 * n))
    }

    /// Every reconstruction iteration the audit runs: the audited model's and each null
    /// model's runs (for a progress bar).
    pub fn total_iters(&self) -> usize {
        let (runs, nulls) = self.budget.sizes();
        runs * (1 + nulls) * self.iters.unwrap_or(reveal_recon::plan::ADAM_ITERS)
    }
}

/// Runs (or resumes) an audit and writes `results.json`, `report.html` and the pictures into
/// `cfg.out`.
pub fn audit(cfg: &AuditConfig, tick: &(dyn Fn(Tick) -> bool + Sync)) -> Result<AuditReport> {
    let started = std::time::Instant::now();
    let Loaded {
        model,
        init,
        data,
        notes,
        train_known,
        multipliers,
    } = load(cfg)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create", cfg.out.display()))?;
    let (runs, k) = cfg.budget.sizes();
    let n_train = train_known.then(|| data.train.y.len());
    let m = cfg.candidates_for(n_train);
    if m < 2 || !m.is_multiple_of(2) {
        return Err(PlanError::Candidates(m).into());
    }
    // θ, from its origin θ0 when the weights before training are known (the null models too).
    let theta_of = |model: &Mlp<f32>| match &init {
        Some(init) => model.theta().with_origin(init),
        None => model.theta(),
    };
    // The default plan with the budget's runs, pooled, and the multipliers the recipe calls for.
    let default = Plan::new(Some(&data.spec.source), m, cfg.seed);
    let plan = Plan {
        runs,
        iters: cfg.iters.unwrap_or(default.iters),
        multipliers,
        ..default
    };
    let recon =
        |theta: &Theta<f32>, file: &str| reconstruct(cfg, theta, &plan, &cfg.out.join(file), tick);
    let theta = theta_of(&model);
    let cand = recon(&theta, "recon.safetensors")?;
    let null_thetas = (0..k)
        .map(|i| {
            let path = cfg.out.join(format!("null-{i}.safetensors"));
            let seed = cfg.seed + i as u64;
            let null = nulls::null_model(
                &path,
                &model,
                init.as_ref(),
                &data.mean,
                seed,
                &BTreeMap::new(),
            )?;
            Ok(theta_of(&null))
        })
        .collect::<Result<Vec<_>>>()?;
    let nulls = null_thetas
        .iter()
        .enumerate()
        .map(|(i, null)| recon(null, &format!("null-{i}-recon.safetensors")))
        .collect::<Result<Vec<_>>>()?;

    // Evidence: realism for every audit; S, ρ10, recovered with the training set.
    let mut evidence = BTreeMap::new();
    let real = realism(&cand.x, &data);
    let null_real: Vec<Vec<f64>> = nulls.iter().map(|n| realism(&n.x, &data)).collect();
    let concept = figure(&real, &null_real, 10);
    evidence.insert("realism_rho10".to_string(), concept);
    evidence.insert(
        "realism_mean".to_string(),
        figure(&real, &null_real, real.len()),
    );
    if train_known {
        let s = score_candidates(&data, &cand.x, Some(&model), 10, &Ssim::kornia3());
        let ns: Vec<_> = nulls
            .iter()
            .map(|n| score_candidates(&data, &n.x, None, 10, &Ssim::kornia3()))
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
    let per_class = n_train.map_or(m / (2 * classes), |n| n / classes);
    let map = model_bias_map(&cand, &nulls, &data, per_class.max(1), cfg.seed);
    let kkt = Residual {
        value: kkt_residual(&theta, &cfg.out.join("recon.safetensors"))?,
        null: mean(
            &null_thetas
                .iter()
                .enumerate()
                .map(|(i, null)| {
                    kkt_residual(null, &cfg.out.join(format!("null-{i}-recon.safetensors")))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    let trust = Trust {
        concept: Some(&concept),
        kkt: Some(kkt),
    };
    let verdict = verdict(&map, trust);
    let (_, h, w) = data.shape;
    let map_png = "bias_map.png".to_string();
    write_heat_png(&cfg.out.join(&map_png), &map.map, MAP_SCALE, (h, w))?;
    // The pattern the classes share beyond the concept, signed: grey 0, light +, dark −.
    let pattern = &map.consistency.pattern;
    let top = pattern
        .iter()
        .fold(f64::MIN_POSITIVE, |a, v| a.max(v.abs()));
    let shown = pattern.mapv(|v| (0.5 + 0.5 * v / top) as f32);
    grid::write_png(
        &cfg.out.join(PATTERN_PNG),
        &[shown.view()],
        data.shape,
        1,
        2 * grid::default_scale(w),
    )?;
    let grid_png = "candidates.png".to_string();
    let pix = to_pixels(&cand.x, data.mean.view());
    // 40 candidates; of a C-class model, the first 10 of each class, one row per class.
    let shown = match model.outputs() {
        1 => pix.slice(ndarray::s![..pix.nrows().min(40), ..]).to_owned(),
        _ => crate::scoring::class_rows(&pix, &cand.y, classes, 10, None),
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
        init: cfg.init.as_ref().map(|p| p.display().to_string()),
        data_set: data.spec.source.name().to_string(),
        shape: data.shape,
        budget: cfg.budget,
        verdict,
        evidence,
        bias_map: BiasMapResult {
            top_pixels: biasmap::top_pixels(&map.map, w, 64.max(h * w / 10)),
            hotspot: map.hotspot,
            clean_null_scores: map.calibration.clean,
            null_model_scores: map.calibration.null_models,
            map_png,
            consistency: Some(map.consistency),
        },
        notes,
        grid_png,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &cfg.out.join("results.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    crate::page::write(&report, &cfg.out)?;
    Ok(report)
}
