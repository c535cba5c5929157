//! Flags shared by several subcommands, and their conversion into library types.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use reveal_audit::scoring::TopK;
use reveal_data::NoDataDir;
use reveal_data::{Bias, DataSpec, Selection, Source, Task, TestSelection};
use reveal_nn::files::NameTheLayers;
use reveal_nn::{Biases, Init};
use reveal_recon::optim::{LrSchedule, Optimizer, StopRule};
use reveal_recon::plan::{PlanError, Setting};
use reveal_recon::Plan;
use reveal_train::job::TrainStopped;
use reveal_train::{Loss, Schedule, TrainConfig};

/// The data sets `reveal` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    Mnist,
    Cifar10,
    Folder,
    Synthetic,
}

/// Float precision of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// f32: what runs use.
    F32,
    /// f64: for checks.
    F64,
    /// f32 with the matrix products' operands rounded to bf16 and summed in f32: about 1.8×
    /// the products per second, on CPUs with AVX512-BF16 only.
    Bf16,
}

impl Precision {
    /// Makes every f32 matrix product of the process bf16 for `bf16`; an error naming the CPU
    /// when it has no AVX512-BF16.
    pub fn select_products(self) -> Result<()> {
        if self == Precision::Bf16 {
            reveal_tape::kernels::gemm::GemmPrecision::Bf16
                .select()
                .map_err(|e| anyhow::anyhow!("--precision bf16: {e}"))?;
        }
        Ok(())
    }

    /// Name for files and messages: `f32`, `f64` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Where the images come from.
#[derive(Args, Clone, Debug)]
pub struct SourceArgs {
    /// Data set.
    #[arg(long, value_enum, default_value = "synthetic")]
    pub dataset: DatasetName,
    /// Folder holding mnist/ and cifar10/ (default: $REVEAL_DATA).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// For --dataset folder: the image folder (one sub-folder per class).
    #[arg(long)]
    pub folder: Option<PathBuf>,
    /// For --dataset folder: a separate test folder (default: unused images of --folder).
    #[arg(long)]
    pub test_folder: Option<PathBuf>,
    /// Resize folder images to HxW, e.g. 32x32 (synthetic: side of the images, e.g. 16x16).
    #[arg(long)]
    pub size: Option<String>,
}

impl SourceArgs {
    /// The library's description of the source.
    pub fn source(&self) -> Result<Source> {
        let size = self.size.as_deref().map(parse_size).transpose()?;
        Ok(match self.dataset {
            DatasetName::Mnist => Source::Mnist,
            DatasetName::Cifar10 => Source::Cifar10,
            DatasetName::Synthetic => {
                let side = match size {
                    None => reveal_data::synthetic::DEFAULT_SIZE,
                    Some((h, w)) if h == w && h >= 8 => h,
                    Some(_) => {
                        bail!("--size: synthetic images are square with a side of at least 8")
                    }
                };
                Source::Synthetic { size: side }
            }
            DatasetName::Folder => {
                let Some(root) = self.folder.clone() else {
                    bail!("--dataset folder needs --folder DIR");
                };
                Source::Folder {
                    root,
                    test_root: self.test_folder.clone(),
                    size,
                }
            }
        })
    }

    /// `--data-dir`, else `$REVEAL_DATA`.
    pub fn data_dir(&self) -> Option<PathBuf> {
        reveal_data::data_dir(self.data_dir.as_deref())
    }
}

/// Which training images, with which bias.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The task: odd-even (MNIST's default), vehicles-animals (CIFAR-10's), cat-dog, the classes
    /// of class 0 and of class 1 as names or indices, e.g. 3,5,8/0,6, or all (every class its
    /// own: a multiclass model with one output per class).
    #[arg(long)]
    pub task: Option<Task>,
    /// For --dataset folder: comma-separated class names forming class 0 (y = −1).
    #[arg(long, value_delimiter = ',')]
    pub class0: Vec<String>,
    /// For --dataset folder: comma-separated class names forming class 1 (y = +1).
    #[arg(long, value_delimiter = ',')]
    pub class1: Vec<String>,
    /// Training images per class of the task (n = 2 × this for a binary task).
    #[arg(long, default_value_t = 50)]
    pub per_class: usize,
    /// Planted bias of the training images: none, corner, diag3, diag5, contrast.
    #[arg(long, default_value = "none")]
    pub bias: Bias,
    /// Seed of the bias positions.
    #[arg(long, default_value_t = 0)]
    pub bias_seed: u64,
    /// Pick training images at random with this seed instead of the first of each class.
    #[arg(long)]
    pub random_selection: Option<u64>,
    /// Test images per class of the test split, "all" of it, or "train:K": K per class of the
    /// training file that the training set did not take (held out from the training data's own
    /// distribution).
    #[arg(long, default_value = "500")]
    pub test: String,
}

/// How a reconstruction run moves its candidates: the flags `reconstruct` and `experiment`
/// share.
#[derive(Args, Clone, Debug)]
pub struct OptimFlags {
    /// adam (the default: 2,500 iterations, lr 1e-2 for x in pixel units and 3e-3 for λ, decayed
    /// by a cosine) or sgd (the reference's recipe: SGD with momentum at a preset's lr, λ lr
    /// 1e-4, constant, 20,000 iterations for MNIST and 10,000 for CIFAR-10).
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: Optimizer,
    /// Iterations per run (default: by optimizer and budget).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Learning rate of x (default: Adam's 1e-2, or the preset's under SGD).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning rate of λ (default: 3e-3 under Adam, 1e-4 under SGD).
    #[arg(long)]
    pub lambda_lr: Option<f64>,
    /// Learning-rate schedule: constant or cosine (default: cosine under Adam, constant under SGD).
    #[arg(long, value_enum)]
    pub schedule: Option<LrSchedule>,
    /// Stop a run early once its candidates move less than this (relative) over a window of
    /// --stop-window iterations; --iters is then a cap (default: no early stop).
    #[arg(long)]
    pub stop_tol: Option<f64>,
    /// The window of --stop-tol, in iterations.
    #[arg(long, default_value_t = 250)]
    pub stop_window: usize,
}

impl OptimFlags {
    /// The library's optimizer.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// Puts the flags given into a plan made for [`OptimFlags::optimizer`].
    pub fn apply(&self, plan: &mut Plan) {
        plan.iters = self.iters.unwrap_or(plan.iters);
        plan.pins.lr = self.lr;
        plan.lambda_lr = self.lambda_lr.unwrap_or(plan.lambda_lr);
        if let Some(s) = self.schedule {
            plan.schedule = s;
        }
        plan.stop = self.stop_tol.map(|tol| StopRule {
            window: self.stop_window,
            tol,
        });
    }
}

/// How a model is trained: full-batch gradient descent (the papers' way, which the KKT theory
/// assumes) or the mini-batch recipes practitioners use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrainOptimizer {
    /// Full-batch gradient descent with --schedule (fast or reference).
    Gd,
    /// Mini-batch SGD with --momentum.
    Sgd,
    /// Mini-batch Adam (β 0.9, 0.999).
    Adam,
}

/// The training loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossFlag {
    /// log(1 + exp(−y·f)) for one output, y = ±1.
    Logistic,
    /// log Σ_j exp Φ_j − Φ_y for C outputs (the logistic loss's C-class form).
    CrossEntropy,
    /// ‖Φ − t‖² on targets t: ±1 for one output, one-hot for C (the reconstruction then fits
    /// signed multipliers).
    Squared,
}

/// The training-recipe flags `train` and `experiment` share (the optimiser and its learning rate
/// are each command's own: in `experiment`, --optimizer and --lr are the reconstruction's).
#[derive(Args, Clone, Debug)]
pub struct RecipeArgs {
    /// Mini-batch size of sgd and adam.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Momentum of sgd.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Epochs: the cap of full-batch descent (default 1,000,000 for train, by budget for
    /// experiment), the count of a mini-batch run (default 100).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop when the training loss is below this with zero training error (default: 1e-5 for
    /// gd; none for sgd and adam, which run their epochs).
    #[arg(long)]
    pub target_loss: Option<f64>,
    /// Weight decay wd: adds (wd/2)·‖θ‖² over every parameter, biases included, to the loss
    /// (PyTorch's weight_decay for sgd and adam). The loss then has a floor: full-batch descent
    /// ends at --epochs or at the stationary point.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// small (the papers': W1, b1 ~ N(0,1)·1e-4, later layers PyTorch's) or default (PyTorch's
    /// nn.Linear init for every layer: U(±1/√fan_in) for weights and biases).
    #[arg(long, value_enum, default_value = "small")]
    pub init: Init,
    /// first (a bias in the first layer only: homogeneous, the papers' setting) or all (a bias in
    /// every layer, as PyTorch's nn.Linear).
    #[arg(long, value_enum, default_value = "first")]
    pub layer_bias: Biases,
    /// The loss: logistic (one output) or cross-entropy (C outputs), the default for the task;
    /// or squared. With --weight-decay every parameter decays, and the reconstruction fits the
    /// multipliers that loss's stationary point has (docs/DESIGN.md §7).
    #[arg(long, value_enum)]
    pub loss: Option<LossFlag>,
}

impl RecipeArgs {
    /// `base` (the command's defaults for full-batch descent) with the recipe the flags give:
    /// `optimizer`, its learning rate `lr` (default: 0.01 for the reference schedule and sgd,
    /// 1e-3 for adam) and `gd` the full-batch schedule.
    pub fn config(
        &self,
        optimizer: TrainOptimizer,
        lr: Option<f64>,
        gd: Schedule,
        mut base: TrainConfig,
    ) -> Result<TrainConfig> {
        let lr = lr.map(|v| positive("--lr", v)).transpose()?;
        let batch_size = match self.batch_size {
            0 => bail!("--batch-size: at least 1"),
            b => b,
        };
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum {}: must be in [0, 1)", self.momentum);
        }
        base.schedule = match (optimizer, gd) {
            (TrainOptimizer::Gd, Schedule::Reference { lr: default }) => Schedule::Reference {
                lr: lr.unwrap_or(default),
            },
            (TrainOptimizer::Gd, schedule) => schedule,
            (TrainOptimizer::Sgd, _) => Schedule::Sgd {
                lr: lr.unwrap_or(0.01),
                momentum: self.momentum,
                batch_size,
            },
            (TrainOptimizer::Adam, _) => Schedule::Adam {
                lr: lr.unwrap_or(1e-3),
                batch_size,
            },
        };
        let minibatch = optimizer != TrainOptimizer::Gd;
        if minibatch {
            (base.max_epochs, base.target_loss) = (100, 0.0);
        }
        base.max_epochs = self.epochs.unwrap_or(base.max_epochs);
        if let Some(t) = self.target_loss {
            base.target_loss = positive("--target-loss", t)?;
        }
        base.weight_decay = non_negative("--weight-decay", self.weight_decay)?;
        (base.init, base.biases) = (self.init, self.layer_bias);
        base.loss = match self.loss {
            Some(LossFlag::Squared) => Loss::Squared,
            Some(LossFlag::Logistic | LossFlag::CrossEntropy) | None => Loss::Logistic,
        };
        Ok(base)
    }
}

/// An error of the libraries in the words of the flags that caused it: a plan's
/// ([`PlanError`], from `reconstruct`, `experiment`, `audit` and `zoo`), a best-k count's
/// ([`TopK`], from `score`), a missing data folder's ([`NoDataDir`]), a model whose layers need
/// naming ([`NameTheLayers`]) and a `train` run interrupted without `--resume`
/// ([`TrainStopped`]) name their flag; any other error is passed on as it is.
pub fn name_flags(e: anyhow::Error) -> anyhow::Error {
    let e = match e.downcast::<NoDataDir>() {
        Ok(NoDataDir(what)) => {
            return anyhow::anyhow!(
            "{what} needs its files: pass --data-dir DIR or set REVEAL_DATA (see data/README.md)"
        )
        }
        Err(e) => e,
    };
    let e = match e.downcast::<NameTheLayers>() {
        Ok(NameTheLayers(problem)) => {
            return anyhow::anyhow!(
                "{problem}; pass --layers NAME,NAME,… in the network's order, e.g. --layers fc1,fc2,fc3"
            )
        }
        Err(e) => e,
    };
    let e = match e.downcast::<TrainStopped>() {
        Ok(TrainStopped::Interrupted {
            epoch,
            checkpoint,
            resume: false,
        }) => {
            return anyhow::anyhow!(
                "interrupted at epoch {epoch}: checkpoint {} written; run the same command with --resume to continue",
                checkpoint.display()
            )
        }
        Ok(stopped) => return stopped.into(),
        Err(e) => e,
    };
    let e = match e.downcast::<TopK>() {
        Ok(TopK { k, training }) => {
            return anyhow::anyhow!("--k {k}: must be between 1 and the {training} training images")
        }
        Err(e) => e,
    };
    let p = match e.downcast::<PlanError>() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let flag = |s: Setting| match s {
        Setting::Lr => "--lr",
        Setting::InitScale => "--init-scale",
        Setting::LambdaMin => "--min-lambda",
        Setting::Alpha => "--alpha",
        Setting::LambdaLr => "--lambda-lr",
        Setting::StopTol => "--stop-tol",
    };
    anyhow::anyhow!(match p {
        PlanError::UnknownPreset { name, known } => {
            format!("--preset {name:?}: expected one of {known}")
        }
        PlanError::Candidates(m) => {
            format!("--candidates {m}: must be even and at least 2 (half per class)")
        }
        PlanError::NoRuns => "--runs 0: a search needs at least one run".into(),
        PlanError::NoIterations => "--iters 0: a run needs at least one iteration".into(),
        PlanError::NotPositive { setting, value } => {
            format!("{} {value}: must be a positive number", flag(setting))
        }
    })
}

/// Checks, before any work, that each output path given can be written: it must not be an
/// existing device, FIFO or folder, which the atomic rename would replace.
pub fn outputs<'a>(paths: impl IntoIterator<Item = Option<&'a std::path::Path>>) -> Result<()> {
    paths
        .into_iter()
        .flatten()
        .try_for_each(reveal_io::check_replaceable)
}

/// Checks that a rate or threshold is a positive finite number.
pub fn positive(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        bail!("{flag} {v}: must be a positive number")
    }
}

/// The value of a flag that must be a number ≥ 0 (a weight decay).
pub fn non_negative(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        bail!("{flag} {v}: must be a number ≥ 0")
    }
}

/// Parses `--test`: a count per class, "all", or "train:K".
pub fn parse_test(v: &str) -> Result<TestSelection> {
    let count = |k: &str| match k.parse::<usize>() {
        Ok(k) if k > 0 => Ok(k),
        _ => bail!("--test {v:?}: expected a positive count, \"all\" or \"train:K\""),
    };
    Ok(match v {
        "all" => TestSelection::All,
        _ => match v.strip_prefix("train:") {
            Some(k) => TestSelection::HeldOut(count(k)?),
            None => TestSelection::PerClass(count(v)?),
        },
    })
}

/// Parses "HxW" or "S".
pub fn parse_size(s: &str) -> Result<(usize, usize)> {
    let parts: Vec<&str> = s.split(['x', 'X']).collect();
    let nums: Result<Vec<usize>, _> = parts.iter().map(|p| p.trim().parse::<usize>()).collect();
    match nums.as_deref() {
        Ok([h, w]) if *h > 0 && *w > 0 => Ok((*h, *w)),
        Ok([s]) if *s > 0 => Ok((*s, *s)),
        _ => bail!("--size {s:?}: expected HxW, e.g. 32x32"),
    }
}

impl DataArgs {
    /// The library's description of this data set.
    pub fn spec(&self) -> Result<DataSpec> {
        let source = self.source.source()?;
        let mut spec = DataSpec::new(source, self.per_class);
        if let Some(task) = &self.task {
            if !self.class0.is_empty() || !self.class1.is_empty() {
                bail!("--task and --class0/--class1 say the same thing: give one of them");
            }
            spec.task = task.clone();
        }
        if !self.class0.is_empty() || !self.class1.is_empty() {
            if self.source.dataset != DatasetName::Folder {
                bail!("--class0/--class1 apply to --dataset folder only (use --task A,B/C,D)");
            }
            spec.task = Task::Split {
                class0: self.class0.clone(),
                class1: self.class1.clone(),
            };
        }
        spec.bias = self.bias;
        spec.seed = self.bias_seed;
        if let Some(seed) = self.random_selection {
            spec.selection = Selection::Random { seed };
        }
        spec.test = parse_test(&self.test)?;
        Ok(spec)
    }
}

/// `--arch`: conv:<out>k<kernel>[s<stride>][p<padding>], avgpool:<k> and fc:<width>, in order.
pub fn parse_arch(s: &str) -> std::result::Result<reveal_nn::Arch, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_flag_takes_a_count_all_or_held_out_training_images() {
        assert_eq!(parse_test("500").unwrap(), TestSelection::PerClass(500));
        assert_eq!(parse_test("all").unwrap(), TestSelection::All);
        assert_eq!(
            parse_test("train:200").unwrap(),
            TestSelection::HeldOut(200)
        );
        for bad in ["0", "train:0", "train:", "x", "-3"] {
            let e = parse_test(bad).unwrap_err().to_string();
            assert!(e.contains("--test") && e.contains(bad), "{bad}: {e}");
        }
    }
}
