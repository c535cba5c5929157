//! An independent closed-form implementation of L and ∂L/∂(x, λ) for a d-h-h-C net, written out
//! by hand with ndarray (no tape), following the GEMM list of docs/DESIGN.md §6. It is the
//! reference the tape's grad-of-grad path, the Gram path and `reveal kkt` are tested against, and a
//! readable account of what the second backward pass computes.
//!
//! The margin of candidate i is Σ_j S_ij f_ij(x_i): S = y (±1) for one output; for C outputs
//! S_{i,y_i} = +1 and S_{i,j*} = −1 at the runner-up j* = argmax_{j≠y_i} f_ij, held constant.
//! The coefficients c = A(λ)/m of the three multiplier forms (`crate::terms::Multipliers`) and
//! their backward are written out here on their own too.

use ndarray::{Array2, Axis};
use reveal_nn::{Activation, Mlp};
use reveal_tape::scalar::{sigmoid, softplus};

use crate::terms::Multipliers;

/// A scalar rule of (z, α).
type Rule = fn(f64, f64) -> f64;

/// The activation's value a(z), its derivative rule s(z) and that rule's derivative s'(z).
fn pieces(act: Activation<f64>) -> (Rule, Rule, Rule) {
    match act {
        Activation::Relu => (
            |z, _| z.max(0.0),
            |z, _| if z > 0.0 { 1.0 } else { 0.0 },
            |_, _| 0.0,
        ),
        Activation::ModifiedRelu(_) => (
            |z, _| z.max(0.0),
            |z, a| sigmoid(a * z),
            |z, a| a * sigmoid(a * z) * (1.0 - sigmoid(a * z)),
        ),
        Activation::Softplus(_) => (
            |z, a| softplus(a * z) / a,
            |z, a| sigmoid(a * z),
            |z, a| a * sigmoid(a * z) * (1.0 - sigmoid(a * z)),
        ),
    }
}

/// The margin signs S [m, C], computed here on their own (not with `reveal_nn::margin_signs`).
fn signs(f: &Array2<f64>, y: &Array2<f64>) -> Array2<f64> {
    if f.ncols() == 1 {
        return y.clone();
    }
    let mut s = Array2::zeros(f.dim());
    for (i, row) in f.rows().into_iter().enumerate() {
        let label = y[(i, 0)] as usize;
        let mut runner_up = if label == 0 { 1 } else { 0 };
        for j in 0..row.len() {
            if j != label && row[j] > row[runner_up] {
                runner_up = j;
            }
        }
        s[(i, label)] = 1.0;
        s[(i, runner_up)] = -1.0;
    }
    s
}

/// The coefficients A(λ) [m, C] of a multiplier form, and the λ-gradient of L from its
/// c-gradient c̄ (c = A/m), with the prior L_λ and its gradient: (A, λ̄ from c̄, L_λ, ∂L_λ/∂λ).
struct Coefficients {
    a: Array2<f64>,
    /// Which multipliers the prior covers (1) and which are unused (0).
    used: Array2<f64>,
    form: Multipliers,
    s: Array2<f64>,
    label: Vec<usize>,
}

impl Coefficients {
    fn new(form: Multipliers, f: &Array2<f64>, y: &Array2<f64>, lambda: &Array2<f64>) -> Self {
        let (m, outputs) = f.dim();
        let form = form.for_outputs(outputs);
        let label: Vec<usize> = (0..m)
            .map(|i| if outputs == 1 { 0 } else { y[(i, 0)] as usize })
            .collect();
        let s = signs(f, y);
        let mut used = Array2::ones(lambda.dim());
        let a = match form {
            Multipliers::Margin => &s * lambda,
            Multipliers::Pairs => {
                let mut a = Array2::zeros((m, outputs));
                for i in 0..m {
                    used[(i, label[i])] = 0.0;
                    for j in (0..outputs).filter(|&j| j != label[i]) {
                        a[(i, j)] = -lambda[(i, j)];
                        a[(i, label[i])] += lambda[(i, j)];
                    }
                }
                a
            }
            Multipliers::Signed => {
                used.fill(0.0);
                lambda.clone()
            }
        };
        Coefficients {
            a,
            used,
            form,
            s,
            label,
        }
    }

    /// ∂L_kkt/∂λ from ∂L_kkt/∂c, c = A(λ)/m.
    fn lambda_bar(&self, cbar: &Array2<f64>, m: f64) -> Array2<f64> {
        match self.form {
            Multipliers::Margin => (cbar * &self.s).sum_axis(Axis(1)).insert_axis(Axis(1)) / m,
            Multipliers::Pairs => Array2::from_shape_fn(cbar.dim(), |(i, j)| {
                (cbar[(i, self.label[i])] - cbar[(i, j)]) * self.used[(i, j)] / m
            }),
            Multipliers::Signed => cbar / m,
        }
    }

    /// L_λ = 5 Σ relu(λ_min − λ)² over the multipliers in use, and its gradient.
    fn prior(&self, lambda: &Array2<f64>, lambda_min: f64) -> (f64, Array2<f64>) {
        let relu = |v: f64| v.max(0.0);
        let gap = lambda.mapv(|v| relu(lambda_min - v)) * &self.used;
        (5.0 * gap.mapv(|g| g * g).sum(), gap * -10.0)
    }
}

/// L and ∂L/∂(x, λ) in closed form for a d-h-h-C net with λ_min `lambda_min` and multipliers of
/// the form `form`; labels y [m, 1] are ±1 for C = 1, class indices otherwise. With `origin` θ0
/// (the weights before training), each residual fits θ − θ0.
#[allow(clippy::too_many_arguments)]
pub fn closed_form(
    net: &Mlp<f64>,
    origin: Option<&Mlp<f64>>,
    x: &Array2<f64>,
    lambda: &Array2<f64>,
    y: &Array2<f64>,
    act: Activation<f64>,
    lambda_min: f64,
    form: Multipliers,
) -> (f64, Array2<f64>, Array2<f64>) {
    let alpha = match act {
        Activation::Relu => 0.0,
        Activation::ModifiedRelu(a) | Activation::Softplus(a) => a,
    };
    let (a_fn, s_fn, ds_fn) = pieces(act);
    assert!(
        net.weights.len() == 3 && net.biases.len() == 1,
        "closed form: a d-h-h-C net with a first-layer bias only, got {} layers and {} biases",
        net.weights.len(),
        net.biases.len()
    );
    let (w1, w2, w3, b1) = (
        &net.weights[0],
        &net.weights[1],
        &net.weights[2],
        &net.biases[0],
    );
    let m = x.nrows() as f64;

    // Forward.
    let z1 = x.dot(&w1.t()) + b1;
    let (a1, s1) = (z1.mapv(|z| a_fn(z, alpha)), z1.mapv(|z| s_fn(z, alpha)));
    let z2 = a1.dot(&w2.t());
    let (a2, s2) = (z2.mapv(|z| a_fn(z, alpha)), z2.mapv(|z| s_fn(z, alpha)));

    // G = ∇θ (1/m) Σ_ik A_ik f_ik, with c = A(λ)/m [m, C] (the margin form: diag(λ/m)·S).
    let coefficients = Coefficients::new(form, &a2.dot(&w3.t()), y, lambda);
    let c = &coefficients.a / m;
    let cw3 = c.dot(w3); // [m, h]: ∂Φ/∂A2
    let d2 = &s2 * &cw3; // D2[i,j] = s2[i,j] Σ_k c_ik w3[k,j]
    let g_w3 = c.t().dot(&a2);
    let g_w2 = d2.t().dot(&a1);
    let p = d2.dot(w2);
    let d1 = &p * &s1;
    let g_w1 = d1.t().dot(x);
    let g_b1 = d1.sum_axis(Axis(0)).insert_axis(Axis(0));

    // Residuals R_p = θ_p (− θ0_p) − G_p, and L.
    let start = |i: usize, p: &Array2<f64>| match origin {
        Some(o) => p - o.params()[i],
        None => p.clone(),
    };
    let (r_w1, r_b1, r_w2, r_w3) = (
        start(0, w1) - &g_w1,
        start(1, b1) - &g_b1,
        start(2, w2) - &g_w2,
        start(3, w3) - &g_w3,
    );
    let sq = |a: &Array2<f64>| a.mapv(|v| v * v).sum();
    let relu = |v: f64| v.max(0.0);
    let l_kkt = sq(&r_w1) + sq(&r_b1) + sq(&r_w2) + sq(&r_w3);
    let l_x = x
        .mapv(|v| relu(v - 1.0).powi(2) + relu(-1.0 - v).powi(2))
        .sum();
    let (l_l, prior_bar) = coefficients.prior(lambda, lambda_min);

    // Backward, Ḡ_p = −2 R_p.
    let (gb_w1, gb_b1, gb_w2, gb_w3) = (&r_w1 * -2.0, &r_b1 * -2.0, &r_w2 * -2.0, &r_w3 * -2.0);
    let mut xbar = d1.dot(&gb_w1);
    let d1bar = x.dot(&gb_w1.t()) + &gb_b1;
    let pbar = &d1bar * &s1;
    let s1bar = &d1bar * &p;
    let d2bar = pbar.dot(&w2.t()) + a1.dot(&gb_w2.t());
    let mut a1bar = d2.dot(&gb_w2);
    let a2bar = c.dot(&gb_w3);
    let mut cbar = a2.dot(&gb_w3.t());
    cbar += &(&d2bar * &s2).dot(&w3.t());
    let s2bar = &d2bar * &cw3;
    let z2bar = &s2bar * &z2.mapv(|z| ds_fn(z, alpha)) + &a2bar * &s2;
    a1bar += &z2bar.dot(w2);
    let z1bar = &s1bar * &z1.mapv(|z| ds_fn(z, alpha)) + &a1bar * &s1;
    xbar += &z1bar.dot(w1);
    xbar += &x.mapv(|v| 2.0 * relu(v - 1.0) - 2.0 * relu(-1.0 - v));
    let lbar = coefficients.lambda_bar(&cbar, m) + &prior_bar;
    (l_kkt + l_x + l_l, xbar, lbar)
}
