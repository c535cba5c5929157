//! The reconstruction run: candidates, their initialisation, and SGD with momentum on L.
//!
//! Init: x = init_scale · N(0, 1), λ ~ U[0, 1), y = −1 for the first m/2 candidates and +1 for the
//! rest. Two SGD-with-momentum optimisers in PyTorch's convention, v ← μ·v + g, p ← p − lr·v,
//! with μ = 0.9: one for x (lr swept) and one for λ (lr 1e-4).

use std::sync::Arc;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_nn::{Activation, Mlp, Theta};
use reveal_tape::{kernels, Scalar};
use serde::{Deserialize, Serialize};

use crate::objective::{evaluate_shared, Method};
use crate::terms::{candidate_labels, ObjectiveConfig, Terms};

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

/// Everything about one run besides the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub hyper: Hyper,
    /// Number of candidates m (even).
    pub m: usize,
    pub iters: usize,
    /// Learning rate of λ.
    pub lambda_lr: f64,
    /// Momentum μ of both optimisers.
    pub momentum: f64,
    /// Seed of the initial candidates.
    pub seed: u64,
}

impl RunConfig {
    /// The reference run: λ lr 1e-4, momentum 0.9.
    pub fn new(hyper: Hyper, m: usize, iters: usize, seed: u64) -> Self {
        RunConfig {
            hyper,
            m,
            iters,
            lambda_lr: 1e-4,
            momentum: 0.9,
            seed,
        }
    }

    /// The objective this run minimises (modified ReLU with its α).
    pub fn objective<T: Scalar>(&self) -> ObjectiveConfig<T> {
        ObjectiveConfig {
            activation: Activation::ModifiedRelu(T::from_f64(self.hyper.alpha)),
            lambda_min: T::from_f64(self.hyper.lambda_min),
        }
    }
}

/// Candidates and the optimiser's state: everything needed to continue a run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState<T> {
    /// Candidates x [m, d] in the mean-subtracted space.
    pub x: Array2<T>,
    /// Multipliers λ [m, 1].
    pub lambda: Array2<T>,
    /// Labels y [m, 1].
    pub y: Array2<T>,
    /// Momentum buffers of x and λ.
    pub vx: Array2<T>,
    pub vlambda: Array2<T>,
    /// Iterations done.
    pub iter: usize,
    /// Terms of L at the last evaluation.
    pub last: Option<Terms<f64>>,
}

impl<T: Scalar> RunState<T> {
    /// The reference start: x = init_scale·N(0,1), λ ~ U[0,1), y = −1 then +1.
    pub fn init(d: usize, cfg: &RunConfig) -> Self {
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
        let lambda = Array2::from_shape_simple_fn((cfg.m, 1), || T::from_f64(rng.gen::<f64>()));
        RunState {
            vx: Array2::zeros(x.dim()),
            vlambda: Array2::zeros(lambda.dim()),
            x,
            lambda,
            y: candidate_labels(cfg.m),
            iter: 0,
            last: None,
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
                "diverged at iteration {iter}: {term} is {value}; lower the learning rate (--lr) or the init scale"
            ),
        }
    }
}

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
    let t = Terms {
        kkt: e.terms.kkt.as_f64(),
        kkt_w1: e.terms.kkt_w1.as_f64(),
        prior_x: e.terms.prior_x.as_f64(),
        prior_lambda: e.terms.prior_lambda.as_f64(),
        total: e.terms.total.as_f64(),
    };
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
    momentum_step(
        &mut state.x,
        &mut state.vx,
        &e.grad_x,
        cfg.hyper.lr,
        cfg.momentum,
    );
    momentum_step(
        &mut state.lambda,
        &mut state.vlambda,
        &e.grad_lambda,
        cfg.lambda_lr,
        cfg.momentum,
    );
    state.iter += 1;
    state.last = Some(t);
    Ok(t)
}

/// Runs until `cfg.iters` iterations are done; `on_iter` sees each step and may stop the run.
pub fn run<T: Scalar>(
    model: &Mlp<T>,
    state: &mut RunState<T>,
    cfg: &RunConfig,
    mut on_iter: impl FnMut(&RunState<T>, &Terms<f64>) -> bool,
) -> Result<(), Stop> {
    assert_eq!(
        state.x.ncols(),
        model.input_dim(),
        "run: candidates have {} columns, the model expects {}",
        state.x.ncols(),
        model.input_dim()
    );
    let theta = model.theta();
    while state.iter < cfg.iters {
        let t = step(&theta, state, cfg)?;
        if !on_iter(state, &t) {
            return Err(Stop::Interrupted);
        }
    }
    Ok(())
}

/// The label-free ranking signal: the first layer's relative KKT residual ‖W1 − G_W1‖² / ‖W1‖²
/// (L_kkt as a whole is dominated by the random part of W2 that no gradient spans).
pub fn layer1_residual<T: Scalar>(model: &Mlp<T>, terms: &Terms<f64>) -> f64 {
    let w1 = model.weights[0]
        .iter()
        .map(|v| v.as_f64().powi(2))
        .sum::<f64>();
    terms.kkt_w1 / w1.max(f64::MIN_POSITIVE)
}
