//! One evaluation of the KKT objective and its gradient w.r.t. (x, λ) through the tape's
//! grad-of-grad, in f32, at the sizes of the peer benchmark's cases D and B.
//!
//! `cargo bench -p reveal-recon --bench kkt`

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_nn::{Activation, Mlp};
use reveal_recon::objective::{evaluate_with, Method};
use reveal_recon::terms::{candidate_labels, Multipliers, ObjectiveConfig};

fn bench_case(c: &mut Criterion, name: &str, d: usize, h: usize, m: usize) {
    let net = Mlp::<f32>::init(d, &[h, h], 0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Array2::from_shape_simple_fn((m, d), || {
        let z: f32 = StandardNormal.sample(&mut rng);
        1e-3 * z
    });
    let lambda = Array2::from_elem((m, 1), 0.5f32);
    let y = candidate_labels(m);
    let theta = net.theta();
    let cfg = ObjectiveConfig {
        activation: Activation::ModifiedRelu(20.0),
        lambda_min: 0.45,
        multipliers: Multipliers::Margin,
    };
    let mut group = c.benchmark_group("kkt_double_backward");
    group.sample_size(10);
    for method in [Method::GradOfGrad, Method::Gram] {
        let id = format!("{name}/{method:?}");
        group.bench_function(id, |b| {
            b.iter(|| evaluate_with(method, &theta, &x, &lambda, &y, cfg))
        });
    }
    group.finish();
}

fn kkt(c: &mut Criterion) {
    bench_case(c, "D_d784_h100_m200", 784, 100, 200);
    bench_case(c, "B_d3072_h1000_m200", 3072, 1000, 200);
}

criterion_group!(benches, kkt);
criterion_main!(benches);
