//! `reveal reconstruct`, `reveal kkt`, `reveal score`, `reveal ssim`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reveal_audit::scoring::{
    model_data, model_data_spec, model_multipliers, score_candidates, score_file,
};
use reveal_data::Prepared;
use reveal_nn::files::{check_input_width, load_init, load_model, LayerNames};
use reveal_nn::{Mlp, Theta};
use reveal_recon::files::{check_labels, load_candidates, write_evaluation};
use reveal_recon::objective::evaluate;
use reveal_recon::plan::{default_candidates, Pins, Plan, Shard};
use reveal_recon::search::{missing_runs, run_search, runs_dir, SearchJob, SearchSummary};
use reveal_recon::stationarity::fit_multipliers;
use reveal_recon::stats::RankBy;
use reveal_recon::terms::ObjectiveConfig;
use reveal_recon::{Hyper, Multipliers};
use reveal_ssim::Ssim;
use reveal_tape::Scalar;

use crate::args::{positive, DataArgs, OptimFlags, Precision};
use crate::progress;

#[derive(clap::Args)]
pub struct ReconstructArgs {
    /// The trained model (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Output candidate file (safetensors); per-run files go to OUT.runs/.
    #[arg(long)]
    pub out: PathBuf,
    /// The model's weights before training (safetensors, same layers), when kept: the
    /// reconstruction then fits the step training took, θ − θ0 (for models trained from
    /// PyTorch's init with SGD).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Candidates per run, m (default: twice the training-set size in the model's metadata).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// The form of the multipliers: margin (one per candidate: the logistic loss, cross-entropy
    /// without weight decay), pairs (one per wrong class: cross-entropy with weight decay) or
    /// signed (the squared loss). Default: what the model's training recipe calls for, else
    /// margin.
    #[arg(long, value_enum)]
    pub multipliers: Option<Multipliers>,
    #[command(flatten)]
    pub optim: OptimFlags,
    /// A reference setting for the init scale, λ_min and α (and SGD's lr): cifar-a, cifar-b,
    /// mnist-a, mnist-b (default: cifar-a for CIFAR-10 and folders, else mnist-a).
    #[arg(long)]
    pub preset: Option<String>,
    /// Scale of the initial candidates (overrides the preset).
    #[arg(long)]
    pub init_scale: Option<f64>,
    /// λ_min (overrides the preset).
    #[arg(long)]
    pub min_lambda: Option<f64>,
    /// α of the modified ReLU (overrides the preset).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Number of runs; with more than one, unpinned hyperparameters are drawn at random from the
    /// reference's ranges (run 0 keeps the preset).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Pool the candidates of the best K runs into --out.
    #[arg(long, default_value_t = 1)]
    pub keep: usize,
    /// Rank runs by the label-free layer-1 KKT residual, or by S against the training set.
    #[arg(long, value_enum, default_value = "kkt")]
    pub rank_by: RankByArg,
    /// For --rank-by score, the training set: from the model's metadata; for a model without
    /// it, these data flags say which it was.
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of the initial candidates and of the search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Runs at once (default: two when there are several runs, each a parallel step itself).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Float precision: f32 (what runs use), f64 (for checks) or bf16 (f32, the matrix
    /// products' operands rounded to bf16: steps in about 0.6× the time, less exact; CPUs with
    /// AVX512-BF16).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Checkpoint every N iterations.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: usize,
    /// Log the curve every N iterations.
    #[arg(long, default_value_t = 100)]
    pub log_every: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do only runs i with i mod N = I − 1 and no pooling (then `reveal pool --out OUT`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Set by `reveal pool`: every run must be done already.
    #[arg(skip)]
    pub pool: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RankByArg {
    Kkt,
    Score,
}

pub fn cmd_reconstruct<T: Scalar>(args: &ReconstructArgs) -> Result<()> {
    crate::args::outputs([Some(args.out.as_path())])?;
    let file = load_model::<T>(&args.model)?;
    let spec = model_data_spec(&args.model, &file.metadata).ok();
    let m = match (args.candidates, &spec) {
        (Some(m), _) => m,
        (None, Some(s)) => default_candidates(s.per_class, file.mlp.outputs()),
        (None, None) => bail!(
            "{}: no training-set size in the metadata; pass --candidates M",
            args.model.display()
        ),
    };
    if args.runs == 0 || args.keep == 0 || args.keep > args.runs {
        bail!(
            "--runs {} --keep {}: need 1 ≤ keep ≤ runs",
            args.runs,
            args.keep
        );
    }
    let source = spec.as_ref().map(|s| &s.source);
    let mut plan = Plan::for_optimizer(args.optim.optimizer(), source, m, args.seed);
    if let Some(p) = &args.preset {
        plan.preset = p.clone();
    }
    plan.pins = Pins {
        init_scale: args.init_scale,
        lambda_min: args.min_lambda,
        alpha: args.alpha,
        ..plan.pins
    };
    args.optim.apply(&mut plan);
    plan.runs = args.runs;
    plan.multipliers = model_multipliers(args.multipliers, &file.metadata, file.mlp.outputs());
    let runs = plan.configs()?;
    let data = match args.rank_by {
        RankByArg::Score => Some(model_data(
            &args.model,
            &file.metadata,
            file.mlp.input_dim(),
            &args.data.spec()?,
            args.data.source.data_dir().as_deref(),
        )?),
        RankByArg::Kkt => None,
    };
    let init = match &args.init {
        Some(path) => Some(load_init(path, &LayerNames::Auto, &file.mlp, &args.model)?),
        None => None,
    };
    let mut meta = BTreeMap::new();
    meta.insert("model".into(), args.model.display().to_string());
    if let Some(path) = &args.init {
        meta.insert("init".into(), path.display().to_string());
    }
    meta.insert("precision".into(), args.precision.name().into());
    let job = SearchJob {
        runs,
        keep: args.keep,
        out: args.out.clone(),
        rank_by: match args.rank_by {
            RankByArg::Kkt => RankBy::Kkt,
            RankByArg::Score => RankBy::Score,
        },
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        parallel: args
            .parallel
            .unwrap_or(SearchJob::default_parallel(args.runs)),
        metadata: meta,
        shard: args.shard,
    };
    crate::shard::begin(&runs_dir(&args.out), args.shard, args.pool, || {
        missing_runs(&job)
            .iter()
            .map(|i| format!("run {i}"))
            .collect()
    })?;
    let theta = match &init {
        Some(init) => file.mlp.theta().with_origin(init),
        None => file.mlp.theta(),
    };
    let summary = search(&file.mlp, &theta, &job, data.as_ref(), args.json)?;
    if let Some(shard) = args.shard {
        let done: Vec<usize> = summary.runs.iter().map(|r| r.index).collect();
        eprintln!(
            "shard {shard}: runs {done:?} written to {}; once every shard is done: reveal pool --out {}",
            runs_dir(&args.out).display(),
            args.out.display()
        );
        return Ok(());
    }
    if args.json {
        // Wall times live beside the run files, not in them; the JSON report has them.
        let mut v = serde_json::to_value(&summary)?;
        for (run, r) in summary.runs.iter().enumerate() {
            v["runs"][run]["wall_seconds"] = r.wall_seconds.into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_search(&summary, &args.out);
    }
    Ok(())
}

/// Runs a search on θ of `model` (from its origin when known) with a progress bar; with data,
/// runs are also scored.
pub fn search<T: Scalar>(
    model: &Mlp<T>,
    theta: &Theta<T>,
    job: &SearchJob,
    data: Option<&Prepared>,
    quiet: bool,
) -> Result<SearchSummary> {
    let total: usize = job.runs.iter().map(|r| r.iters).sum();
    let bar = progress::bar(total as u64, "iterations", quiet);
    let tick = |t: reveal_recon::search::Tick| {
        bar.inc(1);
        if t.iter.is_multiple_of(20) {
            bar.set_message(format!(
                "run {} loss {:.4e} (kkt {:.4e}, x {:.2e}, λ {:.2e})",
                t.run, t.terms.total, t.terms.kkt, t.terms.prior_x, t.terms.prior_lambda
            ));
        }
        !progress::interrupted()
    };
    let model32: Option<Mlp<f32>> = data.map(|_| model.cast());
    let scorer = |s: &reveal_recon::RunState<T>| {
        let d = data.expect("scorer only with data");
        let x = s.x.mapv(|v| v.as_f64() as f32);
        score_candidates(d, &x, model32.as_ref(), 10, &Ssim::kornia3())
            .summary
            .s
    };
    let result = run_search(
        theta,
        job,
        data.map(|_| &scorer as &reveal_recon::search::Scorer<T>),
        &tick,
    );
    bar.finish_and_clear();
    if let Ok(s) = &result {
        progress::warn_all(s.runs.iter().flat_map(|r| &r.warnings));
    }
    result
}

fn print_search(s: &SearchSummary, out: &Path) {
    println!(
        "candidates    {} (runs pooled: {:?})",
        out.display(),
        s.pooled
    );
    println!(
        "{:>4} {:>10} {:>8} {:>7} {:>7} {:>12} {:>12} {:>8} {:>7}",
        "run", "init", "lr", "λ_min", "α", "loss", "W1 resid.", "S", "wall s"
    );
    for &i in &s.ranking {
        let r = &s.runs[i];
        let h = r.config.hyper;
        let score = r.score.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{:>4} {:>10.2e} {:>8.3e} {:>7.3} {:>7.1} {:>12.5e} {:>12.5e} {:>8} {:>7.0}",
            i,
            h.init_scale,
            h.lr,
            h.lambda_min,
            h.alpha,
            r.loss,
            r.layer1_residual,
            score,
            r.wall_seconds
        );
    }
    for r in s.runs.iter().filter(|r| r.failure.is_some()) {
        println!(
            "run {} failed: {}",
            r.index,
            r.failure.as_deref().unwrap_or("")
        );
    }
    if let Some(a) = s.rank_agreement {
        println!("agreement of the kkt and score rankings (Spearman): {a:.3}");
    }
}

#[derive(clap::Args)]
pub struct StationarityArgs {
    /// The trained model (safetensors, trained by reveal: its training set is rebuilt from the
    /// metadata, or from the data flags).
    #[arg(long)]
    pub model: PathBuf,
    /// Fit this form only (default: all three).
    #[arg(long, value_enum)]
    pub multipliers: Option<Multipliers>,
    /// Conjugate-gradient steps at most.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `reveal stationarity`: the best multipliers of each form at the model's training set.
pub fn cmd_stationarity(args: &StationarityArgs) -> Result<()> {
    let file = load_model::<f64>(&args.model)?;
    let data = model_data(
        &args.model,
        &file.metadata,
        file.mlp.input_dim(),
        &args.data.spec()?,
        args.data.source.data_dir().as_deref(),
    )?;
    let outputs = file.mlp.outputs();
    reveal_audit::scoring::check_outputs(outputs, &data, &args.model)?;
    let mean = match &file.mean {
        Some(m) => m.row(0).to_owned(),
        None => data.mean.mapv(|v| v as f64),
    };
    let x = data.train.pixels.mapv(|v| v as f64) - &mean;
    let y = data
        .train
        .y
        .mapv(|v| v as f64)
        .insert_axis(ndarray::Axis(1));
    let own = model_multipliers(None, &file.metadata, outputs);
    let forms: Vec<Multipliers> = match args.multipliers {
        Some(f) => vec![f.for_outputs(outputs)],
        None => [Multipliers::Margin, Multipliers::Pairs, Multipliers::Signed]
            .into_iter()
            .filter(|f| f.for_outputs(outputs) == *f)
            .collect(),
    };
    let mut rows = Vec::new();
    for form in forms {
        let fit = fit_multipliers(&file.mlp.theta(), &x, &y, form, args.steps, 1e-10);
        rows.push(serde_json::json!({
            "multipliers": form,
            "training_recipe_form": form == own,
            "residual": fit.residual,
            "residual_w1": fit.residual_w1,
            "negative": fit.negative,
            "multipliers_in_use": fit.in_use,
            "steps": fit.steps,
        }));
        if !args.json {
            println!(
                "{:<7} residual ‖θ − Jλ‖/‖θ‖ {:.3e} (W1 {:.3e}), {} of {} multipliers negative, {} steps{}",
                serde_json::to_string(&form)?.trim_matches('"'),
                fit.residual,
                fit.residual_w1,
                fit.negative,
                fit.in_use,
                fit.steps,
                if form == own { "  (the form its training calls for)" } else { "" }
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct KktArgs {
    /// The trained model (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Candidate file (x, lambda, y: ±1 for a binary model, class indices 0…C−1 for C outputs).
    #[arg(long)]
    pub candidates: PathBuf,
    /// α (default: from the candidate file; for pooled runs, the best run's).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// λ_min (default: from the candidate file).
    #[arg(long)]
    pub min_lambda: Option<f64>,
    /// Float precision: f64 (the default here, for checks against other implementations), f32
    /// or bf16 (f32 with bf16 matrix-product operands).
    #[arg(long, value_enum, default_value = "f64")]
    pub precision: Precision,
    /// Write the terms and the gradients grad.x, grad.lambda here (safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the terms as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn cmd_kkt<T: Scalar>(args: &KktArgs) -> Result<()> {
    crate::args::outputs([args.out.as_deref()])?;
    let model = load_model::<T>(&args.model)?;
    let c = load_candidates::<T>(&args.candidates)?;
    check_input_width(
        model.mlp.input_dim(),
        c.x.ncols(),
        &args.candidates,
        "its candidates",
    )?;
    check_labels(&c.y, model.mlp.outputs(), &args.candidates)?;
    let from_file = c.run_config();
    let pick = |flag: Option<f64>, name: &str, get: fn(&Hyper) -> f64| -> Result<f64> {
        match (flag, &from_file) {
            (Some(v), _) => positive(name, v),
            (None, Some(cfg)) => Ok(get(&cfg.hyper)),
            (None, None) => bail!(
                "{}: no hyperparameters in the file; pass {name}",
                args.candidates.display()
            ),
        }
    };
    let alpha = pick(args.alpha, "--alpha", |h| h.alpha)?;
    let lambda_min = pick(args.min_lambda, "--min-lambda", |h| h.lambda_min)?;
    let cfg = ObjectiveConfig {
        activation: reveal_nn::Activation::ModifiedRelu(T::from_f64(alpha)),
        lambda_min: T::from_f64(lambda_min),
        multipliers: from_file.map(|c| c.multipliers).unwrap_or_default(),
    };
    let e = evaluate(&model.mlp, &c.x, &c.lambda, &c.y, cfg);
    let values = e.terms.named();
    if let Some(out) = &args.out {
        write_evaluation(out, &e, alpha, lambda_min)?;
    }
    if args.json {
        let map: BTreeMap<&str, f64> = values.iter().map(|(n, v)| (*n, v.as_f64())).collect();
        println!("{}", serde_json::to_string_pretty(&map)?);
    } else {
        for (n, v) in values {
            println!("{n:<18} {:.10e}", v.as_f64());
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// The model the candidates were reconstructed from (its metadata names its training set).
    #[arg(long)]
    pub model: PathBuf,
    /// Candidate file to score.
    #[arg(long)]
    pub recon: PathBuf,
    /// The training set: from the model's metadata; for a model without it (trained
    /// elsewhere), these data flags say which it was.
    #[command(flatten)]
    pub data: DataArgs,
    /// S is the mean SSIM of the best k pairs.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// SSIM preset: kornia3 (the paper's) or gauss11.
    #[arg(long, default_value = "kornia3")]
    pub ssim: String,
    /// Write the best 30 pairs as a PNG grid (odd rows reconstructions, even rows training images).
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Print the whole score (every pair) as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn cmd_score(args: &ScoreArgs) -> Result<()> {
    crate::args::outputs([args.grid.as_deref()])?;
    let ssim = Ssim::preset(&args.ssim)
        .with_context(|| format!("--ssim {:?}: expected kornia3 or gauss11", args.ssim))?;
    let (s, data) = score_file(
        &args.model,
        &args.recon,
        &args.data.spec()?,
        args.data.source.data_dir().as_deref(),
        args.k,
        &ssim,
        args.grid.as_deref(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let n = data.train.y.len();
    println!("S (best {})        {:.4}", s.k, s.summary.s);
    println!("ρ10               {:.4}", s.summary.rho10);
    println!("SSIM > 0.4        {} of {n}", s.summary.above_threshold);
    if let Some(r) = s.recovered {
        println!("recovered         {r} of {n} (beat their nearest held-out image)");
    }
    if let (Some(sm), Some(c)) = (s.s_margin, s.margin_count) {
        println!("S on the margin   {sm:.4} ({c} samples)");
    }
    for c in s.per_class.iter().flatten() {
        let name = data.class_names.get(c.class).map_or("", String::as_str);
        println!(
            "class {:<3} {name:<10} recovered {:>3} of {:<3}  S {:.4}, ρ10 {:.4}",
            c.class,
            c.recovered.unwrap_or(0),
            c.count,
            c.summary.s,
            c.summary.rho10
        );
    }
    for (name, b) in [
        ("mean image", s.baseline_mean),
        ("held-out images", s.baseline_heldout),
    ] {
        if let Some(b) = b {
            println!("baseline {name:<16} S {:.4}, ρ10 {:.4}", b.s, b.rho10);
        }
    }
    if let Some(g) = &args.grid {
        println!("grid              {}", g.display());
        if s.per_class.is_some() {
            let rows = reveal_audit::scoring::class_rows_path(g);
            println!("one row per class {}", rows.display());
        }
    }
    Ok(())
}

pub fn cmd_ssim(a: &Path, b: &Path, preset_name: &str) -> Result<()> {
    let ssim = Ssim::preset(preset_name)
        .with_context(|| format!("--preset {preset_name:?}: expected kornia3 or gauss11"))?;
    let load = |p: &Path| -> Result<(Vec<f32>, (usize, usize, usize))> {
        let img = reveal_data::formats::open_image(p)?;
        let colour = img.color().has_color();
        let shape = (
            if colour { 3 } else { 1 },
            img.height() as usize,
            img.width() as usize,
        );
        let bytes = reveal_data::formats::to_chw(&img, colour);
        Ok((bytes.into_iter().map(|v| v as f32 / 255.0).collect(), shape))
    };
    let ((x, sx), (y, sy)) = (load(a)?, load(b)?);
    if sx != sy {
        bail!(
            "{} is {sx:?} (C, H, W) but {} is {sy:?}",
            a.display(),
            b.display()
        );
    }
    println!("{:.6}", ssim.mean(&x, &y, sx));
    Ok(())
}
