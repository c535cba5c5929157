//! How near a trained model is to the stationarity form the objective fits, at samples known to
//! be its training set: the multipliers that fit it best, and the residual they leave.
//!
//! For fixed samples x and the exact ReLU, L_kkt is quadratic in λ,
//!
//! ```text
//! L_kkt(λ) = ‖θ − Jλ‖² = ‖θ‖² − 2bᵀλ + λᵀQλ,     ∇L_kkt(λ) = 2(Qλ − b),
//! ```
//!
//! (J: each multiplier's column of output gradients, the margin signs held at the samples), so
//! its minimiser solves Qλ = b. Conjugate gradients find it with one evaluation of ∇L_kkt per
//! step, Q·p = (∇L_kkt(p) − ∇L_kkt(0))/2, and no matrix formed. The multipliers are left free
//! (no λ_min, no sign): for a model at a stationary point of its loss the best fit is then the
//! loss's own multipliers, and their signs say whether the form is the right one.

use ndarray::Array2;
use reveal_nn::{Activation, Theta};

use crate::objective::{evaluate_with, Method};
use crate::terms::{Multipliers, ObjectiveConfig};

/// The best multipliers at the samples, and what they leave.
#[derive(Clone, Debug)]
pub struct Fit {
    /// λ, as the form stores them.
    pub lambda: Array2<f64>,
    /// √(L_kkt / ‖θ‖²) at λ: the relative residual ‖θ − Jλ‖/‖θ‖ (θ − θ0 with an origin).
    pub residual: f64,
    /// The same for the first layer's weight alone (the first fully connected layer's, after convolutions).
    pub residual_w1: f64,
    /// Multipliers in use that came out negative (a form with λ ≥ 0 expects none).
    pub negative: usize,
    /// Multipliers in use (the pairs form leaves each label's own column out).
    pub in_use: usize,
    /// Conjugate-gradient steps taken.
    pub steps: usize,
}

/// Fits λ of the form `form` to θ at samples x [n, d] with labels y [n, 1] (±1, or class
/// indices) by at most `max_steps` conjugate-gradient steps, stopping when the gradient's norm
/// has fallen by `tol` relative to its start.
pub fn fit_multipliers(
    theta: &Theta<f64>,
    x: &Array2<f64>,
    y: &Array2<f64>,
    form: Multipliers,
    max_steps: usize,
    tol: f64,
) -> Fit {
    let outputs = theta.outputs();
    let form = form.for_outputs(outputs);
    let cfg = ObjectiveConfig {
        activation: Activation::Relu,
        // No prior: λ is free.
        lambda_min: f64::MIN,
        multipliers: form,
    };
    let shape = (x.nrows(), form.columns(outputs));
    let method = Method::auto(theta, x.nrows());
    // ∇L_kkt(λ) and L_kkt(λ), L_λ being zero with λ_min at the floor of f64 (signed: none).
    let at = |lambda: &Array2<f64>| {
        let e = evaluate_with(method, theta, x, lambda, y, cfg);
        (e.grad_lambda, e.terms)
    };
    let dot = |a: &Array2<f64>, b: &Array2<f64>| (a * b).sum();
    let (g0, _) = at(&Array2::zeros(shape));
    // Qλ = b with b = −∇L(0)/2; r = b − Qλ, starting from λ = 0.
    let mut lambda = Array2::<f64>::zeros(shape);
    let mut r = &g0 * -0.5;
    let mut p = r.clone();
    let (start, mut rr) = (dot(&r, &r).sqrt(), dot(&r, &r));
    let mut steps = 0;
    while steps < max_steps && rr.sqrt() > tol * start {
        let qp = (&at(&p).0 - &g0) * 0.5;
        let curvature = dot(&p, &qp);
        if curvature <= 0.0 {
            break;
        }
        let alpha = rr / curvature;
        lambda.scaled_add(alpha, &p);
        r.scaled_add(-alpha, &qp);
        let next = dot(&r, &r);
        p = &r + &(&p * (next / rr));
        rr = next;
        steps += 1;
    }
    let (_, terms) = at(&lambda);
    let norm2: f64 = (0..theta.params.len())
        .map(|i| theta.fitted(i).squared_norm())
        .sum();
    let w1 = theta
        .fitted(theta.layout.weight(theta.layout.first_fc()))
        .squared_norm();
    let in_use = |i: usize, j: usize| match form {
        Multipliers::Pairs => j != y[(i, 0)] as usize,
        _ => true,
    };
    let used: Vec<f64> = lambda
        .indexed_iter()
        .filter(|&((i, j), _)| in_use(i, j))
        .map(|(_, &v)| v)
        .collect();
    let negative = used.iter().filter(|&&v| v < 0.0).count();
    Fit {
        residual: (terms.kkt / norm2).sqrt(),
        residual_w1: (terms.kkt_w1 / w1).sqrt(),
        lambda,
        negative,
        in_use: used.len(),
        steps,
    }
}
