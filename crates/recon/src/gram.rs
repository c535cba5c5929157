//! The fast path of L_kkt: the same objective written out at first order, with the squared
//! norms expanded into m×m Gram matrices so that no weight-shaped (h×d) matrix is ever formed.
//!
//! With c = λ⊙y/m, the activations' derivative rule S_k = σ(αZ_k), and the deltas of
//! Φ = Σ_i c_i f(x_i) taken backwards from the output weight w,
//!
//! ```text
//! Δ_{H−1} = diag(c) · (S_{H−1} ⊙ 1wᵀ),      Δ_{k−1} = (Δ_k W_k) ⊙ S_{k−1}
//! ∇_w Φ = cᵀA_{H−1},   ∇_{W_k} Φ = Δ_kᵀ A_{k−1} (A_{−1} = X),   ∇_{b1} Φ = 1ᵀΔ_0
//! ```
//!
//! A C-output model (labels = class indices) has the margin signs S of
//! [`reveal_nn::margin_signs`] in place of y: c = diag(λ/m)·S is [m, C], the output weight W
//! is [C, h], Δ_{H−1} = S_{H−1} ⊙ (c·W) and ∇_W Φ = cᵀA_{H−1}; the rest is unchanged.
//!
//! each weight's residual is, using A_{k−1} W_kᵀ = Z_k (minus b1 for the first layer),
//!
//! ```text
//! ‖W_k − Δ_kᵀ A_{k−1}‖² = ‖W_k‖² − 2⟨Δ_k, A_{k−1}W_kᵀ⟩ + ⟨Δ_kΔ_kᵀ, A_{k−1}A_{k−1}ᵀ⟩
//! ```
//!
//! For m < h this is about half the GEMM work of the generic grad-of-grad path (docs/DESIGN.md §4) and
//! skips all h×d elementwise passes. Its gradient w.r.t. (x, λ) is a plain first-order backward.
//! The derivative rules enter exactly as in the generic path (the modified ReLU's activation
//! `mrelu` has derivative σ(αz); S_k = σ(αZ_k) differentiates to α·σ·(1−σ)), so the two agree
//! to rounding; `tests/gram.rs` holds them to 1e-10 in f64.

use reveal_nn::{margin_signs, Biases, Layout};
use reveal_tape::{Scalar, Var};

use crate::terms::{ObjectiveConfig, Terms};

/// Records L for candidates x [m, d], λ [m, 1], y [m, 1], θ on the tape (order of `Mlp::params`;
/// a bias in the first layer only).
pub fn record<'t, T: Scalar>(
    theta: &[Var<'t, T>],
    layout: Layout,
    x: Var<'t, T>,
    lambda: Var<'t, T>,
    y: Var<'t, T>,
    cfg: ObjectiveConfig<T>,
) -> Terms<Var<'t, T>> {
    assert_eq!(
        layout.biases,
        Biases::First,
        "gram path: written for a first-layer bias only ({layout:?}); use the generic path"
    );
    let tape = x.tape();
    let m = x.shape().0;
    let hidden = theta.len() - 2;
    let weight_in = |k: usize| if k == 0 { theta[0] } else { theta[k + 1] };
    let (b1, w_out) = (theta[1], theta[hidden + 1]);
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

    // Forward, keeping every pre-activation: Z_0 = XW1ᵀ + b1, Z_k = A_{k−1}W_kᵀ.
    let xw1 = x.matmul_t(theta[0], false, true);
    let mut z = vec![xw1.add_row(b1)];
    let mut a = vec![cfg.activation.apply(z[0])];
    for k in 1..hidden {
        z.push(a[k - 1].matmul_t(weight_in(k), false, true));
        a.push(cfg.activation.apply(z[k]));
    }

    // c = λ⊙y/m (or diag(λ/m)·S) and the output layer: ‖W − cᵀA_{H−1}‖².
    let last = hidden - 1;
    let inv_m = T::one() / T::from_f64(m as f64);
    let binary = w_out.shape().0 == 1;
    let c = if binary {
        (lambda * y).scale(inv_m)
    } else {
        let f = a[last].value().dot(&w_out.value().t());
        let signs = tape.constant(margin_signs(f.view(), y.value().view()));
        signs.mul_col(lambda).scale(inv_m)
    };
    let mut kkt = (w_out - c.matmul_t(a[last], true, false)).square().sum();
    let s_last = cfg.activation.derivative(z[last]);
    let mut delta = if binary {
        s_last.mul_row(w_out).mul_col(c)
    } else {
        s_last * c.matmul(w_out)
    };

    // Hidden weights, top down: ‖W_k‖² − 2⟨Δ_k, Z_k⟩ + ⟨Δ_kΔ_kᵀ, A_{k−1}A_{k−1}ᵀ⟩.
    for k in (1..hidden).rev() {
        let w = weight_in(k);
        kkt = kkt + norm2(w) - inner(delta, z[k]).scale(T::from_f64(2.0))
            + inner(gram(delta), gram(a[k - 1]));
        delta = cfg.activation.backprop(delta.matmul(w), z[k - 1]);
    }

    // First layer: ‖W1‖² − 2⟨Δ_0, XW1ᵀ⟩ + ⟨Δ_0Δ_0ᵀ, XXᵀ⟩, and the bias ‖b1 − 1ᵀΔ_0‖².
    let kkt_w1 =
        norm2(theta[0]) - inner(delta, xw1).scale(T::from_f64(2.0)) + inner(gram(delta), gram(x));
    kkt = kkt + kkt_w1 + (b1 - delta.sum_rows()).square().sum();
    Terms::with_priors(kkt, kkt_w1, x, lambda, cfg)
}
