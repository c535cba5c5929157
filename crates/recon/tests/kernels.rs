//! The objective computed with our GEMM kernels against the same objective computed with
//! matrixmultiply (the reference backend), in f32 at the benchmark's layer sizes.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_nn::{Activation, Mlp};
use reveal_recon::objective::{evaluate_with, Method};
use reveal_recon::terms::{candidate_labels, Multipliers, ObjectiveConfig};
use reveal_tape::kernels::gemm::{with_backend, Backend};

fn rel(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-300)).sqrt()
}

#[test]
fn f32_gradients_agree_with_the_matrixmultiply_path() {
    let cfg = ObjectiveConfig {
        activation: Activation::ModifiedRelu(20.0f32),
        lambda_min: 0.45,
        multipliers: Multipliers::Margin,
    };
    // (d, h, m): cases B and A's layers at a few candidate counts, and case D.
    for (d, h, m) in [
        (3072, 1000, 200),
        (784, 1000, 1000),
        (3072, 1000, 1000),
        (784, 100, 200),
    ] {
        let net = Mlp::<f32>::init(d, &[h, h], 0);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = Array2::from_shape_simple_fn((m, d), || {
            let z: f32 = StandardNormal.sample(&mut rng);
            0.05 * z
        });
        let lambda = Array2::from_elem((m, 1), 0.5f32);
        let y = candidate_labels(m);
        let theta = net.theta();
        let method = Method::auto(&theta, m);
        let reference = with_backend(Backend::MatrixMultiply, || {
            evaluate_with(method, &theta, &x, &lambda, &y, cfg)
        });
        for backend in Backend::available() {
            let e = with_backend(backend, || {
                evaluate_with(method, &theta, &x, &lambda, &y, cfg)
            });
            let (gx, gl) = (
                rel(&e.grad_x, &reference.grad_x),
                rel(&e.grad_lambda, &reference.grad_lambda),
            );
            let loss = ((e.terms.total - reference.terms.total) / reference.terms.total).abs();
            eprintln!(
                "{} d {d} h {h} m {m}: ∇x {gx:.1e} ∇λ {gl:.1e} L {loss:.1e}",
                backend.name()
            );
            assert!(
                gx <= 1e-5 && gl <= 1e-5 && loss <= 1e-5,
                "{} at d {d}, h {h}, m {m} ({method:?}): ∇x {gx:.1e}, ∇λ {gl:.1e}, L {loss:.1e}",
                backend.name()
            );
        }
    }
}
