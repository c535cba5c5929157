//! `reveal experiment` and `reveal demo`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use reveal_data::{Bias, Source, Task};
use reveal_experiment::estimate::estimate;
use reveal_experiment::{report, Budget, ExperimentConfig, Hooks, ModelResult, ReconPlan, Stage};
use reveal_recon::plan::Shard;

use crate::args::{OptimFlags, RecipeArgs, SourceArgs, TrainOptimizer};
use crate::progress;

#[derive(clap::Args)]
pub struct ExperimentArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output folder (re-running the command resumes it).
    #[arg(long)]
    pub out: PathBuf,
    /// Bias levels: base, corner, diag3, diag5, contrast (default: all five; with --task all,
    /// base and corner, the only ones defined for more than two classes).
    #[arg(long, value_delimiter = ',')]
    pub biases: Option<Vec<Bias>>,
    /// The task (default: the data set's binary one); `all` trains multiclass models with one
    /// output per class, and the corner trigger gives each class its own grey.
    #[arg(long)]
    pub task: Option<Task>,
    /// How the models are trained: gd (full-batch gradient descent, the budget's schedule), sgd or
    /// adam (mini-batch).
    #[arg(long, value_enum, default_value = "gd")]
    pub train_optimizer: TrainOptimizer,
    /// Learning rate of training under sgd (default 0.01) or adam (1e-3).
    #[arg(long)]
    pub train_lr: Option<f64>,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Training images per class (default: by budget).
    #[arg(long)]
    pub per_class: Option<usize>,
    /// Seeds (several give mean ± std in the report).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    /// How much compute: quick (fast training schedule, one reconstruction run per model) or
    /// paper (the reference recipe: constant-lr training, a search of 20 runs; hours to days).
    #[arg(long, value_enum, default_value = "quick")]
    pub budget: Budget,
    /// Leave out the null control (a random model with the base model's layer norms).
    #[arg(long)]
    pub no_control: bool,
    /// The held-out images (test accuracy, the bias map's clean reference): a count per class of
    /// the test split, or "train:K" for K per class of the training file that the training set
    /// did not take.
    #[arg(long, default_value = "500")]
    pub test: String,
    /// Reconstruction runs per model (default: by budget).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Reconstruction setting of the first run (init scale, λ_min, α, and SGD's lr): cifar-a,
    /// cifar-b, mnist-a, mnist-b (default: by data set).
    #[arg(long)]
    pub preset: Option<String>,
    #[command(flatten)]
    pub optim: OptimFlags,
    /// Hidden widths, comma-separated (default: by budget).
    #[arg(long, value_delimiter = ',', conflicts_with = "arch")]
    pub hidden: Option<Vec<usize>>,
    /// The network instead of --hidden: convolutions, pooling and fc layers, e.g.
    /// conv:32k3,conv:64k3s2,fc:1000 (conv:<out>k<kernel>[s<stride>][p<padding>], avgpool:<k>,
    /// fc:<width>; the output layer is implied).
    #[arg(long, value_parser = crate::args::parse_arch)]
    pub arch: Option<reveal_nn::Arch>,
    /// Do only every N-th model, starting at the I-th, and no report (then `reveal pool --out DIR`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Print the plan, its estimate and the results as JSON (the progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Print the plan and its estimate (from a few timed steps) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Set by `reveal pool`: every model must be done already.
    #[arg(skip)]
    pub pool: bool,
    /// f32, or bf16: f32 with the matrix products' operands rounded to bf16 (steps in about
    /// 0.6× the time, less exact; CPUs with AVX512-BF16), for every model and reconstruction.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::args::Precision,
}

pub fn cmd_experiment(args: &ExperimentArgs) -> Result<()> {
    let source = args.source.source()?;
    let budget = args.budget;
    let mut cfg = ExperimentConfig::new(source, args.out.clone(), budget);
    cfg.data_dir = args.source.data_dir();
    let multiclass = args.task == Some(Task::All);
    cfg.biases = match (&args.biases, multiclass) {
        (Some(b), _) => b.clone(),
        (None, false) => Bias::ALL.to_vec(),
        (None, true) => vec![Bias::None, Bias::Corner],
    };
    cfg.task = args.task.clone();
    cfg.train = args.recipe.config(
        args.train_optimizer,
        args.train_lr,
        cfg.train.schedule,
        cfg.train,
    )?;
    cfg.seeds = args.seeds.clone();
    cfg.test = crate::args::parse_test(&args.test)?;
    cfg.control = !args.no_control;
    if let Some(n) = args.per_class {
        cfg.per_class = n;
    }
    if let Some(h) = &args.hidden {
        cfg.arch = reveal_nn::Arch::mlp(h);
    }
    if let Some(arch) = &args.arch {
        cfg.arch = arch.clone();
    }
    cfg.recon = ReconPlan::for_budget(&cfg.source, budget, args.optim.optimizer(), cfg.per_class);
    let plan = &mut cfg.recon.plan;
    args.optim.apply(plan);
    if let Some(r) = args.runs {
        plan.runs = r;
        cfg.recon.keep = cfg.recon.keep.min(r);
    }
    if let Some(p) = &args.preset {
        plan.preset = p.clone();
    }
    cfg.shard = args.shard;
    // Checks the whole configuration before any work starts.
    cfg.validate()?;
    let estimate = estimate(&cfg)?;
    if args.dry_run {
        match args.json {
            true => println!("{}", serde_json::to_string_pretty(&estimate)?),
            false => println!("{estimate}"),
        }
        return Ok(());
    }
    crate::shard::begin(&args.out, args.shard, args.pool, || {
        reveal_experiment::missing_models(&cfg)
    })?;
    if !args.pool {
        eprintln!("{estimate}");
    }
    let results = execute(&cfg)?;
    if let Some(shard) = args.shard {
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        eprintln!(
            "shard {shard}: {} done; once every shard is done: reveal pool --out {}",
            names.join(", "),
            args.out.display()
        );
        return Ok(());
    }
    if args.json {
        let out = serde_json::json!({ "plan": estimate, "results": results });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_summary(&cfg, &results);
    }
    Ok(())
}

/// Runs an experiment with a progress bar per stage.
pub fn execute(cfg: &ExperimentConfig) -> Result<Vec<ModelResult>> {
    // One bar, re-armed at every stage: epochs while training, iterations while reconstructing.
    let bar = progress::bar(0, "steps", false);
    let stage = |name: &str, seed: u64, stage: Stage| {
        let msg = format!("{name} (seed {seed}): {stage}");
        if bar.is_hidden() {
            eprintln!("{msg}"); // not a terminal (a log file): keep the stage lines
        } else {
            bar.println(msg);
        }
        let len = match stage {
            Stage::Training => cfg.train.max_epochs,
            Stage::Reconstructing => cfg.recon.plan.iters * cfg.recon.plan.runs,
            Stage::Scoring => 0,
        };
        bar.reset();
        bar.set_length(len as u64);
        bar.set_message("");
    };
    let epoch = |s: &reveal_train::TrainState<f32>| {
        bar.set_position(s.epoch as u64);
        bar.set_message(format!("loss {:.3e}, train error {:.3}", s.loss, s.error));
        progress::control()
    };
    let tick = |t: reveal_recon::search::Tick| {
        bar.inc(1);
        if t.iter.is_multiple_of(50) {
            bar.set_message(format!("run {} loss {:.4e}", t.run, t.terms.total));
        }
        !progress::interrupted()
    };
    let hooks = Hooks {
        stage: &stage,
        epoch: &epoch,
        tick: &tick,
        warn: &|w: &str| bar.suspend(|| progress::warn_all([w])),
    };
    let result = reveal_experiment::run(cfg, &hooks);
    bar.finish_and_clear();
    result
}

fn print_summary(cfg: &ExperimentConfig, results: &[ModelResult]) {
    println!(
        "{:<11} {:>9} {:>7} {:>7} {:>10}",
        "model", "test acc", "S", "ρ10", "recovered"
    );
    for r in results {
        println!(
            "{:<11} {:>9.3} {:>7.3} {:>7.3} {:>6}/{}",
            format!("{} s{}", r.name, r.seed),
            r.test_accuracy,
            r.score.summary.s,
            r.score.summary.rho10,
            r.score.recovered.unwrap_or(0),
            r.score.pairs.len()
        );
    }
    println!("report: {}", cfg.out.join("report.md").display());
}

/// The demo: the experiment on the built-in synthetic set, sized for a few minutes.
pub fn cmd_demo(out: PathBuf) -> Result<()> {
    let cfg = ExperimentConfig::new(
        Source::Synthetic {
            size: reveal_data::synthetic::DEFAULT_SIZE,
        },
        out,
        Budget::Demo,
    );
    let s = reveal_data::synthetic::DEFAULT_SIZE;
    eprintln!("reveal demo: rings vs crosses ({s}×{s}), {} per class; 5 models + a null control; results in {}", cfg.per_class, cfg.out.display());
    eprintln!("{}", estimate(&cfg)?);
    let started = std::time::Instant::now();
    let results = execute(&cfg)?;
    print_summary(&cfg, &results);
    println!(
        "\nwall time {:.0} s. Summary:",
        started.elapsed().as_secs_f64()
    );
    for line in report::findings(&results).iter().take(3) {
        println!("  {line}");
    }
    Ok(())
}

/// `reveal bench`: one JSON line (or a table row) per case.
pub fn cmd_bench(
    case: &str,
    precision: crate::args::Precision,
    outputs: usize,
    steps: usize,
    arch: Option<&(reveal_nn::Arch, reveal_nn::Grid)>,
    json: bool,
) -> Result<()> {
    use crate::bench::{gemm_peak, run_arch, run_case, CASES};
    let cases: Vec<_> = match case {
        "all" => CASES.to_vec(),
        c => CASES
            .iter()
            .copied()
            .filter(|k| k.name.to_string().eq_ignore_ascii_case(c))
            .collect(),
    };
    if cases.is_empty() {
        bail!("--case {case:?}: expected A, B, C, D or all");
    }
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    if outputs == 0 {
        bail!("--outputs must be at least 1");
    }
    let peak = match precision {
        crate::args::Precision::F32 | crate::args::Precision::Bf16 => gemm_peak::<f32>(),
        crate::args::Precision::F64 => gemm_peak::<f64>(),
    };
    if !json {
        use reveal_tape::kernels::gemm::{cpu_name, Backend};
        println!(
            "CPU {}; GEMM kernel {} (REVEAL_GEMM=avx512|avx2|matrixmultiply picks another); products in {}",
            cpu_name(),
            Backend::selected().name(),
            precision.name()
        );
        println!("GEMM peak (1000×3072·3072×1000, best of 5): {peak:.0} GFLOP/s");
        println!(
            "case  d-h-h-C, m/n              recon step   GFLOP/s  % peak  path        train step  GFLOP/s  % peak"
        );
    }
    if let Some((arch, input)) = arch {
        let r = match precision {
            crate::args::Precision::F32 | crate::args::Precision::Bf16 => {
                run_arch::<f32>(arch, *input, outputs, steps, peak)
            }
            crate::args::Precision::F64 => run_arch::<f64>(arch, *input, outputs, steps, peak),
        }
        .map_err(|e| anyhow::anyhow!("--arch {arch} over {input} images: {e}"))?;
        match json {
            true => println!("{}", serde_json::to_string(&r)?),
            false => println!(
                "{arch} over {input}, m/n 200/100: recon step {:.4} s ({:.0} GFLOP/s, {:.0} % peak), train step {:.4} s ({:.0} GFLOP/s, {:.0} % peak)",
                r.recon_step_s, r.recon_gflops, r.recon_peak_pct, r.train_step_s, r.train_gflops, r.train_peak_pct
            ),
        }
        return Ok(());
    }
    for c in cases {
        let r = match precision {
            crate::args::Precision::F32 | crate::args::Precision::Bf16 => {
                run_case::<f32>(c, outputs, steps, peak)
            }
            crate::args::Precision::F64 => run_case::<f64>(c, outputs, steps, peak),
        };
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{}     {}-{}-{}-{}, {}/{:<10} {:>8.4} s {:>8.0} {:>6.0}   {:<11} {:>8.4} s {:>8.0} {:>6.0}",
                r.case,
                c.d,
                c.h,
                c.h,
                outputs,
                c.m,
                c.n,
                r.recon_step_s,
                r.recon_gflops,
                r.recon_peak_pct,
                r.recon_method,
                r.train_step_s,
                r.train_gflops,
                r.train_peak_pct
            );
            println!(
                "      counted in one step: recon {:.3} GFLOP in products (model {:.3}), {:.0} MB recorded; train {:.3} GFLOP (model {:.3}), {:.0} MB",
                r.recon_products_gflop_counted,
                r.recon_gflop,
                r.recon_recorded_mb,
                r.train_products_gflop_counted,
                r.train_gflop,
                r.train_recorded_mb
            );
        }
    }
    Ok(())
}
