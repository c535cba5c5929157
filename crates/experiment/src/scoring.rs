//! Scoring a model's reconstructions against the training set it was trained on: the glue
//! between the data sets, the model and reveal-score.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use reveal_data::{prepare, DataSpec, Prepared};
use reveal_nn::files::load_model;
use reveal_nn::Mlp;
use reveal_recon::files::load_candidates;
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

/// The data set a model was trained on, from its metadata.
pub fn model_data_spec(path: &Path, meta: &BTreeMap<String, String>) -> Result<DataSpec> {
    let text = meta.get("data").with_context(|| {
        format!(
            "{}: no data description in the metadata (not trained by reveal?); pass the data flags of its training set (--dataset …)",
            path.display()
        )
    })?;
    serde_json::from_str(text)
        .with_context(|| format!("{}: unreadable data description", path.display()))
}

/// Rebuilds a model's training set — from its metadata, or `fallback` for a model without
/// (trained elsewhere) — checking that it fits the model's d inputs.
pub fn model_data(
    path: &Path,
    meta: &BTreeMap<String, String>,
    d: usize,
    fallback: &DataSpec,
    data_dir: Option<&Path>,
) -> Result<Prepared> {
    let spec = match meta.contains_key("data") {
        true => model_data_spec(path, meta)?,
        false => fallback.clone(),
    };
    let data = prepare(&spec, data_dir)?;
    if data.train.x.ncols() != d {
        bail!(
            "{}: the model takes {d} inputs but the data set {} has {}",
            path.display(),
            spec.source.name(),
            data.train.x.ncols()
        );
    }
    Ok(data)
}

/// Scores a candidate file against the model's training set (and writes the grid).
pub fn score_file(
    model_path: &Path,
    recon: &Path,
    fallback: &DataSpec,
    data_dir: Option<&Path>,
    k: usize,
    ssim: &Ssim,
    grid_png: Option<&Path>,
) -> Result<(Score, Prepared)> {
    let model = load_model::<f32>(model_path)?;
    let data = model_data(
        model_path,
        &model.metadata,
        model.mlp.input_dim(),
        fallback,
        data_dir,
    )?;
    let c = load_candidates::<f32>(recon)?;
    if c.x.ncols() != model.mlp.input_dim() {
        bail!(
            "{}: candidates have {} values each, the model takes {}",
            recon.display(),
            c.x.ncols(),
            model.mlp.input_dim()
        );
    }
    if k == 0 || k > data.train.y.len() {
        bail!(
            "--k {k}: must be between 1 and the {} training images",
            data.train.y.len()
        );
    }
    let s = score_candidates(&data, &c.x, Some(&model.mlp), k, ssim);
    if let Some(path) = grid_png {
        write_grid(path, &s, &c.x, &data)?;
    }
    Ok((s, data))
}
