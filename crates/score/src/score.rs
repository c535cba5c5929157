//! The score S of the paper, and its calibration.
//!
//! Reconstructions: add the training mean back, then min-max each image to [0, 1]. Training images:
//! their original [0, 1] pixels. Every training image is paired with its nearest reconstruction by
//! NCC distance (no de-duplication); SSIM of each pair; sorted descending; S = mean of the best k.
//!
//! Beyond the paper (SSIM rewards matching black backgrounds on MNIST): the Pearson correlation ρ
//! of each pair and ρ10, the mean of the best 10; the same S and ρ10 for two null baselines (the
//! mean image alone; as many real held-out images as there are reconstructions); and
//! `recovered`, the number of training images whose paired reconstruction correlates with them
//! better than their nearest held-out real image does.

use ndarray::{Array1, Array2, ArrayView1};
use rayon::prelude::*;
use reveal_ssim::{correlation_from_distance, ncc_matrix, Ssim};
use serde::{Deserialize, Serialize};

/// SSIM above which a pair counts as a clear match.
pub const SSIM_THRESHOLD: f64 = 0.4;

/// One training image and its nearest reconstruction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Row of the training image.
    pub train: usize,
    /// Row of its nearest reconstruction (by NCC).
    pub candidate: usize,
    pub ssim: f64,
    /// Pearson correlation of the pair (mean over channels).
    pub rho: f64,
}

/// S and ρ10 of one set of images against the training set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean SSIM of the best k pairs.
    pub s: f64,
    /// Mean ρ of the best 10 pairs (by ρ).
    pub rho10: f64,
    /// Pairs with SSIM above [`SSIM_THRESHOLD`].
    pub above_threshold: usize,
}

/// The full score of a reconstruction set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub k: usize,
    pub summary: Summary,
    /// S over the training samples on the margin only (when margins were given).
    pub s_margin: Option<f64>,
    /// Number of training samples on the margin.
    pub margin_count: Option<usize>,
    /// Training images better matched by a reconstruction than by any held-out image.
    pub recovered: Option<usize>,
    /// The mean image alone, as if it were the reconstructions.
    pub baseline_mean: Option<Summary>,
    /// Real held-out images, as many as the reconstructions, preprocessed alike.
    pub baseline_heldout: Option<Summary>,
    /// Every training image's pair, best SSIM first.
    pub pairs: Vec<Pair>,
    /// S, ρ10 and recovered within each class (when the training images' classes were given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_class: Option<Vec<ClassScore>>,
}

/// The score restricted to the training images of one class (pairs as in the overall score:
/// each image with its nearest reconstruction of any class).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: usize,
    /// Training images of this class.
    pub count: usize,
    pub summary: Summary,
    /// Of them, recovered (better matched by a reconstruction than by any held-out image).
    pub recovered: Option<usize>,
}

/// Candidates in the mean-subtracted space → pixels: add the mean, min-max each image to [0, 1]
/// (over all its pixels and channels jointly; a constant image becomes 0).
pub fn to_pixels(x: &Array2<f32>, mean: ArrayView1<f32>) -> Array2<f32> {
    let mut out = x + &mean;
    for mut row in out.rows_mut() {
        let (lo, hi) = row
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let span = hi - lo;
        row.mapv_inplace(|v| if span > 0.0 { (v - lo) / span } else { 0.0 });
    }
    out
}

/// For each training image, its nearest image in `set` by NCC: (index, ρ).
fn nearest(train: &Array2<f32>, set: &Array2<f32>, channels: usize) -> Vec<(usize, f64)> {
    let rows =
        |a: &Array2<f32>| -> Vec<Vec<f32>> { a.rows().into_iter().map(|r| r.to_vec()).collect() };
    let (t, s) = (rows(train), rows(set));
    let tr: Vec<&[f32]> = t.iter().map(Vec::as_slice).collect();
    let sr: Vec<&[f32]> = s.iter().map(Vec::as_slice).collect();
    ncc_matrix(&tr, &sr, channels)
        .into_iter()
        .map(|d| {
            let (j, dist) = d
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |b, (j, v)| if v < b.1 { (j, v) } else { b },
                );
            (j, correlation_from_distance(dist, train.ncols(), channels))
        })
        .collect()
}

/// Mean of the `k` largest values.
fn mean_of_best(mut v: Vec<f64>, k: usize) -> f64 {
    v.sort_by(|a, b| b.total_cmp(a));
    let k = k.min(v.len()).max(1);
    v.iter().take(k).sum::<f64>() / k as f64
}

/// The pairs of every training image with its nearest image in `set`, best SSIM first.
pub fn pairs(
    train: &Array2<f32>,
    set: &Array2<f32>,
    shape: (usize, usize, usize),
    ssim: &Ssim,
) -> Vec<Pair> {
    assert_eq!(
        train.ncols(),
        set.ncols(),
        "score: training images have {} values, the set {}",
        train.ncols(),
        set.ncols()
    );
    let near = nearest(train, set, shape.0);
    let mut out: Vec<Pair> = near
        .par_iter()
        .enumerate()
        .map(|(i, &(j, rho))| {
            let (a, b) = (train.row(i).to_vec(), set.row(j).to_vec());
            Pair {
                train: i,
                candidate: j,
                ssim: ssim.mean(&a, &b, shape),
                rho,
            }
        })
        .collect();
    out.sort_by(|a, b| b.ssim.total_cmp(&a.ssim));
    out
}

/// S, ρ10 and the count above the threshold of a list of pairs.
pub fn summarise(pairs: &[Pair], k: usize) -> Summary {
    Summary {
        s: mean_of_best(pairs.iter().map(|p| p.ssim).collect(), k),
        rho10: mean_of_best(pairs.iter().map(|p| p.rho).collect(), 10),
        above_threshold: pairs.iter().filter(|p| p.ssim > SSIM_THRESHOLD).count(),
    }
}

/// What the score is computed from.
#[derive(Clone, Copy)]
pub struct ScoreInput<'a> {
    /// Training images, original [0, 1] pixels [n, d].
    pub train: &'a Array2<f32>,
    /// Reconstructions already mapped to pixels with [`to_pixels`] [m, d].
    pub recon: &'a Array2<f32>,
    /// (C, H, W).
    pub shape: (usize, usize, usize),
    /// Held-out real images, preprocessed like the reconstructions (min-max per image).
    pub heldout: Option<&'a Array2<f32>>,
    /// The training mean [d] for the mean-image baseline.
    pub mean: Option<ArrayView1<'a, f32>>,
    /// Which training samples lie on the margin.
    pub on_margin: Option<&'a [bool]>,
    /// Each training image's class, for the per-class scores (multiclass models).
    pub classes: Option<&'a [usize]>,
}

/// Scores reconstructions against the training set (S = mean SSIM of the best `k` pairs).
pub fn score(input: &ScoreInput, k: usize, ssim: &Ssim) -> Score {
    let all = pairs(input.train, input.recon, input.shape, ssim);
    let summary = summarise(&all, k);
    let (s_margin, margin_count) = match input.on_margin {
        Some(mask) => {
            let on: Vec<Pair> = all.iter().copied().filter(|p| mask[p.train]).collect();
            (Some(summarise(&on, k).s), Some(on.len()))
        }
        None => (None, None),
    };
    // How many of some pairs' training images are recovered: ρ with their reconstruction above
    // ρ with their nearest held-out image.
    let near_heldout = input
        .heldout
        .map(|h| nearest(input.train, h, input.shape.0));
    let recovered_of = |pairs: &[Pair]| {
        near_heldout
            .as_ref()
            .map(|n| pairs.iter().filter(|p| p.rho > n[p.train].1).count())
    };
    let recovered = recovered_of(&all);
    let baseline_heldout = input
        .heldout
        .map(|h| summarise(&pairs(input.train, h, input.shape, ssim), k));
    let per_class = input.classes.map(|classes| {
        let count = classes.iter().max().map_or(0, |&c| c + 1);
        (0..count)
            .map(|class| {
                let mine: Vec<Pair> = all
                    .iter()
                    .copied()
                    .filter(|p| classes[p.train] == class)
                    .collect();
                ClassScore {
                    class,
                    count: mine.len(),
                    summary: summarise(&mine, k),
                    recovered: recovered_of(&mine),
                }
            })
            .collect()
    });
    let baseline_mean = input.mean.map(|m| {
        let img = to_pixels(&Array2::zeros((1, m.len())), m);
        summarise(&pairs(input.train, &img, input.shape, ssim), k)
    });
    Score {
        k,
        summary,
        s_margin,
        margin_count,
        recovered,
        baseline_mean,
        baseline_heldout,
        pairs: all,
        per_class,
    }
}

/// Held-out images preprocessed like reconstructions: centred with the training mean, then
/// mapped back and min-maxed (the first `count` rows of `test_x`).
pub fn heldout_like_recon(
    test_x: &Array2<f32>,
    mean: ArrayView1<f32>,
    count: usize,
) -> Array2<f32> {
    let n = count.min(test_x.nrows());
    to_pixels(&test_x.slice(ndarray::s![..n, ..]).to_owned(), mean)
}

/// Which samples lie on the margin: |y f(x)| within `tolerance` (relative) of the smallest.
pub fn margin_mask(margins: &Array1<f32>, tolerance: f32) -> Vec<bool> {
    let min = margins.iter().fold(f32::INFINITY, |m, &v| m.min(v.abs()));
    margins
        .iter()
        .map(|&v| v.abs() <= min * (1.0 + tolerance))
        .collect()
}
