//! The Gram-matrix fast path agrees with the generic grad-of-grad path to 1e-10 in f64, for every
//! activation, for m below and above the width, and for deeper nets.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reveal_nn::{Activation, Mlp};
use reveal_recon::objective::{evaluate_with, Method};
use reveal_recon::terms::{candidate_labels, ObjectiveConfig};
use reveal_tape::check::randn;

fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).mapv(|v| v * v).sum().sqrt() / b.mapv(|v| v * v).sum().sqrt().max(1e-300)
}

#[test]
fn gram_path_equals_grad_of_grad() {
    let cases: [(usize, &[usize], usize); 4] = [
        (9, &[7, 7], 4),
        (9, &[5, 6], 12),
        (6, &[8, 5, 4], 6),
        (11, &[4], 6),
    ];
    for (case, &(d, hidden, m)) in cases.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64);
        let mut net = Mlp::<f64>::init(d, hidden, case as u64);
        for p in net.params_mut() {
            *p = randn(p.dim(), &mut rng) * 0.6;
        }
        let x = randn((m, d), &mut rng) * 0.9;
        let lambda = randn((m, 1), &mut rng).mapv(|t| 0.4 + 0.3 * t);
        let y = candidate_labels(m);
        for act in [
            Activation::ModifiedRelu(19.2),
            Activation::Relu,
            Activation::Softplus(4.0),
        ] {
            let cfg = ObjectiveConfig {
                activation: act,
                lambda_min: 0.45,
            };
            let g = evaluate_with(Method::GradOfGrad, &net.theta(), &x, &lambda, &y, cfg);
            let f = evaluate_with(Method::Gram, &net.theta(), &x, &lambda, &y, cfg);
            let what = format!("case {case} {hidden:?} m={m} {act:?}");
            for (a, b, name) in [
                (f.terms.total, g.terms.total, "L"),
                (f.terms.kkt, g.terms.kkt, "L_kkt"),
                (f.terms.kkt_w1, g.terms.kkt_w1, "W1 residual"),
            ] {
                assert!(
                    (a - b).abs() <= 1e-10 * b.abs().max(1.0),
                    "{what}: {name} {a} vs {b}"
                );
            }
            assert!(
                rel(&f.grad_x, &g.grad_x) < 1e-10,
                "{what}: ∂x {:e}",
                rel(&f.grad_x, &g.grad_x)
            );
            assert!(rel(&f.grad_lambda, &g.grad_lambda) < 1e-10, "{what}: ∂λ");
        }
    }
}

#[test]
fn auto_picks_gram_when_m_is_at_most_half_the_width() {
    let net = Mlp::<f64>::init(4, &[10, 10], 0);
    assert_eq!(Method::auto(&net.theta(), 5), Method::Gram);
    assert_eq!(Method::auto(&net.theta(), 6), Method::GradOfGrad);
}
