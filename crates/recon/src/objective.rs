//! The reconstruction objective, recorded on the tape (the generic path, and the entry points
//! that pick between it and the Gram path of [`crate::gram`]):
//!
//! ```text
//! L_kkt = Σ_p ‖ θ_p − (1/m) Σ_i λ_i ∇_{θ_p} m_i(x_i) ‖²     (sum over the parameter tensors;
//!         θ_p − θ0_p when the weights before training θ0 are known)
//! L_x   = Σ relu(x − 1)² + Σ relu(−1 − x)²
//! L_λ   = 5 · Σ relu(λ_min − λ_i)²
//! L     = L_kkt + L_x + L_λ
//! ```
//!
//! with the margin m_i(x) = Σ_j S_ij Φ_j(x) written with the constant signs S of
//! [`reveal_nn::margin_signs`]: for a C-output model (y = class index) +1 at the label and −1 at
//! the runner-up, m_i = Φ_{y_i}(x) − max_{j≠y_i} Φ_j(x); a binary model is the case C = 1, where
//! S = y (±1) and m_i = y_i f(x_i). One code path serves both. Σ_i λ_i ∇θ m_i(x_i) comes from
//! ONE batched backward of Φ = (1/m) Σ_i λ_i m_i(x_i) recorded with `create_graph`; the
//! gradient of L then goes to x and λ only.

use std::sync::Arc;

use ndarray::Array2;
use reveal_nn::{forward, Layout, Mlp, Theta};
use reveal_tape::{grad, Scalar, Tape, Var};

use crate::terms::{ObjectiveConfig, Terms};

/// Records L for candidates x [m, d], multipliers λ ([m, 1], or [m, C] as `cfg.multipliers`
/// says) and labels y [m, 1] (±1, or class indices for a C-output model), with θ already on the tape (order of [`Mlp::params`], placed as
/// `layout` says), and the step θ − θ0 when the weights before training θ0 are known (L_kkt
/// then fits the step).
/// Every tensor of θ, biases included, has its residual in L_kkt.
pub fn record<'t, T: Scalar>(
    theta: &[Var<'t, T>],
    step: Option<&[Var<'t, T>]>,
    layout: &Layout,
    x: Var<'t, T>,
    lambda: Var<'t, T>,
    y: Var<'t, T>,
    cfg: ObjectiveConfig<T>,
) -> Terms<Var<'t, T>> {
    let m = x.shape().0;
    assert_eq!(
        y.shape(),
        (m, 1),
        "objective: y has shape {:?}, x has {m} rows",
        y.shape()
    );

    // Φ = (1/m) Σ_ij A_ij Φ_j(x_i) (with the margin form, (1/m) Σ_i λ_i m_i(x_i)), and ∇θ Φ
    // from one batched backward that stays on the tape.
    let f = forward(theta, layout, x, cfg.activation);
    let a = cfg.multipliers.coefficients(&f.value(), y, lambda);
    let phi = (f * a).sum().scale(T::one() / T::from_f64(m as f64));
    let g = grad(phi, theta, true);

    // L_kkt = Σ_p ‖θ_p − ∇_{θ_p} Φ‖²  (the step θ_p − θ0_p in place of θ_p when θ0 is known)
    let residuals: Vec<Var<'t, T>> = theta
        .iter()
        .zip(&g)
        .enumerate()
        .map(|(i, (&p, &gp))| (step.map_or(p, |s| s[i]) - gp).square().sum())
        .collect();
    let kkt = residuals[1..].iter().fold(residuals[0], |a, &b| a + b);
    let ranked = residuals[layout.weight(layout.first_fc())];
    Terms::with_priors(kkt, ranked, x, lambda, y, cfg)
}

/// How L_kkt is computed: the generic grad-of-grad reference, or the Gram-matrix fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// ∇θΦ from one backward with create_graph, then the residuals (the readable reference).
    GradOfGrad,
    /// The squared residuals expanded into m×m Gram matrices ([`crate::gram`]).
    Gram,
}

impl Method {
    /// The Gram path pays when there are at most half as many candidates as the widest layer
    /// has units (measured: 0.73× the generic time at m = h/5, 1.5× at m = h).
    /// A network with convolutions takes the generic path (the Gram expansion is for fc layers).
    pub fn auto<T: Scalar>(theta: &Theta<T>, m: usize) -> Method {
        if theta.layout.features.is_none() && 2 * m <= theta.max_width() {
            Method::Gram
        } else {
            Method::GradOfGrad
        }
    }
}

/// L and its gradients at one point, as plain values.
#[derive(Clone, Debug)]
pub struct Evaluation<T> {
    pub terms: Terms<T>,
    /// ∂L/∂x [m, d] (a surrogate under the modified ReLU, by design).
    pub grad_x: Array2<T>,
    /// ∂L/∂λ, λ's shape.
    pub grad_lambda: Array2<T>,
}

/// Evaluates L and ∂L/∂(x, λ) at the given candidates, by the path that pays.
pub fn evaluate<T: Scalar>(
    model: &Mlp<T>,
    x: &Array2<T>,
    lambda: &Array2<T>,
    y: &Array2<T>,
    cfg: ObjectiveConfig<T>,
) -> Evaluation<T> {
    let theta = model.theta();
    evaluate_with(Method::auto(&theta, x.nrows()), &theta, x, lambda, y, cfg)
}

/// Evaluates L and ∂L/∂(x, λ) by the given method.
pub fn evaluate_with<T: Scalar>(
    method: Method,
    theta: &Theta<T>,
    x: &Array2<T>,
    lambda: &Array2<T>,
    y: &Array2<T>,
    cfg: ObjectiveConfig<T>,
) -> Evaluation<T> {
    let share = |a: &Array2<T>| Arc::new(a.clone());
    evaluate_shared(method, theta, &share(x), &share(lambda), &share(y), cfg)
}

/// [`evaluate_with`] on shared candidates: nothing is copied onto the tape, and the gradients
/// are taken out of it without copies.
pub fn evaluate_shared<T: Scalar>(
    method: Method,
    theta: &Theta<T>,
    x: &Arc<Array2<T>>,
    lambda: &Arc<Array2<T>>,
    y: &Arc<Array2<T>>,
    cfg: ObjectiveConfig<T>,
) -> Evaluation<T> {
    assert_eq!(
        x.ncols(),
        theta.input_dim(),
        "objective: candidates have {} columns, the model expects {}",
        x.ncols(),
        theta.input_dim()
    );
    // Run on a worker of the thread pool: the step's many parallel ops then split their work
    // among running workers instead of each waking the pool from outside (measured at case D:
    // 2.2 → 1.8 ms a step). The caller's product settings (tests) go with it.
    let settings = reveal_tape::kernels::gemm::ProductSettings::of_this_thread();
    rayon::scope(|_| {
        settings.apply(|| {
            // Denormals flushed for the ndarray work on this thread too (the kernels flush their
            // own): see `FlushDenormals`.
            let _flush = reveal_tape::kernels::FlushDenormals::new();
            let tape = Tape::new();
            let layout = &theta.layout;
            let step = theta.step_on_tape(&tape);
            let theta = theta.on_tape(&tape);
            let (xv, lv, yv) = (
                tape.var(Arc::clone(x)),
                tape.var(Arc::clone(lambda)),
                tape.constant(Arc::clone(y)),
            );
            let terms = match method {
                Method::GradOfGrad => record(&theta, step.as_deref(), layout, xv, lv, yv, cfg),
                Method::Gram => {
                    crate::gram::record(&theta, step.as_deref(), layout, xv, lv, yv, cfg)
                }
            };
            let grads = grad(terms.total, &[xv, lv], false);
            let terms = terms.map(|v| v.item());
            let (gx, gl) = (grads[0].value(), grads[1].value());
            drop(tape);
            let own = |a: Arc<Array2<T>>| Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone());
            Evaluation {
                terms,
                grad_x: own(gx),
                grad_lambda: own(gl),
            }
        })
    })
}
