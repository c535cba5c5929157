//! Run planning, in one place for every command: the default setting for a data set, the
//! number of candidates, each run's hyperparameters and seed, and which runs a shard does.
//!
//! Run 0 of a search uses the base setting (a preset, or the data set's default); every later
//! run i draws the hyperparameters that are not pinned from the reference's search ranges with
//! its own random stream (stream i of the search seed), so run i is the same whatever the
//! number of runs or shards, and `reveal reconstruct --runs N` and `reveal experiment` search
//! the same settings for the same seed. Run i starts its candidates from seed + i.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reveal_data::Source;

use crate::optim::{Hyper, LrSchedule, Optimizer, RunConfig, StopRule};
use crate::terms::Multipliers;

/// The settings that worked in the reference (n = 500, m = 1000), docs/DESIGN.md §2.
pub const PRESETS: [(&str, Hyper); 4] = [
    (
        "cifar-a",
        Hyper {
            init_scale: 8.9e-4,
            lr: 0.555,
            lambda_min: 0.498,
            alpha: 19.1,
        },
    ),
    (
        "cifar-b",
        Hyper {
            init_scale: 4.5e-3,
            lr: 0.346,
            lambda_min: 0.494,
            alpha: 21.7,
        },
    ),
    (
        "mnist-a",
        Hyper {
            init_scale: 3.5e-2,
            lr: 0.0305,
            lambda_min: 0.447,
            alpha: 149.9,
        },
    ),
    (
        "mnist-b",
        Hyper {
            init_scale: 1.7e-3,
            lr: 0.282,
            lambda_min: 0.415,
            alpha: 19.2,
        },
    ),
];

/// A preset by name.
pub fn preset(name: &str) -> Option<Hyper> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}

impl Hyper {
    /// A random draw from the reference's search ranges: init_scale log-uniform 1e-6..0.1,
    /// λ_min uniform 0.01..0.5, α uniform 10..500, and lr log-uniform 1e-5..1 for SGD or
    /// 1e-3..3e-2 (pixel units) for Adam.
    pub fn random(rng: &mut impl Rng, optimizer: Optimizer) -> Self {
        let log_uniform =
            |rng: &mut dyn rand::RngCore, lo: f64, hi: f64| (rng.gen_range(lo.ln()..hi.ln())).exp();
        let init_scale = log_uniform(rng, 1e-6, 0.1);
        let lr = match optimizer {
            Optimizer::Sgd => log_uniform(rng, 1e-5, 1.0),
            Optimizer::Adam => log_uniform(rng, 1e-3, 3e-2),
        };
        Hyper {
            init_scale,
            lr,
            lambda_min: rng.gen_range(0.01..0.5),
            alpha: rng.gen_range(10.0..500.0),
        }
    }
}

/// The preset a data set starts from: `cifar-a` for CIFAR-10 and image folders (colour
/// photographs, like CIFAR-10), `mnist-a` for MNIST, the synthetic set and a model without a
/// known data set.
pub fn default_preset(source: Option<&Source>) -> &'static str {
    match source {
        Some(Source::Cifar10 | Source::Folder { .. }) => "cifar-a",
        Some(Source::Mnist | Source::Synthetic { .. }) | None => "mnist-a",
    }
}

/// The default number of candidates for a training set of `per_class` images per class, for a
/// model with `outputs` outputs (one: two classes; else one class per output): twice the
/// training set (m = 2n, 4·per_class for a binary model), as the reference does.
pub fn default_candidates(per_class: usize, outputs: usize) -> usize {
    2 * outputs.max(2) * per_class
}

/// Hyperparameters fixed on the command line: they hold for every run of a search.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pins {
    pub lr: Option<f64>,
    pub init_scale: Option<f64>,
    pub lambda_min: Option<f64>,
    pub alpha: Option<f64>,
}

impl Pins {
    /// `h` with the pinned values put in.
    fn apply(&self, mut h: Hyper) -> Hyper {
        h.lr = self.lr.unwrap_or(h.lr);
        h.init_scale = self.init_scale.unwrap_or(h.init_scale);
        h.lambda_min = self.lambda_min.unwrap_or(h.lambda_min);
        h.alpha = self.alpha.unwrap_or(h.alpha);
        h
    }
}

/// Adam's defaults (see [`crate::optim`]): x moves lr·m̂/√ŝ in pixel units, λ by Adam.
pub const ADAM_LR: f64 = 1e-2;
pub const ADAM_LAMBDA_LR: f64 = 3e-3;
pub const ADAM_ITERS: usize = 2500;
/// The reference's λ learning rate under SGD.
pub const SGD_LAMBDA_LR: f64 = 1e-4;

/// The reference's iteration count for a data set under SGD (quick budget): 10,000 for
/// CIFAR-10 and image folders, 20,000 otherwise.
pub fn sgd_iters(source: Option<&Source>) -> usize {
    match source {
        Some(Source::Cifar10 | Source::Folder { .. }) => 10_000,
        _ => 20_000,
    }
}

/// What a search is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub optimizer: Optimizer,
    /// Run 0's init scale, λ_min and α (and, under SGD, lr): a preset by name.
    pub preset: String,
    pub pins: Pins,
    /// Candidates per run (even).
    pub m: usize,
    pub runs: usize,
    /// Iterations per run (the cap when `stop` is set).
    pub iters: usize,
    /// Seed of the search: run i starts from seed + i and draws from stream i.
    pub seed: u64,
    /// Learning rate of λ.
    pub lambda_lr: f64,
    pub schedule: LrSchedule,
    pub stop: Option<StopRule>,
    /// The form of the multipliers (the KKT form of the model's loss).
    pub multipliers: Multipliers,
}

/// A setting of a plan that must be a positive number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Lr,
    InitScale,
    LambdaMin,
    Alpha,
    LambdaLr,
    StopTol,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setting::Lr => "the learning rate of x",
            Setting::InitScale => "the init scale",
            Setting::LambdaMin => "λ_min",
            Setting::Alpha => "α",
            Setting::LambdaLr => "the learning rate of λ",
            Setting::StopTol => "the early stop's tolerance",
        })
    }
}

/// Why a plan's runs cannot be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown preset {name:?}: expected one of {known}")]
    UnknownPreset { name: String, known: String },
    #[error("{0} candidates: the count must be even and at least 2 (half per class)")]
    Candidates(usize),
    #[error("no runs: a search needs at least one")]
    NoRuns,
    #[error("no iterations: a run needs at least one")]
    NoIterations,
    #[error("{setting} {value}: must be a positive number")]
    NotPositive { setting: Setting, value: f64 },
}

impl Plan {
    /// The default plan for a data set: Adam with its rates and a cosine decay over
    /// [`ADAM_ITERS`] iterations, the data set's preset for init scale, λ_min and α, one run.
    pub fn new(source: Option<&Source>, m: usize, seed: u64) -> Self {
        Plan {
            optimizer: Optimizer::Adam,
            preset: default_preset(source).to_string(),
            pins: Pins::default(),
            m,
            runs: 1,
            iters: ADAM_ITERS,
            seed,
            lambda_lr: ADAM_LAMBDA_LR,
            schedule: LrSchedule::Cosine,
            stop: None,
            multipliers: Multipliers::Margin,
        }
    }

    /// The reference's recipe for a data set: SGD with momentum at the preset's rates,
    /// constant, for [`sgd_iters`] iterations.
    pub fn reference(source: Option<&Source>, m: usize, seed: u64) -> Self {
        Plan {
            optimizer: Optimizer::Sgd,
            iters: sgd_iters(source),
            lambda_lr: SGD_LAMBDA_LR,
            schedule: LrSchedule::Constant,
            ..Plan::new(source, m, seed)
        }
    }

    /// The plan for an optimizer: [`Plan::new`] or [`Plan::reference`].
    pub fn for_optimizer(
        optimizer: Optimizer,
        source: Option<&Source>,
        m: usize,
        seed: u64,
    ) -> Self {
        match optimizer {
            Optimizer::Adam => Plan::new(source, m, seed),
            Optimizer::Sgd => Plan::reference(source, m, seed),
        }
    }

    /// Every run's configuration, checked: a known preset, an even m ≥ 2, positive rates.
    pub fn configs(&self) -> Result<Vec<RunConfig>, PlanError> {
        let Some(mut base) = preset(&self.preset) else {
            return Err(PlanError::UnknownPreset {
                name: self.preset.clone(),
                known: PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", "),
            });
        };
        if self.optimizer == Optimizer::Adam {
            base.lr = ADAM_LR; // the presets' rates are SGD's
        }
        if self.m < 2 || !self.m.is_multiple_of(2) {
            return Err(PlanError::Candidates(self.m));
        }
        if self.runs == 0 {
            return Err(PlanError::NoRuns);
        }
        if self.iters == 0 {
            return Err(PlanError::NoIterations);
        }
        let pins = [
            (Setting::Lr, self.pins.lr),
            (Setting::InitScale, self.pins.init_scale),
            (Setting::LambdaMin, self.pins.lambda_min),
            (Setting::Alpha, self.pins.alpha),
            (Setting::LambdaLr, Some(self.lambda_lr)),
            (Setting::StopTol, self.stop.map(|s| s.tol)),
        ];
        for (setting, v) in pins {
            if let Some(value) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(PlanError::NotPositive { setting, value });
            }
        }
        Ok((0..self.runs)
            .map(|i| {
                let hyper = if i == 0 {
                    base
                } else {
                    let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                    rng.set_stream(i as u64);
                    Hyper::random(&mut rng, self.optimizer)
                };
                RunConfig {
                    lambda_lr: self.lambda_lr,
                    optimizer: self.optimizer,
                    schedule: self.schedule,
                    stop: self.stop,
                    multipliers: self.multipliers,
                    ..RunConfig::new(
                        self.pins.apply(hyper),
                        self.m,
                        self.iters,
                        self.seed + i as u64,
                    )
                }
            })
            .collect())
    }
}

/// The part of a search (or an experiment) one process does, for spreading work over machines:
/// item k belongs to shard k mod count. Written `I/N` with 1 ≤ I ≤ N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether item `k` is this shard's.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse::<usize>().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((i, n)) if (1..=n).contains(&i) => Ok(Shard {
                index: i - 1,
                count: n,
            }),
            _ => Err(format!("{s:?}: expected I/N with 1 ≤ I ≤ N, e.g. 2/3")),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}
