//! Null models: random models of the audited model's shape whose every layer is rescaled to the
//! audited layer's Frobenius norm (with the weights before training known: the same start, and a
//! random step of the norms of the step training took). Reconstructed and mapped like the
//! audited model, they show what the method gives back from weights that learned nothing. (An
//! untrained model at the reference init, W1 ~ 1e-4, is degenerate: the gradient w.r.t. x is
//! ~1e-8 and nothing moves.)

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_nn::files::{load_model, save_model};
use reveal_nn::Mlp;

/// What a null model's seed adds to the seed of the audit or experiment it belongs to, so that
/// it never shares the draws of the model it stands beside.
pub const SEED_OFFSET: u64 = 7919;

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
        biases: trained.biases.iter().map(&mut like).collect(),
        features: trained.features.clone(),
    }
}

/// `f` of two models of one shape, tensor by tensor.
fn zip(a: &Mlp<f32>, b: &Mlp<f32>, f: fn(&Array2<f32>, &Array2<f32>) -> Array2<f32>) -> Mlp<f32> {
    let each =
        |x: &[Array2<f32>], y: &[Array2<f32>]| x.iter().zip(y).map(|(x, y)| f(x, y)).collect();
    Mlp {
        weights: each(&a.weights, &b.weights),
        biases: each(&a.biases, &b.biases),
        features: a.features.clone(),
    }
}

/// A model that learned nothing from where `trained` started: `init` plus a random step of the
/// layer norms of the step training took, `init + random_like(trained − init)`.
pub fn random_step(trained: &Mlp<f32>, init: &Mlp<f32>, seed: u64) -> Mlp<f32> {
    let step = random_like(&zip(trained, init, |a, b| a - b), seed);
    zip(&step, init, |a, b| a + b)
}

/// The null model kept at `path`: `random_like(trained, seed + SEED_OFFSET)`, or with the
/// weights before training known `random_step(trained, init, seed + SEED_OFFSET)` (reconstructed
/// from the same origin); written (with the training mean and `metadata`) the first time, read
/// back afterwards, so an interrupted audit or experiment resumes with the same one.
pub fn null_model(
    path: &Path,
    trained: &Mlp<f32>,
    init: Option<&Mlp<f32>>,
    mean: &Array1<f32>,
    seed: u64,
    metadata: &BTreeMap<String, String>,
) -> Result<Mlp<f32>> {
    if !path.exists() {
        let mean = mean.view().insert_axis(Axis(0)).to_owned();
        let null = match init {
            Some(init) => random_step(trained, init, seed + SEED_OFFSET),
            None => random_like(trained, seed + SEED_OFFSET),
        };
        save_model(path, &null, Some(&mean), metadata)?;
    }
    Ok(load_model::<f32>(path)?.mlp)
}
