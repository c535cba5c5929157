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
//! (the logistic and the cross-entropy loss; ‖θ‖² sums over every parameter tensor, b1 included).
//!
//! Two schedules:
//! - `Reference`: a constant learning rate (0.01 in the papers; ≈10⁶ epochs).
//! - `Fast`: the loss-based step size after Lyu and Li (2019): lr_t = c_t / L(θ_t); take the plain
//!   gradient step; if the loss did not fall (or is not finite) reject it and halve c, else accept
//!   and multiply c by 1.01; c_0 = 0.05. As the loss falls the step grows, which is what the
//!   margin-maximising phase of training needs.

pub mod job;

use std::sync::Arc;

use ndarray::Array2;
use reveal_nn::{class_index, forward, margins, Activation, Mlp, Theta};
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
}

impl Schedule {
    /// The reference schedule of the papers: lr 0.01.
    pub const REFERENCE: Schedule = Schedule::Reference { lr: 0.01 };
    /// The fast schedule with c_0 = 0.05.
    pub const FAST: Schedule = Schedule::Fast { c0: 0.05 };
}

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
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl TrainConfig {
    /// The fast schedule to `target_loss` (with zero training error), at most `max_epochs`.
    pub fn fast(target_loss: f64, max_epochs: usize) -> Self {
        TrainConfig {
            schedule: Schedule::FAST,
            target_loss,
            max_epochs,
            weight_decay: 0.0,
        }
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
    let mut state = TrainState::new(Mlp::<T>::init(x.ncols(), hidden, seed), cfg.schedule);
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
    weight_decay: f64,
) -> Evaluation<T> {
    let (x, y) = (Arc::new(x.clone()), Arc::new(y.clone()));
    evaluate_shared(&mlp.theta(), &x, &y, weight_decay)
}

/// [`evaluate`] on shared parameters and data: nothing is copied onto the tape, and the
/// gradients are taken out of it without copies.
pub fn evaluate_shared<T: Scalar>(
    theta: &Theta<T>,
    x: &Arc<Array2<T>>,
    y: &Arc<Array2<T>>,
    weight_decay: f64,
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
        evaluate_in_pool(theta, x, y, weight_decay)
    })
}

fn evaluate_in_pool<T: Scalar>(
    theta: &Theta<T>,
    x: &Arc<Array2<T>>,
    y: &Arc<Array2<T>>,
    weight_decay: f64,
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
        theta.layout,
        tape.constant(Arc::clone(x)),
        Activation::Relu,
    );
    let per_sample = if f.shape().1 == 1 {
        // softplus(−y f) = log(1 + exp(−y f))
        (-(f * tape.constant(Arc::clone(y)))).softplus()
    } else {
        // log Σ_j exp Φ_j − Φ_y, with Φ_y picked by a constant one-hot matrix
        let classes = f.shape().1;
        let one_hot = Array2::from_shape_fn((n, classes), |(i, j)| {
            T::from_f64((class_index(y[(i, 0)], classes) == j) as u8 as f64)
        });
        f.logsumexp() - (f * tape.constant(one_hot)).sum_cols()
    };
    let mut loss = per_sample.sum().scale(T::from_f64(1.0 / n as f64));
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
            Schedule::Reference { .. } => 0.0,
        };
        TrainState {
            theta: mlp.theta(),
            epoch: 0,
            rejected: 0,
            c,
            loss: f64::INFINITY,
            error: 1.0,
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
        theta.layout,
    )
}

/// Runs full-batch gradient descent from `state` until it converges, hits the cap, or the
/// callback (called after every accepted step) says stop.
pub fn train<T: Scalar>(
    state: &mut TrainState<T>,
    x: &Array2<T>,
    y: &Array2<T>,
    cfg: &TrainConfig,
    mut on_epoch: impl FnMut(&TrainState<T>) -> Control,
) -> Outcome {
    let (x, y) = (Arc::new(x.clone()), Arc::new(y.clone()));
    let wd = cfg.weight_decay;
    let mut here = evaluate_shared(&state.theta, &x, &y, wd);
    (state.loss, state.error) = (here.loss, here.error);
    loop {
        if !state.loss.is_finite() {
            return Outcome::Diverged;
        }
        if state.loss < cfg.target_loss && state.error == 0.0 {
            return Outcome::Converged;
        }
        if state.epoch >= cfg.max_epochs {
            return Outcome::EpochCap;
        }
        let step = match cfg.schedule {
            Schedule::Reference { lr } => lr,
            Schedule::Fast { .. } => state.c / state.loss,
        };
        let next = stepped(&state.theta, &here.grads, step);
        let there = evaluate_shared(&next, &x, &y, wd);
        let accept = match cfg.schedule {
            Schedule::Reference { .. } => there.loss.is_finite(),
            Schedule::Fast { .. } => there.loss.is_finite() && there.loss < state.loss,
        };
        if !accept {
            match cfg.schedule {
                Schedule::Reference { .. } => return Outcome::Diverged,
                Schedule::Fast { .. } => {
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
