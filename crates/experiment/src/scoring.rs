//! Scoring a model's reconstructions against the training set it was trained on: the glue
//! between the data sets, the model and reveal-score.

use std::path::Path;

use anyhow::Result;
use ndarray::Array2;
use reveal_data::Prepared;
use reveal_nn::Mlp;
use reveal_score::score::{heldout_like_recon, margin_mask, score, to_pixels, ScoreInput};
use reveal_score::Score;
use reveal_ssim::Ssim;

/// Scores candidates x [m, d] (mean-subtracted space) of a model against its training set:
/// held-out baseline from the test split, margin samples from the model's margins y·f(x).
pub fn score_candidates(
    data: &Prepared,
    candidates: &Array2<f32>,
    model: Option<&Mlp<f32>>,
    k: usize,
    ssim: &Ssim,
) -> Score {
    let recon = to_pixels(candidates, data.mean.view());
    let heldout = heldout_like_recon(&data.test.x, data.mean.view(), candidates.nrows());
    let mask = model.map(|m| {
        let f = m.predict(data.train.x.view()).column(0).to_owned();
        margin_mask(&(&f * &data.train.y), 0.1)
    });
    let input = ScoreInput {
        train: &data.train.pixels,
        recon: &recon,
        shape: data.shape,
        heldout: Some(&heldout),
        mean: Some(data.mean.view()),
        on_margin: mask.as_deref(),
    };
    score(&input, k, ssim)
}

/// Writes the best 30 pairs of a score as a PNG grid of 10 columns: odd rows the
/// reconstructions, even rows their training images.
pub fn write_grid(path: &Path, s: &Score, candidates: &Array2<f32>, data: &Prepared) -> Result<()> {
    let recon = to_pixels(candidates, data.mean.view());
    crate::grid::write_pairs_png(
        path,
        &s.pairs,
        &recon,
        &data.train.pixels,
        data.shape,
        30,
        10,
    )
}
