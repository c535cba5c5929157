//! The null control: a random model of the trained model's shape whose every layer is rescaled
//! to the trained layer's Frobenius norm. (An untrained model at the reference init, W1 ~ 1e-4,
//! is degenerate: the gradient w.r.t. x is ~1e-8 and nothing moves.)

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_nn::Mlp;

/// ‖a‖_F
fn norm(a: &Array2<f32>) -> f32 {
    a.iter().map(|v| v * v).sum::<f32>().sqrt()
}

/// A Gaussian random model with the layer norms of `trained`.
pub fn random_like(trained: &Mlp<f32>, seed: u64) -> Mlp<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut like = |a: &Array2<f32>| {
        let r = Array2::from_shape_simple_fn(a.dim(), || StandardNormal.sample(&mut rng));
        let s = norm(a) / norm(&r).max(f32::MIN_POSITIVE);
        r * s
    };
    Mlp {
        weights: trained.weights.iter().map(&mut like).collect(),
        bias: like(&trained.bias),
    }
}
