//! The fast path of L_kkt: the same objective written out at first order, with the squared
//! norms expanded into m×m Gram matrices so that no weight-shaped (h×d) matrix is ever formed.
//!
//! With the coefficients c = A(λ)/m [m, C] of [`crate::terms::Multipliers`] (the margin form:
//! c = diag(λ/m)·S with the margin signs S, S = y for a binary model), the activations' derivative rule S_k = σ(αZ_k), and the deltas of
//! Φ = Σ_ij c_ij f_j(x_i) taken backwards from the output weight W [C, h],
//!
//! ```text
//! Δ_{H−1} = S_{H−1} ⊙ (c·W),      Δ_{k−1} = (Δ_k W_k) ⊙ S_{k−1}
//! ∇_W Φ = cᵀA_{H−1},   ∇_{W_k} Φ = Δ_kᵀ A_{k−1} (A_{−1} = X),   ∇_{b1} Φ = 1ᵀΔ_0
//! ```
//!
//! each weight's residual is, using A_{k−1} W_kᵀ = Z_k (minus b1 for the first layer),
//!
//! ```text
//! ‖W_k − Δ_kᵀ A_{k−1}‖² = ‖W_k‖² − 2⟨Δ_k, A_{k−1}W_kᵀ⟩ + ⟨Δ_kΔ_kᵀ, A_{k−1}A_{k−1}ᵀ⟩
//! ```
//!
//! With a bias in every layer, Z_k = P_k + 1b_kᵀ with P_k = A_{k−1}W_kᵀ: the middle term takes
//! P_k, each bias adds ‖b_k − 1ᵀΔ_k‖², and the output bias ‖b − 1ᵀc‖².
//!
//! With the weights before training θ0 known, each residual fits T = θ − θ0 instead: the first
//! term is ‖T_k‖² (of the step, computed once), the middle one takes A_{k−1}T_kᵀ (one more
//! product per layer), and the biases and the output layer fit their steps.
//!
//! For m < h this is about half the GEMM work of the generic grad-of-grad path (docs/DESIGN.md §4) and
//! skips all h×d elementwise passes. Its gradient w.r.t. (x, λ) is a plain first-order backward.
//! The derivative rules enter exactly as in the generic path (the modified ReLU's activation
//! `mrelu` has derivative σ(αz); S_k = σ(αZ_k) differentiates to α·σ·(1−σ)), so the two agree
//! to rounding; `tests/gram.rs` holds them to 1e-10 in f64.

use reveal_nn::Layout;
use reveal_tape::{Scalar, Var};

use crate::terms::{ObjectiveConfig, Terms};

/// Records L for candidates x [m, d], λ ([m, 1] or [m, C], as `cfg.multipliers` says), y [m, 1], θ on the tape (order of `Mlp::params`,
/// placed as `layout` says: a bias in the first layer only, or in every layer), and the step
/// θ − θ0 when the weights before training θ0 are known (each residual then fits the step).
pub fn record<'t, T: Scalar>(
    theta: &[Var<'t, T>],
    step: Option<&[Var<'t, T>]>,
    layout: &Layout,
    x: Var<'t, T>,
    lambda: Var<'t, T>,
    y: Var<'t, T>,
    cfg: ObjectiveConfig<T>,
) -> Terms<Var<'t, T>> {
    assert!(
        layout.features.is_none(),
        "gram: the Gram path is for fc layers; a network with convolutions takes the generic path"
    );
    let tape = x.tape();
    let m = x.shape().0;
    let hidden = layout.layers - 1;
    let weight = |k: usize| theta[layout.weight(k)];
    let bias = |k: usize| layout.bias(k).map(|i| theta[i]);
    let w_out = weight(hidden);
    // ‖W‖² is a constant here (θ is not differentiated): computed once per run when θ was
    // recorded from shared constants.
    let norm2 = |w: Var<'t, T>| {
        let n = match w.constant() {
            Some(c) => c.squared_norm(),
            None => reveal_tape::Constant::new(w.value()).squared_norm(),
        };
        tape.scalar(n)
    };
    let inner = |a: Var<'t, T>, b: Var<'t, T>| (a * b).sum();
    let gram = |a: Var<'t, T>| a.matmul_t(a, false, true);
    // What each tensor's residual fits: θ_p, or the step θ_p − θ0_p when θ0 is known.
    let learned = |i: usize| step.map_or(theta[i], |s| s[i]);
    // ‖b − 1ᵀΔ‖², a bias's residual (its gradient of Φ sums the layer's deltas over candidates).
    let bias_residual =
        |i: usize, delta: Var<'t, T>| (learned(i) - delta.sum_rows()).square().sum();
    // ‖T‖² and A·Tᵀ of a layer's fitted weight T (A its input): T = W reuses P = A·Wᵀ; the
    // step T = W − W0 takes one more product.
    let fitted = |k: usize, input: Var<'t, T>, p: Var<'t, T>| match step {
        None => (norm2(weight(k)), p),
        Some(s) => {
            let t = s[layout.weight(k)];
            (norm2(t), input.matmul_t(t, false, true))
        }
    };

    // Forward, keeping every product P_k = A_{k−1}W_kᵀ (A_{−1} = X) and pre-activation
    // Z_k = P_k (+ b_k).
    let mut p: Vec<Var<'t, T>> = Vec::with_capacity(hidden);
    let mut z: Vec<Var<'t, T>> = Vec::with_capacity(hidden);
    let mut a: Vec<Var<'t, T>> = Vec::with_capacity(hidden);
    for k in 0..hidden {
        let input = if k == 0 { x } else { a[k - 1] };
        p.push(input.matmul_t(weight(k), false, true));
        z.push(bias(k).map_or(p[k], |b| p[k].add_row(b)));
        a.push(cfg.activation.apply(z[k]));
    }

    // c = A(λ)/m [m, C] (the margin form: diag(λ/m)·S, S = y for a binary model) and the output layer:
    // ‖W − cᵀA_{H−1}‖² (+ ‖b − 1ᵀc‖²).
    let last = hidden - 1;
    let mut f = a[last].value().dot(&w_out.value().t());
    if let Some(b) = bias(hidden) {
        f = f + &*b.value();
    }
    let c = cfg
        .multipliers
        .coefficients(&f, y, lambda)
        .scale(T::one() / T::from_f64(m as f64));
    let mut kkt = (learned(layout.weight(hidden)) - c.matmul_t(a[last], true, false))
        .square()
        .sum();
    if let Some(b) = layout.bias(hidden) {
        kkt = kkt + bias_residual(b, c);
    }
    let mut delta = cfg.activation.derivative(z[last]) * c.matmul(w_out);

    // Hidden layers, top down: ‖W_k‖² − 2⟨Δ_k, P_k⟩ + ⟨Δ_kΔ_kᵀ, A_{k−1}A_{k−1}ᵀ⟩ (+ ‖b_k − 1ᵀΔ_k‖²).
    for k in (1..hidden).rev() {
        let (t2, pt) = fitted(k, a[k - 1], p[k]);
        kkt = kkt + t2 - inner(delta, pt).scale(T::from_f64(2.0))
            + inner(gram(delta), gram(a[k - 1]));
        if let Some(b) = layout.bias(k) {
            kkt = kkt + bias_residual(b, delta);
        }
        delta = cfg.activation.backprop(delta.matmul(weight(k)), z[k - 1]);
    }

    // First layer: ‖W1‖² − 2⟨Δ_0, XW1ᵀ⟩ + ⟨Δ_0Δ_0ᵀ, XXᵀ⟩, and the bias ‖b1 − 1ᵀΔ_0‖².
    let (t2, pt) = fitted(0, x, p[0]);
    let kkt_w1 = t2 - inner(delta, pt).scale(T::from_f64(2.0)) + inner(gram(delta), gram(x));
    kkt = kkt + kkt_w1;
    if let Some(b) = layout.bias(0) {
        kkt = kkt + bias_residual(b, delta);
    }
    Terms::with_priors(kkt, kkt_w1, x, lambda, y, cfg)
}
