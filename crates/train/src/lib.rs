//! # reveal-train
//!
//! Full-batch gradient descent with the exact ReLU, until the loss is below a target with zero
//! training error. The loss, with an optional weight decay wd (0 in the papers' binary runs):
//!
//! ```text
//! one output, y = ±1:        L(θ) = (1/n) Σ_i log(1 + exp(−y_i f(x_i)))            + (wd/2)‖θ‖²
//! C outputs, y = class index: L(θ) = (1/n) Σ_i [log Σ_j exp Φ_j(x_i) − Φ_{y_i}(x_i)] + (wd/2)‖θ‖²
//! ```
//!
//! (the logistic and the cross-entropy loss; ‖θ‖² sums over every parameter tensor, b1 included),
//! or, with [`Loss::Squared`], the squared loss on targets t (±1 for one output, one-hot for C):
//!
//! ```text
//! L(θ) = (1/n) Σ_i ‖Φ(x_i) − t_i‖²  + (wd/2)‖θ‖²
//! ```
//!
//! Full-batch gradient descent, as the papers train (the setting the KKT theory assumes):
//! - `Reference`: a constant learning rate (0.01 in the papers; ≈10⁶ epochs).
//! - `Fast`: the loss-based step size after Lyu and Li (2019): lr_t = c_t / L(θ_t); take the plain
//!   gradient step; if the loss did not fall (or is not finite) reject it and halve c, else accept
//!   and multiply c by 1.01; c_0 = 0.05. As the loss falls the step grows, which is what the
//!   margin-maximising phase of training needs.
//!
//! And the recipes practitioners use, on mini-batches (a seeded shuffle per epoch, the last batch
//! possibly smaller, as PyTorch's DataLoader), with PyTorch's update rules, g = ∇L_batch + wd·θ:
//! - `Sgd`: v ← μ·v + g, θ ← θ − lr·v;
//! - `Adam`: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ − lr·m̂/(√v̂ + ε) with
//!   m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), β = (0.9, 0.999), ε = 1e-8.
//!
//! A mini-batch run stops at its epoch cap, or earlier at zero training error with the loss below
//! the target when one is given (target 0: none).

pub mod job;

use std::sync::Arc;

use ndarray::{Array2, Axis, Zip};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reveal_nn::{class_index, forward, margins, Activation, Biases, Init, Mlp, Theta};
use reveal_tape::{grad, kernels, Scalar, Tape};
use serde::{Deserialize, Serialize};

/// The step-size rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// θ ← θ − lr·∇L.
    Reference { lr: f64 },
    /// θ ← θ − (c/L)·∇L with backtracking on c.
    Fast { c0: f64 },
    /// Mini-batch SGD with momentum μ (PyTorch's convention).
    Sgd {
        lr: f64,
        momentum: f64,
        batch_size: usize,
    },
    /// Mini-batch Adam (PyTorch's, β = (0.9, 0.999), ε = 1e-8).
    Adam { lr: f64, batch_size: usize },
}

impl Schedule {
    /// The reference schedule of the papers: lr 0.01.
    pub const REFERENCE: Schedule = Schedule::Reference { lr: 0.01 };
    /// The fast schedule with c_0 = 0.05.
    pub const FAST: Schedule = Schedule::Fast { c0: 0.05 };

    /// The mini-batch size of a mini-batch optimiser (`None`: full batch).
    pub fn batch_size(self) -> Option<usize> {
        match self {
            Schedule::Sgd { batch_size, .. } | Schedule::Adam { batch_size, .. } => {
                Some(batch_size)
            }
            Schedule::Reference { .. } | Schedule::Fast { .. } => None,
        }
    }
}

/// The training loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// The logistic loss (one output), cross-entropy (C outputs).
    #[default]
    Logistic,
    /// The squared loss on ±1 targets (one output) or one-hot targets (C outputs), summed over
    /// the outputs and averaged over the samples (PyTorch's MSELoss for one output).
    Squared,
}

/// What training minimises: the loss and its weight decay wd.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Objective {
    pub loss: Loss,
    pub weight_decay: f64,
}

impl Objective {
    /// The logistic (cross-entropy) loss with weight decay `wd`.
    pub fn logistic(wd: f64) -> Objective {
        Objective {
            loss: Loss::Logistic,
            weight_decay: wd,
        }
    }
}

/// Adam's β₁, β₂ and ε (PyTorch's defaults).
pub const ADAM: (f64, f64, f64) = (0.9, 0.999, 1e-8);

/// When to stop.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub schedule: Schedule,
    /// Stop when the loss is below this and no training sample is misclassified.
    pub target_loss: f64,
    /// Stop after this many accepted steps in all.
    pub max_epochs: usize,
    /// wd of the (wd/2)‖θ‖² term (0: none). With it the loss has a floor above 0, so a run
    /// ends at the stationary point (no step lowers the loss: [`Outcome::Stalled`]) or at
    /// `max_epochs`, rather than at `target_loss`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_decay: f64,
    /// How the fresh model is drawn (the papers' small init by default).
    #[serde(default, skip_serializing_if = "is_default")]
    pub init: Init,
    /// Which layers have a bias (the first only by default).
    #[serde(default, skip_serializing_if = "is_default")]
    pub biases: Biases,
    /// The loss (logistic or cross-entropy by default).
    #[serde(default, skip_serializing_if = "is_default")]
    pub loss: Loss,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl TrainConfig {
    /// The fast schedule to `target_loss` (with zero training error), at most `max_epochs`.
    pub fn fast(target_loss: f64, max_epochs: usize) -> Self {
        TrainConfig {
            schedule: Schedule::FAST,
            target_loss,
            max_epochs,
            weight_decay: 0.0,
            init: Init::Small,
            biases: Biases::First,
            loss: Loss::Logistic,
        }
    }

    /// What this recipe minimises.
    pub fn objective(&self) -> Objective {
        Objective {
            loss: self.loss,
            weight_decay: self.weight_decay,
        }
    }

    /// A fresh model of this recipe's init and biases.
    pub fn init_model<T: Scalar>(
        &self,
        input: usize,
        hidden: &[usize],
        outputs: usize,
        seed: u64,
    ) -> Mlp<T> {
        Mlp::init_with(input, hidden, outputs, self.init, self.biases, seed)
    }
}

/// A fresh model of the reference init (inputs of x, `hidden` widths, `seed`) trained on
/// (x, y) as `cfg` says: the state it ends in and how.
pub fn train_new<T: Scalar>(
    x: &Array2<T>,
    y: &Array2<T>,
    hidden: &[usize],
    seed: u64,
    cfg: &TrainConfig,
) -> (TrainState<T>, Outcome) {
    let mlp = cfg.init_model::<T>(x.ncols(), hidden, 1, seed);
    let mut state = TrainState::new(mlp, cfg.schedule);
    state.shuffle_seed = seed;
    let outcome = train(&mut state, x, y, cfg, |_| Control::Continue);
    (state, outcome)
}

/// Loss, error and gradient at one point.
pub struct Evaluation<T> {
    /// L(θ).
    pub loss: f64,
    /// Fraction of samples with a margin ≤ 0 (y·f(x), or Φ_y − max_{j≠y} Φ_j).
    pub error: f64,
    /// ∂L/∂θ in the order of [`Mlp::params`].
    pub grads: Vec<Array2<T>>,
}

/// L(θ), the training error and ∂L/∂θ, through the tape (no gradient w.r.t. x is computed).
pub fn evaluate<T: Scalar>(
    mlp: &Mlp<T>,
    x: &Array2<T>,
    y: &Array2<T>,
    objective: Objective,
) -> Evaluation<T> {
    let (x, y) = (Arc::new(x.clone()), Arc::new(y.clone()));
    evaluate_shared(&mlp.theta(), &x, &y, objective)
}

/// [`evaluate`] on shared parameters and data: nothing is copied onto the tape, and the
/// gradients are taken out of it without copies.
pub fn evaluate_shared<T: Scalar>(
    theta: &Theta<T>,
    x: &Arc<Array2<T>>,
    y: &Arc<Array2<T>>,
    objective: Objective,
) -> Evaluation<T> {
    let n = x.nrows();
    assert_eq!(
        y.dim(),
        (n, 1),
        "train: y has shape {:?}, x has {n} rows",
        y.dim()
    );
    // On a worker of the thread pool, as the reconstruction's evaluation (see reveal-recon).
    rayon::scope(|_| {
        let _flush = kernels::FlushDenormals::new();
        evaluate_in_pool(theta, x, y, objective)
    })
}

fn evaluate_in_pool<T: Scalar>(
    theta: &Theta<T>,
    x: &Arc<Array2<T>>,
    y: &Arc<Array2<T>>,
    objective: Objective,
) -> Evaluation<T> {
    let n = x.nrows();
    let tape = Tape::new();
    // θ changes every step: recorded as plain leaves, nothing packed to keep.
    let params: Vec<_> = theta
        .params
        .iter()
        .map(|p| tape.var(Arc::clone(p.value())))
        .collect();
    let f = forward(
        &params,
        &theta.layout,
        tape.constant(Arc::clone(x)),
        Activation::Relu,
    );
    let classes = f.shape().1;
    // The targets: y itself (±1) for one output, one-hot rows for C.
    let one_hot = || {
        Array2::from_shape_fn((n, classes), |(i, j)| {
            T::from_f64((class_index(y[(i, 0)], classes) == j) as u8 as f64)
        })
    };
    let per_sample = match (objective.loss, classes) {
        // softplus(−y f) = log(1 + exp(−y f))
        (Loss::Logistic, 1) => (-(f * tape.constant(Arc::clone(y)))).softplus(),
        // log Σ_j exp Φ_j − Φ_y, with Φ_y picked by a constant one-hot matrix
        (Loss::Logistic, _) => f.logsumexp() - (f * tape.constant(one_hot())).sum_cols(),
        // ‖Φ − t‖²
        (Loss::Squared, 1) => (f - tape.constant(Arc::clone(y))).square(),
        (Loss::Squared, _) => (f - tape.constant(one_hot())).square().sum_cols(),
    };
    let mut loss = per_sample.sum().scale(T::from_f64(1.0 / n as f64));
    let weight_decay = objective.weight_decay;
    if weight_decay > 0.0 {
        // + (wd/2) Σ_p ‖θ_p‖²
        let norms = params.iter().map(|p| p.square().sum());
        let norm2 = norms.reduce(|a, b| a + b).expect("parameters");
        loss = loss + norm2.scale(T::from_f64(weight_decay / 2.0));
    }
    let error = margins(f.value().view(), y.view())
        .iter()
        .filter(|&&m| m <= T::zero())
        .count() as f64
        / n as f64;
    let grads: Vec<Arc<Array2<T>>> = grad(loss, &params, false)
        .iter()
        .map(|g| g.value())
        .collect();
    let loss = loss.item().as_f64();
    drop(tape);
    let grads = grads
        .into_iter()
        .map(|g| Arc::try_unwrap(g).unwrap_or_else(|g| (*g).clone()))
        .collect();
    Evaluation { loss, error, grads }
}

/// Fraction of rows of x the model classifies right: the sign of f(x) is y's (one output), or
/// the largest output is Φ_y (C outputs).
pub fn accuracy<T: Scalar>(mlp: &Mlp<T>, x: &Array2<T>, y: &[f32]) -> f64 {
    let f = mlp.predict(x.view());
    let right = f
        .rows()
        .into_iter()
        .zip(y)
        .filter(|(f, &y)| match f.len() {
            1 => (f[0] > T::zero()) == (y > 0.0),
            classes => {
                let top = (0..classes).fold(0, |b, j| if f[j] > f[b] { j } else { b });
                top == class_index(y, classes)
            }
        })
        .count();
    right as f64 / y.len().max(1) as f64
}

/// Where training stands; everything needed to resume it.
#[derive(Clone, Debug)]
pub struct TrainState<T> {
    /// The parameters (shared form; [`TrainState::mlp`] gives a plain copy).
    pub theta: Theta<T>,
    /// Accepted steps so far.
    pub epoch: usize,
    /// Rejected steps so far (fast schedule).
    pub rejected: usize,
    /// The fast schedule's c (unused by the reference schedule).
    pub c: f64,
    /// L(θ) at the current θ, once known.
    pub loss: f64,
    /// Training error at the current θ.
    pub error: f64,
    /// The mini-batch optimiser's moments, one per tensor of θ in order: SGD's velocity v, or
    /// Adam's m then v (empty for full-batch descent until the first step).
    pub moments: Vec<Array2<T>>,
    /// Mini-batch steps taken (Adam's t).
    pub steps: u64,
    /// Seed of the mini-batch shuffles (epoch e shuffles with seed + e).
    pub shuffle_seed: u64,
}

impl<T: Scalar> TrainState<T> {
    /// The current model.
    pub fn mlp(&self) -> Mlp<T> {
        self.theta.to_mlp()
    }

    /// A fresh state at `mlp`.
    pub fn new(mlp: Mlp<T>, schedule: Schedule) -> Self {
        let c = match schedule {
            Schedule::Fast { c0 } => c0,
            _ => 0.0,
        };
        TrainState {
            theta: mlp.theta(),
            epoch: 0,
            rejected: 0,
            c,
            loss: f64::INFINITY,
            error: 1.0,
            moments: Vec::new(),
            steps: 0,
            shuffle_seed: 0,
        }
    }
}

/// What the caller wants after each epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// How training ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Loss below the target and zero training error.
    Converged,
    /// The epoch cap was reached first.
    EpochCap,
    /// The callback asked to stop (e.g. Ctrl-C).
    Stopped,
    /// The loss or a parameter became NaN or infinite (the state keeps the last finite θ).
    Diverged,
    /// Fast schedule: no step, however small, lowered the loss any more (c fell below 1e-30),
    /// short of the target: the net cannot fit the data further in this precision.
    Stalled,
}

/// θ − step·g as new parameters in one pass, split across threads when large (the current ones
/// stay for backtracking). Memory-bound: W1 alone is 3 M values at d = 3072.
pub fn stepped<T: Scalar>(theta: &Theta<T>, grads: &[Array2<T>], step: f64) -> Theta<T> {
    let s = T::from_f64(step);
    Theta::new(
        theta
            .params
            .iter()
            .zip(grads)
            .map(|(p, g)| kernels::zip(p.value(), g, |p, g| p - s * g))
            .collect(),
        theta.layout.clone(),
    )
}

/// Trains from `state` as `cfg` says until it converges, hits the cap, or the callback (called
/// after every epoch) says stop.
pub fn train<T: Scalar>(
    state: &mut TrainState<T>,
    x: &Array2<T>,
    y: &Array2<T>,
    cfg: &TrainConfig,
    on_epoch: impl FnMut(&TrainState<T>) -> Control,
) -> Outcome {
    match cfg.schedule.batch_size() {
        Some(batch) => train_minibatch(state, x, y, cfg, batch, on_epoch),
        None => train_full_batch(state, x, y, cfg, on_epoch),
    }
}

/// Why training stops before another epoch, if it does.
fn finished<T>(state: &TrainState<T>, cfg: &TrainConfig) -> Option<Outcome> {
    if !state.loss.is_finite() {
        Some(Outcome::Diverged)
    } else if state.loss < cfg.target_loss && state.error == 0.0 {
        Some(Outcome::Converged)
    } else if state.epoch >= cfg.max_epochs {
        Some(Outcome::EpochCap)
    } else {
        None
    }
}

/// Full-batch gradient descent (the reference and the fast schedule): each epoch one step.
fn train_full_batch<T: Scalar>(
    state: &mut TrainState<T>,
    x: &Array2<T>,
    y: &Array2<T>,
    cfg: &TrainConfig,
    mut on_epoch: impl FnMut(&TrainState<T>) -> Control,
) -> Outcome {
    let (x, y) = (Arc::new(x.clone()), Arc::new(y.clone()));
    let wd = cfg.objective();
    let mut here = evaluate_shared(&state.theta, &x, &y, wd);
    (state.loss, state.error) = (here.loss, here.error);
    loop {
        if let Some(outcome) = finished(state, cfg) {
            return outcome;
        }
        let step = match cfg.schedule {
            Schedule::Fast { .. } => state.c / state.loss,
            Schedule::Reference { lr } | Schedule::Sgd { lr, .. } | Schedule::Adam { lr, .. } => lr,
        };
        let next = stepped(&state.theta, &here.grads, step);
        let there = evaluate_shared(&next, &x, &y, wd);
        let fast = matches!(cfg.schedule, Schedule::Fast { .. });
        let accept = there.loss.is_finite() && (!fast || there.loss < state.loss);
        if !accept {
            match fast {
                false => return Outcome::Diverged,
                true => {
                    state.c *= 0.5;
                    state.rejected += 1;
                    if state.c < 1e-30 {
                        return Outcome::Stalled;
                    }
                    continue;
                }
            }
        }
        if let Schedule::Fast { .. } = cfg.schedule {
            state.c *= 1.01;
        }
        state.theta = next;
        state.epoch += 1;
        (state.loss, state.error) = (there.loss, there.error);
        here = there;
        if on_epoch(state) == Control::Stop {
            return Outcome::Stopped;
        }
    }
}

/// Mini-batch SGD or Adam: each epoch one pass over a seeded shuffle of the training set in
/// batches of `batch`, then L and the error on the whole set (for the stopping rule and the log).
fn train_minibatch<T: Scalar>(
    state: &mut TrainState<T>,
    x: &Array2<T>,
    y: &Array2<T>,
    cfg: &TrainConfig,
    batch: usize,
    mut on_epoch: impl FnMut(&TrainState<T>) -> Control,
) -> Outcome {
    assert!(batch > 0, "train: a batch of at least one sample");
    let n = x.nrows();
    let (xs, ys) = (Arc::new(x.clone()), Arc::new(y.clone()));
    let wd = cfg.objective();
    let whole = evaluate_shared(&state.theta, &xs, &ys, wd);
    (state.loss, state.error) = (whole.loss, whole.error);
    let tensors = state.theta.params.len();
    let per_tensor = match cfg.schedule {
        Schedule::Adam { .. } => 2,
        _ => 1,
    };
    if state.moments.len() != per_tensor * tensors {
        state.moments = (0..per_tensor)
            .flat_map(|_| {
                state
                    .theta
                    .params
                    .iter()
                    .map(|p| Array2::zeros(p.value().dim()))
            })
            .collect();
    }
    loop {
        if let Some(outcome) = finished(state, cfg) {
            return outcome;
        }
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(state.shuffle_seed.wrapping_add(state.epoch as u64));
        order.shuffle(&mut rng);
        for rows in order.chunks(batch) {
            let xb = Arc::new(x.select(Axis(0), rows));
            let yb = Arc::new(y.select(Axis(0), rows));
            let g = evaluate_shared(&state.theta, &xb, &yb, wd).grads;
            state.steps += 1;
            state.theta = optimiser_step(
                &state.theta,
                &g,
                &mut state.moments,
                state.steps,
                cfg.schedule,
            );
        }
        state.epoch += 1;
        let whole = evaluate_shared(&state.theta, &xs, &ys, wd);
        (state.loss, state.error) = (whole.loss, whole.error);
        if !state.loss.is_finite() {
            return Outcome::Diverged;
        }
        if on_epoch(state) == Control::Stop {
            return Outcome::Stopped;
        }
    }
}

/// One update of SGD with momentum or Adam (t = `step`, from 1) given the gradient `g` of each
/// tensor; the moments are updated in place, θ is returned anew.
fn optimiser_step<T: Scalar>(
    theta: &Theta<T>,
    g: &[Array2<T>],
    moments: &mut [Array2<T>],
    step: u64,
    schedule: Schedule,
) -> Theta<T> {
    let params = theta.params.iter().map(|p| (**p.value()).clone());
    let updated: Vec<Array2<T>> = match schedule {
        Schedule::Sgd { lr, momentum, .. } => {
            let (lr, mu) = (T::from_f64(lr), T::from_f64(momentum));
            params
                .zip(g)
                .zip(moments.iter_mut())
                .map(|((mut p, g), v)| {
                    // v ← μ·v + g;  θ ← θ − lr·v
                    Zip::from(&mut p).and(v).and(g).for_each(|p, v, &g| {
                        *v = mu * *v + g;
                        *p = *p - lr * *v;
                    });
                    p
                })
                .collect()
        }
        Schedule::Adam { lr, .. } => {
            let (b1, b2, eps) = ADAM;
            let t = step as i32;
            // The bias corrections folded into the step: lr·√(1−β₂ᵗ)/(1−β₁ᵗ), ε·√(1−β₂ᵗ).
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            let (lr_t, eps_t) = (
                T::from_f64(lr * c2.sqrt() / c1),
                T::from_f64(eps * c2.sqrt()),
            );
            let (b1, b2) = (T::from_f64(b1), T::from_f64(b2));
            let (first, second) = moments.split_at_mut(g.len());
            params
                .zip(g)
                .zip(first.iter_mut().zip(second.iter_mut()))
                .map(|((mut p, g), (m, v))| {
                    Zip::from(&mut p)
                        .and(m)
                        .and(v)
                        .and(g)
                        .for_each(|p, m, v, &g| {
                            *m = b1 * *m + (T::one() - b1) * g;
                            *v = b2 * *v + (T::one() - b2) * g * g;
                            *p = *p - lr_t * *m / (v.sqrt() + eps_t);
                        });
                    p
                })
                .collect()
        }
        Schedule::Reference { .. } | Schedule::Fast { .. } => {
            unreachable!("full-batch schedules take plain gradient steps")
        }
    };
    Theta::new(updated, theta.layout.clone())
}
