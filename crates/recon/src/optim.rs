//! The reconstruction run: candidates, their initialisation, and the optimiser that moves them.
//!
//! Init: x = init_scale · N(0, 1), λ ~ U[0, 1), y = −1 for the first m/2 candidates and +1 for the
//! rest. Two optimisers (see [`Optimizer`]):
//!
//! - `adam` (the default): Adam with β = (0.9, 0.999). For λ, per coordinate. For x, with ONE
//!   second moment for all of x, s ← β₂·s + (1−β₂)·mean(g²), so x moves by lr·m̂/√ŝ: a step in
//!   pixel units whatever the scale of the model's gradients, with the gradient's shape kept
//!   (per-coordinate Adam on x gave noisier colour images: see the README's comparison).
//!   lr 1e-2 for x, 1e-3 for λ, decayed to 0 by a cosine over the run.
//! - `sgd` (the reference's recipe): SGD with momentum in PyTorch's convention, v ← μ·v + g,
//!   p ← p − lr·v, μ = 0.9, for x (lr from a preset) and λ (lr 1e-4), constant rates.

use std::sync::Arc;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_nn::{Activation, Theta};
use reveal_tape::{kernels, Scalar};
use serde::{Deserialize, Serialize};

use crate::objective::{evaluate_shared, Method};
use crate::terms::{candidate_labels_for, Multipliers, ObjectiveConfig, Terms};

/// The hyperparameters the reference sweeps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Scale of the initial candidates.
    pub init_scale: f64,
    /// Learning rate of x.
    pub lr: f64,
    /// λ_min of the prior L_λ.
    pub lambda_min: f64,
    /// α of the modified ReLU's derivative σ(αz).
    pub alpha: f64,
}

/// How x and λ move each iteration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with momentum μ (the reference's recipe).
    #[default]
    Sgd,
    /// Adam (β₁ = μ, β₂ = 0.999); for x with one second moment for all of x.
    Adam,
}

/// How the learning rates change over a run of `iters` iterations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate throughout.
    #[default]
    Constant,
    /// lr_t = lr · ½(1 + cos(π·t/iters)) at iteration t = 1 … iters: from lr down to 0.
    Cosine,
}

impl LrSchedule {
    /// The factor on the learning rates at iteration t (1-based) of `iters`.
    pub fn factor(self, t: usize, iters: usize) -> f64 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                0.5 * (1.0 + (std::f64::consts::PI * t as f64 / iters.max(1) as f64).cos())
            }
        }
    }
}

/// Adam's β₂ and ε (x: relative to the root mean square of its whole gradient).
pub const ADAM_BETA2: f64 = 0.999;
pub const ADAM_EPS_X: f64 = 1e-12;
pub const ADAM_EPS_LAMBDA: f64 = 1e-8;

/// Everything about one run besides the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub hyper: Hyper,
    /// Number of candidates m (even).
    pub m: usize,
    /// Iterations (the cap when a stopping rule is set).
    pub iters: usize,
    /// Learning rate of λ.
    pub lambda_lr: f64,
    /// Momentum μ of SGD, β₁ of Adam.
    pub momentum: f64,
    /// Seed of the initial candidates.
    pub seed: u64,
    #[serde(default)]
    pub optimizer: Optimizer,
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Stop before `iters` once the run has settled (see [`StopRule`]).
    #[serde(default)]
    pub stop: Option<StopRule>,
    /// The form of the multipliers (the KKT form of the model's loss).
    #[serde(default)]
    pub multipliers: Multipliers,
}

/// When a run has settled: every `window` iterations the candidates are compared with those of
/// the window before, ‖x_t − x_{t−window}‖ / ‖x_t‖; the run stops when that falls below `tol`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopRule {
    pub window: usize,
    pub tol: f64,
}

impl RunConfig {
    /// The reference run: SGD, λ lr 1e-4, momentum 0.9, constant rates.
    pub fn new(hyper: Hyper, m: usize, iters: usize, seed: u64) -> Self {
        RunConfig {
            hyper,
            m,
            iters,
            lambda_lr: 1e-4,
            momentum: 0.9,
            seed,
            optimizer: Optimizer::Sgd,
            schedule: LrSchedule::Constant,
            stop: None,
            multipliers: Multipliers::Margin,
        }
    }

    /// The objective this run minimises (modified ReLU with its α).
    pub fn objective<T: Scalar>(&self) -> ObjectiveConfig<T> {
        ObjectiveConfig {
            activation: Activation::ModifiedRelu(T::from_f64(self.hyper.alpha)),
            lambda_min: T::from_f64(self.hyper.lambda_min),
            multipliers: self.multipliers,
        }
    }
}

/// Candidates and the optimiser's state: everything needed to continue a run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState<T> {
    /// Candidates x [m, d] in the mean-subtracted space.
    pub x: Array2<T>,
    /// Multipliers λ: [m, 1], or [m, C] ([`Multipliers::columns`]).
    pub lambda: Array2<T>,
    /// Labels y [m, 1].
    pub y: Array2<T>,
    /// Momentum buffers (SGD) or first moments (Adam) of x and λ.
    pub vx: Array2<T>,
    pub vlambda: Array2<T>,
    /// Adam's second moments: one for all of x [1, 1], one per λ (zero under SGD).
    pub sx: Array2<T>,
    pub slambda: Array2<T>,
    /// The candidates at the start of the current window of the stopping rule, if it has one.
    pub anchor: Option<Array2<T>>,
    /// Iterations done.
    pub iter: usize,
    /// Terms of L at the last evaluation.
    pub last: Option<Terms<f64>>,
}

impl<T: Scalar> RunState<T> {
    /// Candidates x, λ, y with a fresh optimiser state: zero moments, no stopping-rule anchor,
    /// no iterations done.
    pub fn fresh(x: Array2<T>, lambda: Array2<T>, y: Array2<T>) -> Self {
        RunState {
            vx: Array2::zeros(x.dim()),
            vlambda: Array2::zeros(lambda.dim()),
            sx: Array2::zeros((1, 1)),
            slambda: Array2::zeros(lambda.dim()),
            anchor: None,
            x,
            lambda,
            y,
            iter: 0,
            last: None,
        }
    }

    /// The reference start of a binary model: x = init_scale·N(0,1), λ ~ U[0,1), y = −1 then +1.
    pub fn init(d: usize, cfg: &RunConfig) -> Self {
        Self::init_for(d, 1, cfg)
    }

    /// The reference start for a model with `outputs` outputs: as [`RunState::init`], with the
    /// labels of [`candidate_labels_for`]; λ of the pairs form ~ U[0,1) at the wrong classes (0 at
    /// the label), of the signed form U[0,1) at the label (times the label ±1 of one output), 0
    /// elsewhere.
    pub fn init_for(d: usize, outputs: usize, cfg: &RunConfig) -> Self {
        assert!(
            cfg.m >= 2 && cfg.m.is_multiple_of(2),
            "run: the candidate count must be even and at least 2, got {}",
            cfg.m
        );
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let x = Array2::from_shape_simple_fn((cfg.m, d), || {
            let z: f64 = StandardNormal.sample(&mut rng);
            T::from_f64(cfg.hyper.init_scale * z)
        });
        let y: Array2<T> = candidate_labels_for(cfg.m, outputs);
        let form = cfg.multipliers.for_outputs(outputs);
        let columns = form.columns(outputs);
        let draws = Array2::from_shape_simple_fn((cfg.m, columns), || rng.gen::<f64>());
        let lambda = Array2::from_shape_fn((cfg.m, columns), |(i, j)| {
            let label = y[(i, 0)].as_f64();
            let at_label = outputs == 1 || j == label as usize;
            T::from_f64(match form {
                Multipliers::Margin => draws[(i, j)],
                Multipliers::Pairs if at_label => 0.0,
                Multipliers::Pairs => draws[(i, j)],
                Multipliers::Signed if at_label && outputs == 1 => label * draws[(i, j)],
                Multipliers::Signed if at_label => draws[(i, j)],
                Multipliers::Signed => 0.0,
            })
        });
        Self::fresh(x, lambda, y)
    }
}

/// How a run that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Finish {
    /// All `iters` iterations done.
    Cap { iters: usize },
    /// The stopping rule held: over the last `window` iterations the candidates moved by
    /// `change` (relative), below the tolerance.
    Settled {
        iter: usize,
        window: usize,
        change: f64,
    },
}

impl std::fmt::Display for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Finish::Cap { iters } => write!(f, "ran all {iters} iterations"),
            Finish::Settled {
                iter,
                window,
                change,
            } => write!(
                f,
                "settled at iteration {iter}: the candidates moved {:.3} % over the last {window} iterations",
                100.0 * change
            ),
        }
    }
}

/// Why a run stopped early.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// The callback asked to stop.
    Interrupted,
    /// A term or a gradient was NaN or infinite; the state holds the last finite candidates.
    Diverged {
        iter: usize,
        term: &'static str,
        value: f64,
    },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Interrupted => write!(f, "interrupted"),
            Stop::Diverged { iter, term, value } => write!(
                f,
                "diverged at iteration {iter}: {term} is {value}; lower the learning rate or the candidates' init scale"
            ),
        }
    }
}

impl std::error::Error for Stop {}

/// v ← μ·v + g;  p ← p − lr·v  (PyTorch's SGD with momentum).
pub fn momentum_step<T: Scalar>(
    p: &mut Array2<T>,
    v: &mut Array2<T>,
    g: &Array2<T>,
    lr: f64,
    mu: f64,
) {
    let (lr, mu) = (T::from_f64(lr), T::from_f64(mu));
    kernels::update(p, v, g, |p, v, g| {
        *v = mu * *v + g;
        *p = *p - lr * *v;
    });
}

/// Adam, per coordinate, at step t (1-based): m ← β₁m + (1−β₁)g, s ← β₂s + (1−β₂)g²,
/// p ← p − lr·(m/(1−β₁ᵗ)) / (√(s/(1−β₂ᵗ)) + ε).
#[allow(clippy::too_many_arguments)]
pub fn adam_step<T: Scalar>(
    p: &mut Array2<T>,
    m: &mut Array2<T>,
    s: &mut Array2<T>,
    g: &Array2<T>,
    lr: f64,
    t: usize,
    beta1: f64,
    eps: f64,
) {
    let (c1, c2) = bias_corrections(t, beta1);
    let f = T::from_f64;
    let (b1, b2, lr, eps) = (f(beta1), f(ADAM_BETA2), f(lr), f(eps));
    ndarray::Zip::from(p)
        .and(m)
        .and(s)
        .and(g)
        .for_each(|p, m, s, &g| {
            *m = b1 * *m + (T::one() - b1) * g;
            *s = b2 * *s + (T::one() - b2) * g * g;
            *p = *p - lr * (*m / f(c1)) / ((*s / f(c2)).sqrt() + eps);
        });
}

/// Adam with ONE second moment for all of p, at step t (1-based): s ← β₂s + (1−β₂)·mean(g²),
/// m ← β₁m + (1−β₁)g, p ← p − lr·(m/(1−β₁ᵗ)) / (√(s/(1−β₂ᵗ)) + ε). `s` is [1, 1].
#[allow(clippy::too_many_arguments)]
pub fn adam_step_shared<T: Scalar>(
    p: &mut Array2<T>,
    m: &mut Array2<T>,
    s: &mut Array2<T>,
    g: &Array2<T>,
    lr: f64,
    t: usize,
    beta1: f64,
    eps: f64,
) {
    let (c1, c2) = bias_corrections(t, beta1);
    let flat = g.as_standard_layout();
    let flat = ndarray::ArrayView1::from(flat.as_slice().expect("standard layout"));
    let mean_square = flat.dot(&flat).as_f64() / flat.len().max(1) as f64;
    let s = &mut s[[0, 0]];
    *s = T::from_f64(ADAM_BETA2 * s.as_f64() + (1.0 - ADAM_BETA2) * mean_square);
    let step = T::from_f64(lr / ((s.as_f64() / c2).sqrt() + eps) / c1);
    let b1 = T::from_f64(beta1);
    kernels::update(p, m, g, |p, m, g| {
        *m = b1 * *m + (T::one() - b1) * g;
        *p = *p - step * *m;
    });
}

/// Adam's bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ at step t.
fn bias_corrections(t: usize, beta1: f64) -> (f64, f64) {
    let t = t.min(i32::MAX as usize) as i32;
    (1.0 - beta1.powi(t), 1.0 - ADAM_BETA2.powi(t))
}

/// The first non-finite term of L, if any.
fn non_finite(t: &Terms<f64>) -> Option<(&'static str, f64)> {
    [
        ("loss.kkt", t.kkt),
        ("loss.prior_x", t.prior_x),
        ("loss.prior_lambda", t.prior_lambda),
    ]
    .into_iter()
    .find(|(_, v)| !v.is_finite())
}

/// One iteration: evaluate L and its gradient at the current candidates, then take the momentum
/// steps. On divergence the state is left at the last finite point.
pub fn step<T: Scalar>(
    theta: &Theta<T>,
    state: &mut RunState<T>,
    cfg: &RunConfig,
) -> Result<Terms<f64>, Stop> {
    let method = Method::auto(theta, state.x.nrows());
    // x and λ go onto the tape and come back without copies.
    let (x, lambda) = (
        Arc::new(std::mem::take(&mut state.x)),
        Arc::new(std::mem::take(&mut state.lambda)),
    );
    let y = Arc::new(std::mem::take(&mut state.y));
    let e = evaluate_shared(method, theta, &x, &lambda, &y, cfg.objective());
    let own = |a: Arc<Array2<T>>| Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone());
    (state.x, state.lambda, state.y) = (own(x), own(lambda), own(y));
    let t = e.terms.map(T::as_f64);
    let diverged = |term, value| Stop::Diverged {
        iter: state.iter,
        term,
        value,
    };
    if let Some((term, value)) = non_finite(&t) {
        return Err(diverged(term, value));
    }
    if let Some(v) = e
        .grad_x
        .iter()
        .chain(e.grad_lambda.iter())
        .find(|v| !v.is_finite())
    {
        return Err(diverged("the gradient", v.as_f64()));
    }
    let t_next = state.iter + 1;
    let rate = cfg.schedule.factor(t_next, cfg.iters);
    let (lr, lambda_lr) = (cfg.hyper.lr * rate, cfg.lambda_lr * rate);
    let s = &mut *state;
    match cfg.optimizer {
        Optimizer::Sgd => {
            momentum_step(&mut s.x, &mut s.vx, &e.grad_x, lr, cfg.momentum);
            momentum_step(
                &mut s.lambda,
                &mut s.vlambda,
                &e.grad_lambda,
                lambda_lr,
                cfg.momentum,
            );
        }
        Optimizer::Adam => {
            let (mu, gx, gl) = (cfg.momentum, &e.grad_x, &e.grad_lambda);
            adam_step_shared(
                &mut s.x, &mut s.vx, &mut s.sx, gx, lr, t_next, mu, ADAM_EPS_X,
            );
            let l = &mut s.lambda;
            adam_step(
                l,
                &mut s.vlambda,
                &mut s.slambda,
                gl,
                lambda_lr,
                t_next,
                mu,
                ADAM_EPS_LAMBDA,
            );
        }
    }
    state.iter += 1;
    state.last = Some(t);
    Ok(t)
}

/// ‖a − b‖ / ‖a‖.
fn relative_change<T: Scalar>(a: &Array2<T>, b: &Array2<T>) -> f64 {
    let (mut diff, mut norm) = (0.0, 0.0);
    for (&u, &v) in a.iter().zip(b) {
        diff += (u - v).as_f64().powi(2);
        norm += u.as_f64().powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// The stopping rule after an iteration: at the end of each window, compare the candidates with
/// those at its start, then start the next window from here.
fn settled<T: Scalar>(state: &mut RunState<T>, rule: StopRule) -> Option<Finish> {
    if rule.window == 0 || !state.iter.is_multiple_of(rule.window) {
        return None;
    }
    let change = state.anchor.as_ref().map(|a| relative_change(&state.x, a));
    state.anchor = Some(state.x.clone());
    change
        .filter(|&c| c < rule.tol)
        .map(|change| Finish::Settled {
            iter: state.iter,
            window: rule.window,
            change,
        })
}

/// Runs until `cfg.iters` iterations are done or the stopping rule holds; `on_iter` sees each
/// step and may stop the run.
pub fn run<T: Scalar>(
    theta: &Theta<T>,
    state: &mut RunState<T>,
    cfg: &RunConfig,
    mut on_iter: impl FnMut(&RunState<T>, &Terms<f64>) -> bool,
) -> Result<Finish, Stop> {
    assert_eq!(
        state.x.ncols(),
        theta.input_dim(),
        "run: candidates have {} columns, the model expects {}",
        state.x.ncols(),
        theta.input_dim()
    );
    while state.iter < cfg.iters {
        let t = step(theta, state, cfg)?;
        let finish = cfg.stop.and_then(|rule| settled(state, rule));
        let go_on = on_iter(state, &t);
        if let Some(finish) = finish {
            return Ok(finish);
        }
        if !go_on {
            return Err(Stop::Interrupted);
        }
    }
    Ok(Finish::Cap { iters: cfg.iters })
}

/// The label-free ranking signal: the first layer's relative KKT residual ‖W1 − G_W1‖² / ‖W1‖²
/// (the step W1 − W1₀ in both when θ0 is known; L_kkt as a whole is dominated by the random part of W2
/// that no gradient spans). For a network with convolutions, the first fully connected layer's.
pub fn layer1_residual<T: Scalar>(theta: &Theta<T>, terms: &Terms<f64>) -> f64 {
    let layer = theta.layout.weight(theta.layout.first_fc());
    let w1 = theta.fitted(layer).squared_norm().as_f64();
    terms.kkt_w1 / w1.max(f64::MIN_POSITIVE)
}
