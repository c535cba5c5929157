//! # 02 — the gradient of a gradient
//!
//! `cargo run -p reveal-tape --example 02_grad_of_grad`
//!
//! Every backward rule is written with the tape's own ops. So if the sweep records what it does
//! (`create_graph = true`), the gradient is an ordinary variable on the tape, and a second sweep
//! differentiates it. This is exactly what KKT reconstruction needs: the loss
//!
//!     L(x) = ‖θ − ∇θ Φ(θ, x)‖²
//!
//! contains a gradient with respect to θ, and we need its derivative with respect to x.

use ndarray::array;
use reveal_tape::{grad, Tape};

fn main() {
    let tape = Tape::<f64>::new();
    let theta = tape.var(array![[0.3, -0.2]]); // parameters, [1, 2]
    let x = tape.var(array![[1.0, 2.0]]); // a "candidate", [1, 2]

    // Φ = Σ softplus(θ ⊙ x): a tiny stand-in for Σ λ_i y_i f(x_i).
    let phi = (theta * x).softplus().sum();

    // First sweep, recorded: G = ∂Φ/∂θ = x ⊙ σ(θ ⊙ x). The rules used are
    //   sum      → broadcast the seed 1,
    //   softplus → ∂t = g ⊙ σ(t)   (recorded as one node, g ⊙ σ(α·t) with α = 1),
    //   mul      → ∂θ = g ⊙ x.
    // G is a variable on the tape, built from θ and x by recorded ops.
    let g_theta = grad(phi, &[theta], true)[0];
    println!("G = ∂Φ/∂θ = {}", g_theta.value());

    // The KKT-style residual and its gradient with respect to x: the second sweep goes back
    // through the nodes the first sweep recorded (the rule of g ⊙ σ(α·t) gives, for t,
    // g ⊙ α·σ(1 − σ)).
    let residual = (theta - g_theta).square().sum();
    let dx = grad(residual, &[x], false)[0];
    println!("L = ‖θ − G‖² = {:.6}", residual.item());
    println!("∂L/∂x = {}", dx.value());

    // Check against the closed form: G_j = x_j σ(θ_j x_j), so
    // ∂L/∂x_j = −2 (θ_j − G_j) · (σ_j + x_j θ_j σ_j (1 − σ_j)).
    let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
    for j in 0..2 {
        let (t, xj) = (theta.value()[[0, j]], x.value()[[0, j]]);
        let s = sig(t * xj);
        let want = -2.0 * (t - xj * s) * (s + xj * t * s * (1.0 - s));
        assert!((dx.value()[[0, j]] - want).abs() < 1e-12);
    }
    println!("matches the closed form");
}
