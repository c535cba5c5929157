//! End to end on a tiny case: train a 256-300-300-1 net on 10 synthetic 16×16 images (rings
//! against crosses), reconstruct from the weights alone with two runs at the reference setting
//! `mnist-a`, and find the training images among the pooled candidates.
//!
//! "Found" is measured by the Pearson correlation of an image with its best candidate. The bar
//! is a comparison with real images: a pipeline that only learned what rings and crosses look
//! like would return shapes about as close to a training image as the nearest *other* image
//! (training or held-out) is; the reconstruction must beat that by far on average.

use ndarray::{concatenate, Array2, ArrayView1, Axis};
use reveal_data::{prepare, DataSpec, Source, TestSelection};
use reveal_nn::Mlp;
use reveal_recon::optim::{run, RunConfig, RunState};
use reveal_recon::preset;
use reveal_train::job::{features, label_column};
use reveal_train::{train, Control, Outcome, Schedule, TrainConfig, TrainState};

/// Pearson correlation of two images.
fn correlation(a: ArrayView1<f32>, b: ArrayView1<f32>) -> f32 {
    let (ma, mb) = (a.mean().unwrap(), b.mean().unwrap());
    let (a, b) = (a.mapv(|v| v - ma), b.mapv(|v| v - mb));
    a.dot(&b) / (a.dot(&a) * b.dot(&b)).sqrt()
}

/// The best correlation of `x` with a row of `rows`, leaving out row `skip`.
fn best(x: ArrayView1<f32>, rows: &Array2<f32>, skip: Option<usize>) -> f32 {
    rows.outer_iter()
        .enumerate()
        .filter(|(j, _)| Some(*j) != skip)
        .map(|(_, r)| correlation(x, r))
        .fold(f32::MIN, f32::max)
}

#[test]
fn reconstruction_recovers_the_training_images_of_a_tiny_net() {
    let (n, d, h) = (10, 256, 300);
    let mut spec = DataSpec::new(Source::Synthetic { size: 16 }, n / 2);
    spec.test = TestSelection::PerClass(100);
    let data = prepare(&spec, None).expect("synthetic data needs no files");
    let (x, y) = (
        features::<f32>(&data.train.x),
        label_column::<f32>(&data.train.y),
    );

    // Train as `reveal train` does: fast schedule to loss 1e-5 with zero error.
    let mut state = TrainState::new(Mlp::<f32>::init(d, &[h, h], 0), Schedule::FAST);
    let cfg = TrainConfig {
        schedule: Schedule::FAST,
        target_loss: 1e-5,
        max_epochs: 10_000,
    };
    let outcome = train(&mut state, &x, &y, &cfg, |_| Control::Continue);
    assert_eq!(outcome, Outcome::Converged, "training did not converge");
    let model = state.mlp();

    // Two runs at the reference setting (seeds 0 and 1, m = 2n candidates each), from the
    // weights alone; their candidates are pooled, as the search pools its best runs.
    let reconstruct = |seed| {
        let cfg = RunConfig::new(preset("mnist-a").unwrap(), 2 * n, 20_000, seed);
        let mut recon = RunState::<f32>::init(d, &cfg);
        run(&model, &mut recon, &cfg, |_, _| true).expect("the run stays finite");
        recon.x
    };
    let (first, second) = rayon::join(|| reconstruct(0), || reconstruct(1));
    let candidates = concatenate![Axis(0), first, second];

    let others = concatenate![Axis(0), x, data.test.x];
    let (mut found, mut baseline, mut exact) = (0.0, 0.0, 0);
    for (i, xi) in x.outer_iter().enumerate() {
        let to_candidate = best(xi, &candidates, None);
        let to_other = best(xi, &others, Some(i));
        eprintln!(
            "image {i}: best candidate {to_candidate:.3}, best other real image {to_other:.3}"
        );
        found += to_candidate / n as f32;
        baseline += to_other / n as f32;
        exact += usize::from(to_candidate >= 0.95);
    }
    eprintln!("mean: candidates {found:.3}, other images {baseline:.3}; {exact} of {n} at ≥ 0.95");
    assert!(
        found >= 0.9 && found >= baseline + 0.05,
        "reconstruction found the training images at mean correlation {found:.3} \
         (other real images: {baseline:.3})"
    );
    assert!(
        exact >= n / 2,
        "only {exact} of {n} training images came back at correlation ≥ 0.95"
    );
}
