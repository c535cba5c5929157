//! The score: exact copies of training images score 1; pairing is by NCC; baselines behave.

use ndarray::{Array1, Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reveal_score::score::{heldout_like_recon, margin_mask, score, to_pixels, ScoreInput};
use reveal_ssim::Ssim;

const SHAPE: (usize, usize, usize) = (1, 12, 12);

/// Random images spanning exactly [0, 1] (so min-max leaves them unchanged).
fn images(n: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut a = Array2::from_shape_simple_fn((n, 144), || rng.gen::<f32>());
    for mut r in a.rows_mut() {
        r[0] = 0.0;
        r[1] = 1.0;
    }
    a
}

#[test]
fn exact_copies_of_k_training_images_score_one() {
    let train = images(30, 1);
    let mean: Array1<f32> = train.mean_axis(Axis(0)).unwrap();
    // Candidates: 10 training images (in the mean-subtracted space) and 50 unrelated ones.
    let mut cand = images(60, 2) - &mean;
    for i in 0..10 {
        cand.row_mut(2 * i + 5).assign(&(&train.row(3 * i) - &mean));
    }
    let recon = to_pixels(&cand, mean.view());
    let test_x = images(60, 3) - &mean;
    let heldout = heldout_like_recon(&test_x, mean.view(), 60);
    let input = ScoreInput {
        train: &train,
        recon: &recon,
        shape: SHAPE,
        heldout: Some(&heldout),
        mean: Some(mean.view()),
        on_margin: None,
        classes: None,
    };
    let sc = score(&input, 10, &Ssim::kornia3());
    assert!((sc.summary.s - 1.0).abs() < 1e-4, "S = {}", sc.summary.s);
    assert!((sc.summary.rho10 - 1.0).abs() < 1e-6);
    for p in &sc.pairs[..10] {
        assert_eq!(p.train % 3, 0);
        assert_eq!(
            p.candidate,
            2 * (p.train / 3) + 5,
            "paired with the copy by NCC"
        );
    }
    assert!(sc.recovered.unwrap() >= 10);
    assert!(sc.summary.above_threshold >= 10);
    // With k = 11 the 11th pair is unrelated noise and S falls.
    assert!(score(&input, 11, &Ssim::kornia3()).summary.s < 0.999);
    assert!(sc.per_class.is_none());

    // Per class (image i of class i mod 3): the copies are all of class 0, which alone scores 1
    // and recovers all 10; the counts add up to the overall ones.
    let classes: Vec<usize> = (0..30).map(|i| i % 3).collect();
    let per_class = score(
        &ScoreInput {
            classes: Some(&classes),
            ..input
        },
        10,
        &Ssim::kornia3(),
    )
    .per_class
    .unwrap();
    assert_eq!(per_class.len(), 3);
    assert!((per_class[0].summary.s - 1.0).abs() < 1e-4);
    assert_eq!(per_class[0].recovered, Some(10));
    assert!(per_class[1..]
        .iter()
        .all(|c| c.summary.s < 0.5 && c.count == 10));
    let total: usize = per_class.iter().map(|c| c.recovered.unwrap()).sum();
    assert_eq!(Some(total), sc.recovered);
}

#[test]
fn random_candidates_score_low_and_recover_nothing_unusual() {
    let train = images(30, 4);
    let mean: Array1<f32> = train.mean_axis(Axis(0)).unwrap();
    let recon = to_pixels(&(images(60, 5) - &mean), mean.view());
    let heldout = heldout_like_recon(&(images(60, 6) - &mean), mean.view(), 60);
    let input = ScoreInput {
        train: &train,
        recon: &recon,
        shape: SHAPE,
        heldout: Some(&heldout),
        mean: Some(mean.view()),
        on_margin: None,
        classes: None,
    };
    let sc = score(&input, 10, &Ssim::kornia3());
    assert!(sc.summary.s < 0.3, "{}", sc.summary.s);
    assert_eq!(sc.pairs.len(), 30);
    assert!(
        sc.pairs.windows(2).all(|w| w[0].ssim >= w[1].ssim),
        "sorted best first"
    );
}

#[test]
fn to_pixels_adds_the_mean_and_min_maxes_each_image() {
    let mean = Array1::from_elem(4, 0.5f32);
    let x = ndarray::array![[-0.5f32, 0.0, 0.25, 0.5], [0.1, 0.1, 0.1, 0.1]];
    let p = to_pixels(&x, mean.view());
    assert_eq!(p.row(0).to_vec(), [0.0, 0.5, 0.75, 1.0]);
    assert_eq!(p.row(1).to_vec(), [0.0; 4]);
}

#[test]
fn margin_mask_keeps_samples_within_ten_percent() {
    let m = Array1::from(vec![2.0f32, -1.05, 1.0, 1.2, 1.09]);
    assert_eq!(margin_mask(&m, 0.1), [false, true, true, false, true]);
}
