//! The objective computed with our GEMM kernels against the same objective computed with
//! matrixmultiply (the reference backend), in f32 at the benchmark's layer sizes.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_nn::{Activation, Mlp};
use reveal_recon::objective::{evaluate_with, Method};
use reveal_recon::terms::{candidate_labels, Multipliers, ObjectiveConfig};
use reveal_tape::kernels::gemm::{with_backend, with_precision, Backend, GemmPrecision};

fn rel(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-300)).sqrt()
}

/// The objective's settings, a d-h-h-1 network, and m candidates x, λ and labels y.
#[allow(clippy::type_complexity)]
fn problem(
    d: usize,
    h: usize,
    m: usize,
) -> (
    ObjectiveConfig<f32>,
    Mlp<f32>,
    Array2<f32>,
    Array2<f32>,
    Array2<f32>,
) {
    let cfg = ObjectiveConfig {
        activation: Activation::ModifiedRelu(20.0f32),
        lambda_min: 0.45,
        multipliers: Multipliers::Margin,
    };
    let net = Mlp::<f32>::init(d, &[h, h], 0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Array2::from_shape_simple_fn((m, d), || {
        let z: f32 = StandardNormal.sample(&mut rng);
        0.05 * z
    });
    let lambda = Array2::from_elem((m, 1), 0.5f32);
    (cfg, net, x, lambda, candidate_labels(m))
}

#[test]
fn f32_gradients_agree_with_the_matrixmultiply_path() {
    // (d, h, m): cases B and A's layers at a few candidate counts, and case D.
    for (d, h, m) in [
        (3072, 1000, 200),
        (784, 1000, 1000),
        (3072, 1000, 1000),
        (784, 100, 200),
    ] {
        let (cfg, net, x, lambda, y) = problem(d, h, m);
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

/// The objective's f32 gradient with bf16 products against the f32 one, at the same sizes: close
/// (each product's operands carry a relative rounding of at most 2⁻⁸, a gradient passes through
/// at most seven products, so ≤ 7·2·2⁻⁸ ≈ 5.5 % in norm) but not equal (the products were
/// rounded). Printed, so the size of the change is seen.
#[test]
fn bf16_products_move_the_gradient_by_their_rounding_only() {
    if !GemmPrecision::Bf16.available() {
        eprintln!("SKIPPED: this CPU has no AVX512-BF16");
        return;
    }
    for (d, h, m) in [(3072, 1000, 200), (784, 1000, 1000), (784, 100, 200)] {
        let (cfg, net, x, lambda, y) = problem(d, h, m);
        let theta = net.theta();
        let method = Method::auto(&theta, m);
        let f32 = evaluate_with(method, &theta, &x, &lambda, &y, cfg);
        let bf16 = with_precision(GemmPrecision::Bf16, || {
            evaluate_with(method, &theta, &x, &lambda, &y, cfg)
        });
        let (gx, gl) = (
            rel(&bf16.grad_x, &f32.grad_x),
            rel(&bf16.grad_lambda, &f32.grad_lambda),
        );
        let loss = ((bf16.terms.total - f32.terms.total) / f32.terms.total).abs();
        eprintln!("bf16 d {d} h {h} m {m}: ∇x {gx:.1e} ∇λ {gl:.1e} L {loss:.1e}");
        assert!(
            gx <= 0.055 && gl <= 0.055 && loss <= 0.055,
            "bf16 at d {d}, h {h}, m {m}: ∇x {gx:.1e}, ∇λ {gl:.1e}, L {loss:.1e}"
        );
        assert!(
            gx > 0.0,
            "bf16 at d {d}, h {h}, m {m}: the f32 gradient to the bit"
        );
    }
}
