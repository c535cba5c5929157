//! # reveal-experiment
//!
//! The paper's experiment end to end: for each bias level train a model (M_base, M1 corner,
//! M2 diag3, M3 diag5, M_contrast) and a null control, reconstruct training samples from each,
//! score them, and report whether the score tells which model learned the shortcut.
//!
//! Every step writes its result into the output folder and is skipped when that result is
//! already there, so re-running the same command finishes an interrupted experiment.

pub mod estimate;
pub mod html;
pub mod report;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use reveal_audit::scoring::{self, score_candidates, write_class_rows, write_grid};
use reveal_audit::verdict::{
    model_bias_map, verdict, Candidates, Residual, Trust, Verdict, MAP_SCALE,
};
use reveal_audit::workflow::kkt_residual;
use reveal_audit::{biasmap, nulls};
use reveal_data::{prepare, Bias, DataSpec, Prepared, Source, Task, TestSelection};
use reveal_io::write_atomic;
use reveal_nn::files::load_model;
use reveal_nn::{Arch, Mlp};
use reveal_recon::optim::Optimizer;
use reveal_recon::plan::Shard;
use reveal_recon::plan::{default_candidates, Plan, ADAM_ITERS};
use reveal_recon::search::{run_search, SearchJob, SearchSummary, Tick};
use reveal_render::{grid, heat::write_heat_png};
use reveal_score::Score;
use reveal_ssim::Ssim;
use reveal_train::job::{self as train_job, TrainJob, TrainSummary};
use reveal_train::{accuracy, Control, Schedule, TrainConfig, TrainState};
use serde::{Deserialize, Serialize};

pub use reveal_audit::TriggerCheck;

/// How much compute to spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// Fast schedule; one reconstruction run at the reference setting (20k iterations for MNIST,
    /// 10k for CIFAR-10).
    Quick,
    /// The reference recipe: lr 0.01 up to 10⁶ epochs, 50,000 iterations, a search of many runs.
    Paper,
    /// The built-in demo: a small synthetic set sized for a minute.
    #[cfg_attr(feature = "clap", value(skip))]
    Demo,
}

/// The reconstruction part of an experiment: the search of every model ([`Plan`]; its m and
/// seed are set per model) and how many of its best runs are pooled.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconPlan {
    pub plan: Plan,
    pub keep: usize,
}

/// Everything an experiment needs.
#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    pub source: Source,
    /// The task (`None`: the source's binary default); `Task::All` makes C-output models.
    pub task: Option<Task>,
    pub data_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub biases: Vec<Bias>,
    pub per_class: usize,
    pub seeds: Vec<u64>,
    pub control: bool,
    /// The network (an MLP of two hidden layers by default).
    pub arch: Arch,
    pub train: TrainConfig,
    pub recon: ReconPlan,
    pub test: TestSelection,
    /// Do only this shard's models and write no report (`reveal pool` does that). The control
    /// goes with the base model of its seed, which it is built from.
    pub shard: Option<Shard>,
}

impl ExperimentConfig {
    /// The plan of a budget for a data set, with the default optimizer (every part can be
    /// changed afterwards).
    pub fn new(source: Source, out: PathBuf, budget: Budget) -> Self {
        let (per_class, hidden) = match budget {
            Budget::Demo => (50, vec![200, 200]),
            Budget::Quick => (50, vec![1000, 1000]),
            Budget::Paper => (250, vec![1000, 1000]),
        };
        let train = match budget {
            Budget::Quick | Budget::Demo => TrainConfig::fast(1e-5, 100_000),
            Budget::Paper => TrainConfig {
                schedule: Schedule::REFERENCE,
                target_loss: 4e-6,
                max_epochs: 1_000_000,
                ..TrainConfig::fast(4e-6, 1_000_000)
            },
        };
        let recon = ReconPlan::for_budget(&source, budget, Optimizer::Adam, per_class);
        ExperimentConfig {
            source,
            task: None,
            data_dir: None,
            out,
            biases: Bias::ALL.to_vec(),
            per_class,
            seeds: vec![0],
            control: true,
            arch: Arch::mlp(&hidden),
            train,
            recon,
            test: TestSelection::PerClass(500),
            shard: None,
        }
    }
}

impl ExperimentConfig {
    /// Checks the configuration before any work starts: seeds, biases and hidden widths given,
    /// the biases defined for the task (only none and corner for more than two classes; the
    /// data crate refuses them too, but only when that model's turn comes), and a plan whose
    /// runs can be made (preset, run count, rates).
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() || self.biases.is_empty() {
            bail!("an experiment needs at least one seed and one bias");
        }
        train_job::check_hidden(&self.arch.hidden)?;
        if self.per_class == 0 {
            bail!("at least one training image per class is needed");
        }
        let multiclass = self.task == Some(Task::All);
        if let Some(b) = self.biases.iter().find(|b| multiclass && b.binary_only()) {
            bail!(
                "bias {b}: defined for binary tasks; a task of every class takes base and corner"
            );
        }
        self.recon.plan.configs()?;
        Ok(())
    }
}

impl ReconPlan {
    /// The searches of a budget: one run per model (quick, demo) or 20 with the best 5 pooled
    /// (paper). Iterations: Adam's default (twice it at the paper's size, n = 500, where m is
    /// five times larger); under SGD the reference's (20,000 MNIST / 10,000 CIFAR-10 quick,
    /// 10,000 demo, 50,000 paper).
    pub fn for_budget(
        source: &Source,
        budget: Budget,
        optimizer: Optimizer,
        per_class: usize,
    ) -> Self {
        let mut plan =
            Plan::for_optimizer(optimizer, Some(source), default_candidates(per_class, 1), 0);
        (plan.runs, plan.iters) = match (budget, optimizer) {
            (Budget::Paper, Optimizer::Adam) => (20, 2 * ADAM_ITERS),
            (Budget::Paper, Optimizer::Sgd) => (20, 50_000),
            (Budget::Demo, Optimizer::Sgd) => (1, 10_000),
            (_, _) => (1, plan.iters),
        };
        let keep = if plan.runs > 1 { 5 } else { 1 };
        ReconPlan { plan, keep }
    }
}

/// The short name of a model in reports: M_base, M1, M2, M3, M_contrast, control.
pub fn model_name(bias: Option<Bias>) -> &'static str {
    match bias {
        Some(Bias::None) => "M_base",
        Some(Bias::Corner) => "M1",
        Some(Bias::Diag3) => "M2",
        Some(Bias::Diag5) => "M3",
        Some(Bias::Contrast) => "M_contrast",
        None => "control",
    }
}

fn file_tag(bias: Option<Bias>, seed: u64) -> String {
    let b = bias.map_or(
        "control",
        |b| if b == Bias::None { "base" } else { b.name() },
    );
    format!("{b}-s{seed}")
}

/// One model's row of the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelResult {
    pub name: String,
    /// `None` for the control.
    pub bias: Option<Bias>,
    pub seed: u64,
    pub test_accuracy: f64,
    /// `None` for the control.
    pub train: Option<TrainSummary>,
    pub recon: SearchSummary,
    pub recon_seconds: f64,
    pub score: Score,
    /// How well the bias map finds the planted trigger (corner, diag3, diag5).
    pub trigger: Option<TriggerCheck>,
    /// The bias map's verdict: its best window against clean-image maps of the training
    /// set's size.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    pub files: ResultFiles,
}

/// Where a model's files are, relative to the experiment folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultFiles {
    pub model: String,
    pub candidates: String,
    pub grid: String,
    pub bias_map: String,
    /// A multiclass model's reconstructions, one row per class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_grid: Option<String>,
}

/// The stages of one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Training,
    Reconstructing,
    Scoring,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Training => "training",
            Stage::Reconstructing => "reconstructing",
            Stage::Scoring => "scoring",
        })
    }
}

/// What the caller sees while it runs (progress bars, Ctrl-C).
pub struct Hooks<'a> {
    /// A stage of a model begins: its name (M_base, M1, …), seed and the stage.
    pub stage: &'a dyn Fn(&str, u64, Stage),
    /// After each training epoch.
    pub epoch: &'a dyn Fn(&TrainState<f32>) -> Control,
    /// After each reconstruction iteration; false stops.
    pub tick: &'a (dyn Fn(Tick) -> bool + Sync),
    /// Something the user should hear about (a corrupt checkpoint replaced by the previous one).
    pub warn: &'a dyn Fn(&str),
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).display().to_string()
}

/// The data set of one bias level.
pub(crate) fn data_for(cfg: &ExperimentConfig, bias: Bias, seed: u64) -> Result<Prepared> {
    let mut spec = DataSpec::new(cfg.source.clone(), cfg.per_class);
    if let Some(task) = &cfg.task {
        spec.task = task.clone();
    }
    spec.bias = bias;
    spec.seed = seed;
    spec.test = cfg.test;
    prepare(&spec, cfg.data_dir.as_deref())
}

/// The data sets prepared so far, by (bias, seed): each is loaded once (the control shares the
/// base model's), and they are dropped when their seed is done.
#[derive(Default)]
struct DataCache(std::collections::HashMap<(Bias, u64), Prepared>);

impl DataCache {
    fn get(&mut self, cfg: &ExperimentConfig, bias: Bias, seed: u64) -> Result<&Prepared> {
        Ok(match self.0.entry((bias, seed)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(data_for(cfg, bias, seed)?),
        })
    }
}

/// Trains (or loads) the model of one bias level.
fn trained_model(
    cfg: &ExperimentConfig,
    data: &Prepared,
    path: &Path,
    seed: u64,
    hooks: &Hooks,
) -> Result<(Mlp<f32>, TrainSummary)> {
    if !path.exists() {
        let job = TrainJob {
            arch: cfg.arch.clone(),
            config: cfg.train,
            seed,
            out: path.to_path_buf(),
            checkpoint_every: 1000,
            resume: true,
        };
        let summary = train_job::run::<f32>(&job, data, hooks.epoch)?;
        summary.warnings.iter().for_each(|w| (hooks.warn)(w));
    }
    let file = load_model::<f32>(path)?;
    let summary = train_job::read_summary(path, &file.metadata)
        .with_context(|| format!("{}: delete it to retrain", path.display()))?;
    if file.mlp.arch() != cfg.arch || summary.config != cfg.train {
        bail!(
            "{}: trained with other settings ({}, {:?}); use another output folder",
            path.display(),
            file.mlp.arch(),
            summary.config.schedule
        );
    }
    Ok((file.mlp, summary))
}

/// Reconstructs (or resumes) from a model.
fn reconstruct(
    cfg: &ExperimentConfig,
    model: &Mlp<f32>,
    out: &Path,
    seed: u64,
    model_path: &Path,
    hooks: &Hooks,
) -> Result<SearchSummary> {
    let multipliers = scoring::recipe_multipliers(&cfg.train, model.outputs());
    let plan = Plan {
        m: default_candidates(cfg.per_class, model.outputs()),
        seed,
        multipliers,
        ..cfg.recon.plan.clone()
    };
    let runs = plan.configs()?;
    let mut metadata = std::collections::BTreeMap::new();
    // Paths inside the folder are recorded relative to it, so the folder can move.
    metadata.insert("model".into(), rel(&cfg.out, model_path));
    let mut job = SearchJob::new(runs, cfg.recon.keep, out.to_path_buf());
    job.metadata = metadata;
    let summary = run_search(&model.theta(), &job, None, hooks.tick)?;
    for w in summary.runs.iter().flat_map(|r| &r.warnings) {
        (hooks.warn)(w);
    }
    Ok(summary)
}

/// Runs one model end to end, skipping what is already in the folder.
fn one_model(
    cfg: &ExperimentConfig,
    bias: Option<Bias>,
    seed: u64,
    data: &mut DataCache,
    hooks: &Hooks,
) -> Result<ModelResult> {
    let dir = &cfg.out;
    let tag = file_tag(bias, seed);
    let name = model_name(bias);
    let result_path = result_path(cfg, bias, seed);
    if let Ok(text) = std::fs::read_to_string(&result_path) {
        if let Ok(r) = serde_json::from_str::<ModelResult>(&text) {
            return Ok(r);
        }
    }
    let data = data.get(cfg, bias.unwrap_or(Bias::None), seed)?;
    let base_path = dir
        .join("models")
        .join(format!("{}.safetensors", file_tag(Some(Bias::None), seed)));
    let model_path = dir.join("models").join(format!("{tag}.safetensors"));
    (hooks.stage)(name, seed, Stage::Training);
    let (model, train) = match bias {
        Some(_) => {
            let (m, s) = trained_model(cfg, data, &model_path, seed, hooks)?;
            (m, Some(s))
        }
        None => {
            let (base, _) = trained_model(cfg, data, &base_path, seed, hooks)?;
            let mut meta = train_job::data_metadata(data);
            meta.insert(
                "control".into(),
                format!(
                    "random model with the layer norms of {}",
                    rel(dir, &base_path)
                ),
            );
            let null = nulls::null_model(&model_path, &base, None, &data.mean, seed, &meta)?;
            (null, None)
        }
    };
    let test_x: Array2<f32> = data.test.x.clone();
    let test_accuracy = accuracy(&model, &test_x, data.test.y.as_slice().expect("contiguous"));

    (hooks.stage)(name, seed, Stage::Reconstructing);
    let cand_path = dir.join("recon").join(format!("{tag}.safetensors"));
    let recon = reconstruct(cfg, &model, &cand_path, seed, &model_path, hooks)?;
    let recon_seconds = recon.runs.iter().map(|r| r.wall_seconds).sum::<f64>();

    (hooks.stage)(name, seed, Stage::Scoring);
    let cand = Candidates::load(&cand_path)?;
    let score = score_candidates(data, &cand.x, Some(&model), 10, &Ssim::kornia3());
    let grid_path = dir.join("grids").join(format!("{tag}.png"));
    write_grid(&grid_path, &score, &cand.x, data)?;
    let class_grid = (data.outputs() > 1).then(|| scoring::class_rows_path(&grid_path));
    let map = model_bias_map(&cand, &[], data, cfg.per_class, seed);
    // How near the reconstruction came to a KKT point, against 1, what candidates that explain
    // nothing of W1 leave (the experiment reconstructs no null model per model): a global
    // pattern is only read from reconstructions that explain the weights.
    let kkt = Residual {
        value: kkt_residual(&model.theta(), &cand_path)?,
        null: 1.0,
    };
    let trust = Trust {
        concept: None,
        kkt: Some(kkt),
    };
    let verdict = verdict(&map, trust);
    if let Some(rows) = &class_grid {
        write_class_rows(rows, &score, &cand.x, &cand.y, data, 10)?;
    }
    let map_path = dir.join("maps").join(format!("{tag}.png"));
    let (_, h, w) = data.shape;
    write_heat_png(&map_path, &map.map, MAP_SCALE, (h, w))?;
    let trigger = biasmap::check(&map.map, verdict.region, &data.triggers, data.shape);
    let result = ModelResult {
        name: name.to_string(),
        bias,
        seed,
        test_accuracy,
        train,
        recon,
        recon_seconds,
        score,
        trigger,
        verdict: Some(verdict),
        files: ResultFiles {
            model: rel(dir, &model_path),
            candidates: rel(dir, &cand_path),
            grid: rel(dir, &grid_path),
            bias_map: rel(dir, &map_path),
            class_grid: class_grid.map(|p| rel(dir, &p)),
        },
    };
    write_atomic(
        &result_path,
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    Ok(result)
}

/// Runs the whole experiment and writes the report; returns every model's result.
pub fn run(cfg: &ExperimentConfig, hooks: &Hooks) -> Result<Vec<ModelResult>> {
    cfg.validate()?;
    for sub in ["models", "recon", "scores", "grids", "maps", "previews"] {
        std::fs::create_dir_all(cfg.out.join(sub))
            .with_context(|| format!("{}: cannot create", cfg.out.join(sub).display()))?;
    }
    // Check every data set before any long work starts (files, sizes, whether each bias fits).
    let mut cache = DataCache::default();
    for &bias in &cfg.biases {
        let data = cache.get(cfg, bias, cfg.seeds[0])?;
        let rows: Vec<_> = data.train.pixels.rows().into_iter().take(40).collect();
        let name = if bias == Bias::None {
            "base"
        } else {
            bias.name()
        };
        grid::write_png(
            &cfg.out.join("previews").join(format!("{name}.png")),
            &rows,
            data.shape,
            10,
            grid::default_scale(data.shape.2),
        )?;
    }
    let mut results = Vec::new();
    let all = models(cfg);
    for (k, &(bias, seed)) in all.iter().enumerate() {
        // The control is built from its seed's base model, so it goes to the base model's shard.
        let base = all.iter().position(|&m| m == (Some(Bias::None), seed));
        let unit = if bias.is_none() { base.unwrap_or(k) } else { k };
        if cfg.shard.is_none_or(|s| s.owns(unit)) {
            results.push(one_model(cfg, bias, seed, &mut cache, hooks)?);
        }
        cache.0.retain(|&(_, s), _| s == seed);
    }
    if cfg.shard.is_none() {
        report::write(cfg, &results)?;
    }
    Ok(results)
}

/// The models of an experiment in order: for each seed every bias level, then the control.
pub(crate) fn models(cfg: &ExperimentConfig) -> Vec<(Option<Bias>, u64)> {
    let mut out = Vec::new();
    for &seed in &cfg.seeds {
        out.extend(cfg.biases.iter().map(|&b| (Some(b), seed)));
        if cfg.control {
            out.push((None, seed));
        }
    }
    out
}

/// The models whose result is not written yet (their report names).
pub fn missing_models(cfg: &ExperimentConfig) -> Vec<String> {
    models(cfg)
        .into_iter()
        .filter(|&(b, seed)| !result_path(cfg, b, seed).exists())
        .map(|(b, seed)| format!("{} (seed {seed})", model_name(b)))
        .collect()
}

fn result_path(cfg: &ExperimentConfig, bias: Option<Bias>, seed: u64) -> PathBuf {
    cfg.out
        .join("scores")
        .join(format!("{}.json", file_tag(bias, seed)))
}
