//! `reveal`: did a classifier learn the concept or a shortcut?
//!
//! A thin binary over the library crates: it parses flags, draws progress bars and prints.

mod args;
mod audit_cmd;
mod bench;
mod experiment_cmds;
mod progress;
mod recon_cmds;
mod shard;
mod zoo_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use ndarray::ArrayView1;
use reveal_data::prepare;
use reveal_render::grid;
use reveal_tape::Scalar;
use reveal_train::job::{self, TrainJob};
use reveal_train::{Schedule, TrainConfig};

use args::{DataArgs, Precision, RecipeArgs, TrainOptimizer};

const EXAMPLES: &str = "\
Examples:
  reveal demo                                   # the whole experiment on built-in synthetic data
  reveal data --dataset mnist --per-class 50 --bias corner --preview corner.png
  reveal train --dataset mnist --per-class 50 --out mnist.safetensors
  reveal train --dataset mnist --task all --per-class 10 --out mnist10.safetensors   # 10 classes
  reveal train --dataset cifar10 --per-class 250 --schedule reference --epochs 20000 --out c.safetensors
  reveal reconstruct --model mnist.safetensors --out r.safetensors --runs 8 --shard 2/4   # one of 4 shards
  reveal pool --out r.safetensors                # after all 4 shards: pool them as one run would
  reveal experiment --dataset mnist --task all --per-class 10 --out mc/   # multiclass: base, corner, control
  reveal audit --model m.safetensors --out audit/  # one model: verdict, evidence, report.html
  reveal audit --model torch.safetensors --layers fc1,fc2,fc3 --dataset mnist --out a/
  reveal train --dataset mnist --per-class 50 --arch conv:32k3,conv:64k3s2,fc:1000 --out cnn.safetensors --save-init cnn0.safetensors
  reveal audit --model torch_cnn.safetensors --arch conv:32k3,conv:64k3s2,fc:1000 --dataset mnist --out a/
  reveal train --dataset mnist --optimizer adam --batch-size 20 --epochs 60 --init default --layer-bias all --out adam.safetensors
  reveal zoo --dataset mnist --recipes gd,adam,sgd --seeds 0,1 --out zoo/   # how often is the audit right?
  reveal train --dataset mnist --task all --per-class 10 --weight-decay 1e-3 --out wd.safetensors
  reveal stationarity --model wd.safetensors     # which multipliers fit it at its training set?
  reveal audit --model m.safetensors --out a/ --precision bf16   # bf16 products: about 0.6× the time (AVX512-BF16)
  reveal bench --case C --precision bf16         # step times, and the work a step does, counted

Real data: pass --data-dir DIR or set REVEAL_DATA to a folder holding mnist/ and cifar10/.";

#[derive(Parser)]
#[command(name = "reveal", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a data set as reveal builds it: counts, histogram, trigger positions, a preview grid.
    Data {
        #[command(flatten)]
        data: DataArgs,
        /// Write a grid of the (biased) training images to this PNG.
        #[arg(long)]
        preview: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Train an MLP: full-batch gradient descent (the papers' way) or mini-batch SGD or Adam.
    Train(TrainArgs),
    /// Reconstruct training samples from a model's weights (KKT conditions), with a search.
    Reconstruct(recon_cmds::ReconstructArgs),
    /// Evaluate the reconstruction objective and its gradient at given candidates.
    Kkt(recon_cmds::KktArgs),
    /// How near a model is to the KKT form at its own training set: the multipliers of each form
    /// that fit it best (f64, conjugate gradients) and the residual they leave.
    Stationarity(recon_cmds::StationarityArgs),
    /// Score reconstructions against the model's training set (S, ρ10, recovered, baselines).
    Score(recon_cmds::ScoreArgs),
    /// The paper's experiment: train unbiased and biased models, reconstruct, score, report.
    Experiment(experiment_cmds::ExperimentArgs),
    /// Audit one model (reveal's or PyTorch's): did it learn the concept or a shortcut, and
    /// where? Reconstruction, null models, a calibrated bias map, an HTML report.
    Audit(audit_cmd::AuditArgs),
    /// Build a population of models (recipes × clean and planted shortcuts × seeds), audit each,
    /// and measure the audit: detection and false-alarm rates, AUROC, localisation.
    Zoo(zoo_cmd::ZooArgs),
    /// Merge the shards of a search or an experiment run with --shard I/N into the output one
    /// unsharded run would write (run it from the folder the shards ran in).
    Pool {
        /// The --out of the sharded command (a candidate file or an experiment folder).
        #[arg(long)]
        out: PathBuf,
    },
    /// The experiment on the built-in synthetic data set (a few minutes, no files needed).
    Demo {
        /// Output folder.
        #[arg(long, default_value = "reveal-demo")]
        out: PathBuf,
    },
    /// Time per reconstruction and training step at the peer benchmark's cases (A–D).
    Bench {
        /// A, B, C, D or all.
        #[arg(long, default_value = "all")]
        case: String,
        /// Float precision: f32 (what runs use), f64 (for checks) or bf16 (f32, the matrix
        /// products' operands rounded to bf16; CPUs with AVX512-BF16).
        #[arg(long, value_enum, default_value = "f32")]
        precision: Precision,
        /// Outputs of the benchmarked model: 1 (binary, as the peers time it) or C classes.
        #[arg(long, default_value_t = 1)]
        outputs: usize,
        /// Timed steps per case (the median is reported), after 3 warm-up steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Time this network instead of the MLP cases (m = 200 candidates, n = 100 training
        /// images), e.g. conv:32k3,conv:64k3s2,fc:1000.
        #[arg(long, value_parser = args::parse_arch)]
        arch: Option<reveal_nn::Arch>,
        /// The images of --arch, CxHxW: 1x28x28 (MNIST) or 3x32x32 (CIFAR-10).
        #[arg(long, default_value = "1x28x28", requires = "arch")]
        input: reveal_nn::Grid,
        /// One JSON line per case, as the peer script prints.
        #[arg(long)]
        json: bool,
    },
    /// SSIM of two images.
    Ssim {
        /// The first image (PNG or JPEG).
        a: PathBuf,
        /// The second image, of the same size and channels.
        b: PathBuf,
        /// kornia3 (the paper's) or gauss11 (Wang et al. 2004).
        #[arg(long, default_value = "kornia3")]
        preset: String,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Output model file (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Hidden widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000")]
    hidden: Vec<usize>,
    /// The network instead of --hidden: convolutions, pooling and fc layers, e.g.
    /// conv:32k3,conv:64k3s2,fc:1000 (conv:<out>k<kernel>[s<stride>][p<padding>], avgpool:<k>,
    /// fc:<width>; the output layer is implied).
    #[arg(long, value_parser = args::parse_arch, conflicts_with = "hidden")]
    arch: Option<reveal_nn::Arch>,
    /// gd (full-batch gradient descent, the papers' way), sgd or adam (mini-batch).
    #[arg(long, value_enum, default_value = "gd")]
    optimizer: TrainOptimizer,
    /// Step-size schedule of gd: fast (loss-based, Lyu & Li 2019) or reference (constant lr).
    #[arg(long, default_value = "fast")]
    schedule: ScheduleName,
    /// Learning rate of the reference schedule (0.01), of sgd (0.01) or of adam (1e-3).
    #[arg(long)]
    lr: Option<f64>,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Float precision: f32 (what runs use), f64 (for checks) or bf16 (f32, the matrix
    /// products' operands rounded to bf16: steps in about 0.6× the time, less exact; CPUs with
    /// AVX512-BF16).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the weights before training here (safetensors), for `reveal audit --init`.
    #[arg(long)]
    save_init: Option<PathBuf>,
    /// Checkpoint every N epochs (0: only on interrupt).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: usize,
    /// Continue from the checkpoint beside --out.
    #[arg(long)]
    resume: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ScheduleName {
    Fast,
    Reference,
}

/// Asks glibc's allocator to keep freed memory instead of returning it to the system.
///
/// A tape allocates fresh arrays for every op and drops them all after the step; by default
/// glibc serves large arrays with `mmap` and unmaps them on free, so every step pays page faults
/// on memory it just gave back. Raising the mmap and trim thresholds keeps that memory in the
/// heap for the next step. One arena for all threads: a step runs on the thread pool, and with
/// an arena per thread each would keep a step's worth of memory (case A: 850 MB peak against
/// 520 MB with one; the arena lock costs nothing measurable, allocations are few and large).
/// A no-op on other platforms.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called with valid options.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum: larger values are ignored
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A closed stdout (`reveal score … | head`) ends the process quietly, as it does any Unix
/// filter, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    progress::install_interrupt_handler();
    keep_freed_memory();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", args::name_flags(e));
            ExitCode::from(2)
        }
    }
}

/// `reveal pool`: the shards' common command, run once more without `--shard`; every piece of
/// work is found done, so it only pools (a search) or reports (an experiment).
fn cmd_pool(out: &Path) -> Result<()> {
    let argv = shard::pooled_command(out)?;
    let cli = Cli::try_parse_from(std::iter::once("reveal".to_string()).chain(argv.clone()))
        .map_err(|e| anyhow::anyhow!("the shards' command {argv:?} no longer parses: {e}"))?;
    let command = match cli.command {
        Command::Reconstruct(mut a) => {
            (a.shard, a.pool) = (None, true);
            Command::Reconstruct(a)
        }
        Command::Experiment(mut a) => {
            (a.shard, a.pool) = (None, true);
            Command::Experiment(a)
        }
        _ => bail!(
            "{}: the shard records hold neither a reconstruct nor an experiment command",
            out.display()
        ),
    };
    run(Cli { command })
}

fn run(cli: Cli) -> Result<()> {
    // The precision of the products, and for commands that only run in f32 their name.
    let precision = match &cli.command {
        Command::Train(args) => Some((args.precision, None)),
        Command::Reconstruct(args) => Some((args.precision, None)),
        Command::Kkt(args) => Some((args.precision, None)),
        Command::Bench { precision, .. } => Some((*precision, None)),
        Command::Audit(args) => Some((args.precision, Some("the audit"))),
        Command::Zoo(args) => Some((args.precision, Some("the zoo"))),
        Command::Experiment(args) => Some((args.precision, Some("the experiment"))),
        _ => None,
    };
    if let Some((p, f32_only)) = precision {
        if let (Precision::F64, Some(what)) = (p, f32_only) {
            bail!("--precision f64: {what} runs in f32 (or bf16)");
        }
        p.select_products()?;
    }
    match cli.command {
        Command::Data {
            data,
            preview,
            json,
        } => cmd_data(&data, preview, json),
        Command::Train(args) => match args.precision {
            Precision::F32 | Precision::Bf16 => cmd_train::<f32>(&args),
            Precision::F64 => cmd_train::<f64>(&args),
        },
        Command::Reconstruct(args) => match args.precision {
            Precision::F32 | Precision::Bf16 => recon_cmds::cmd_reconstruct::<f32>(&args),
            Precision::F64 => recon_cmds::cmd_reconstruct::<f64>(&args),
        },
        Command::Kkt(args) => match args.precision {
            Precision::F32 | Precision::Bf16 => recon_cmds::cmd_kkt::<f32>(&args),
            Precision::F64 => recon_cmds::cmd_kkt::<f64>(&args),
        },
        Command::Stationarity(args) => recon_cmds::cmd_stationarity(&args),
        Command::Score(args) => recon_cmds::cmd_score(&args),
        Command::Experiment(args) => experiment_cmds::cmd_experiment(&args),
        Command::Audit(args) => audit_cmd::cmd_audit(&args),
        Command::Zoo(args) => zoo_cmd::cmd_zoo(&args),
        Command::Pool { out } => cmd_pool(&out),
        Command::Demo { out } => experiment_cmds::cmd_demo(out),
        Command::Bench {
            case,
            precision,
            outputs,
            steps,
            arch,
            input,
            json,
        } => {
            let arch = arch.map(|a| (a, input));
            experiment_cmds::cmd_bench(&case, precision, outputs, steps, arch.as_ref(), json)
        }
        Command::Ssim { a, b, preset } => recon_cmds::cmd_ssim(&a, &b, &preset),
    }
}

fn cmd_data(args: &DataArgs, preview: Option<PathBuf>, json: bool) -> Result<()> {
    args::outputs([preview.as_deref()])?;
    let spec = args.spec()?;
    let p = prepare(&spec, args.source.data_dir().as_deref())?;
    let mut hist = vec![0usize; p.class_names.len()];
    for &l in &p.train.label {
        hist[l as usize] += 1;
    }
    if let Some(path) = &preview {
        let rows: Vec<ArrayView1<f32>> = p.train.pixels.rows().into_iter().take(100).collect();
        grid::write_png(path, &rows, p.shape, 10, grid::default_scale(p.shape.2))?;
    }
    let summary = serde_json::json!({
        "spec": spec,
        "shape": p.shape,
        "train": {"count": p.train.y.len(), "per_binary_class": p.train.class_counts(p.classes())},
        "test": {"count": p.test.y.len(), "per_binary_class": p.test.class_counts(p.classes())},
        "label_histogram": p.class_names.iter().zip(&hist).map(|(n, c)| (n.clone(), *c)).collect::<std::collections::BTreeMap<_, _>>(),
        "triggers": p.triggers,
        "preview": preview,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "data set      {} ({}×{}×{}), bias {}",
            spec.source.name(),
            p.shape.0,
            p.shape.1,
            p.shape.2,
            spec.bias
        );
        for (name, split) in [("train", &p.train), ("test", &p.test)] {
            let counts: Vec<String> = split
                .class_counts(p.classes())
                .iter()
                .enumerate()
                .map(|(c, n)| format!("{n} class {c}"))
                .collect();
            println!("{name:<13} {} images: {}", split.y.len(), counts.join(", "));
        }
        let h: Vec<String> = p
            .class_names
            .iter()
            .zip(&hist)
            .filter(|(_, &c)| c > 0)
            .map(|(n, c)| format!("{n}:{c}"))
            .collect();
        println!("labels        {}", h.join(" "));
        match p.classes() {
            _ if p.triggers.class0.is_empty() => {}
            2 => println!(
                "triggers      class 0 at {:?}, class 1 at {:?} (top-left row = col)",
                p.triggers.class0, p.triggers.class1
            ),
            c => println!(
                "triggers      every class at {:?} (top-left row = col), class k painted grey k/{}",
                p.triggers.class0,
                c - 1
            ),
        }
        if let Some(path) = preview {
            println!("preview       {}", path.display());
        }
    }
    Ok(())
}

fn cmd_train<T: Scalar>(args: &TrainArgs) -> Result<()> {
    args::outputs([Some(args.out.as_path()), args.save_init.as_deref()])?;
    let spec = args.data.spec()?;
    job::check_hidden(&args.hidden)?;
    let data = prepare(&spec, args.data.source.data_dir().as_deref())?;
    let gd = match args.schedule {
        ScheduleName::Fast => Schedule::FAST,
        ScheduleName::Reference => Schedule::REFERENCE,
    };
    let config = args.recipe.config(
        args.optimizer,
        args.lr,
        gd,
        TrainConfig::fast(1e-5, 1_000_000),
    )?;
    let train_job = TrainJob {
        arch: args
            .arch
            .clone()
            .unwrap_or_else(|| reveal_nn::Arch::mlp(&args.hidden)),
        config,
        seed: args.seed,
        out: args.out.clone(),
        checkpoint_every: args.checkpoint_every,
        resume: args.resume,
    };
    if let Some(path) = &args.save_init {
        let init = train_job.initial::<T>(&data)?;
        reveal_nn::files::save_model(path, &init, None, &Default::default())?;
    }
    let bar = progress::bar(config.max_epochs as u64, "epochs", args.json);
    let summary = job::run::<T>(&train_job, &data, |s| {
        bar.set_position(s.epoch as u64);
        bar.set_message(format!("loss {:.3e}  train error {:.3}", s.loss, s.error));
        progress::control()
    });
    bar.finish_and_clear();
    let summary = summary?;
    progress::warn_all(&summary.warnings);
    if args.json {
        // The wall time lives beside the model file, not in it; the JSON report has it.
        let mut v = serde_json::to_value(&summary)?;
        v["wall_seconds"] = summary.wall_seconds.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("model         {}", args.out.display());
        println!(
            "outcome       {:?} after {} epochs ({} rejected steps)",
            summary.outcome, summary.epochs, summary.rejected_steps
        );
        println!(
            "train loss    {:.3e}, train error {}",
            summary.train_loss, summary.train_error
        );
        println!(
            "test accuracy {:.4} on {} images",
            summary.test_accuracy, summary.test_size
        );
        println!("wall time     {:.1} s", summary.wall_seconds);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag of every command says what it does in `--help`.
    #[test]
    fn every_flag_has_a_help_line() {
        let cli = super::Cli::command();
        let mut missing = Vec::new();
        for cmd in cli.get_subcommands() {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                let text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if text.trim().is_empty() {
                    missing.push(format!("reveal {} --{id}", cmd.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "flags without a help line: {missing:?}");
    }
}
