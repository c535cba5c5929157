//! Scoring a model's reconstructions against the training set it was trained on: the glue
//! between the data sets, the model and reveal-score.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::Array2;
use reveal_data::{class_of_label, prepare, DataSpec, Prepared};
use reveal_nn::files::{check_input_width, load_model};
use reveal_nn::{margins, Mlp};
use reveal_recon::files::{check_labels, load_candidates};
use reveal_recon::Multipliers;
use reveal_render::grid;
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
    let y = data.train.y.view().insert_axis(ndarray::Axis(1));
    let mask = model.map(|m| {
        let f = m.predict(data.train.x.view());
        margin_mask(&margins(f.view(), y).column(0).to_owned(), 0.1)
    });
    let classes: Option<Vec<usize>> = (data.classes() > 2).then(|| {
        let c = data.classes();
        data.train.y.iter().map(|&v| class_of_label(v, c)).collect()
    });
    let input = ScoreInput {
        train: &data.train.pixels,
        recon: &recon,
        shape: data.shape,
        heldout: Some(&heldout),
        mean: Some(data.mean.view()),
        on_margin: mask.as_deref(),
        classes: classes.as_deref(),
    };
    score(&input, k, ssim)
}

/// Checks that a model (`outputs`, from the file at `path`) fits its task's data: one output
/// for a binary task, one per class for `--task all`.
pub fn check_outputs(outputs: usize, data: &Prepared, path: &Path) -> Result<()> {
    if outputs != data.outputs() {
        bail!(
            "{}: the model has {outputs} outputs, a model of this task ({} classes) has {}; a model with one output per class takes the task of every class (all)",
            path.display(),
            data.classes(),
            data.outputs()
        );
    }
    Ok(())
}

/// Writes the reconstructions of a multiclass model as a PNG grid with one row per class
/// (candidate labels `y` are class indices): in each row, the class's candidates that best match
/// a training image first (by the SSIM of their pairs), up to `cols`.
pub fn write_class_rows(
    path: &Path,
    s: &Score,
    candidates: &Array2<f32>,
    y: &[f32],
    data: &Prepared,
    cols: usize,
) -> Result<()> {
    let recon = to_pixels(candidates, data.mean.view());
    let rows = class_rows(&recon, y, data.classes(), cols, Some(s));
    let views: Vec<_> = rows.rows().into_iter().collect();
    grid::write_png(
        path,
        &views,
        data.shape,
        cols,
        grid::default_scale(data.shape.2),
    )
}

/// Reconstructions (in pixels, [m, d]) one row of `cols` cells per class, labels `y` being
/// class indices: each class's candidates, best matched first when a score is given (by the
/// SSIM of their pairs), else in order; blank cells where a class has fewer than `cols`.
pub fn class_rows(
    pixels: &Array2<f32>,
    y: &[f32],
    classes: usize,
    cols: usize,
    score: Option<&Score>,
) -> Array2<f32> {
    let mut best = vec![f64::NEG_INFINITY; y.len()];
    for p in score.iter().flat_map(|s| &s.pairs) {
        best[p.candidate] = best[p.candidate].max(p.ssim);
    }
    let mut out = Array2::zeros((classes * cols, pixels.ncols()));
    for class in 0..classes {
        let mut mine: Vec<usize> = (0..y.len()).filter(|&i| y[i] as usize == class).collect();
        // A stable sort: without a score every key is equal and the order stays.
        mine.sort_by(|&a, &b| best[b].total_cmp(&best[a]));
        for (cell, &i) in mine.iter().take(cols).enumerate() {
            out.row_mut(class * cols + cell).assign(&pixels.row(i));
        }
    }
    out
}

/// Where the one-row-per-class grid goes beside a pairs grid `x.png`: `x-classes.png`.
pub fn class_rows_path(grid: &Path) -> std::path::PathBuf {
    let stem = grid
        .file_stem()
        .map_or("grid".into(), |s| s.to_string_lossy());
    grid.with_file_name(format!("{stem}-classes.png"))
}

/// Writes the best 30 pairs of a score as a PNG grid of 10 columns: odd rows the
/// reconstructions, even rows their training images.
pub fn write_grid(path: &Path, s: &Score, candidates: &Array2<f32>, data: &Prepared) -> Result<()> {
    let recon = to_pixels(candidates, data.mean.view());
    grid::write_pairs_png(
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
            "{}: no data description in the metadata (not trained by reveal?); give the data set and task of its training set",
            path.display()
        )
    })?;
    serde_json::from_str(text)
        .with_context(|| format!("{}: unreadable data description", path.display()))
}

/// The form of the multipliers a training recipe calls for on a model of `outputs` outputs:
/// [`Multipliers::of_training`] of its loss and weight decay.
pub fn recipe_multipliers(recipe: &reveal_train::TrainConfig, outputs: usize) -> Multipliers {
    Multipliers::of_training(
        recipe.loss == reveal_train::Loss::Squared,
        recipe.weight_decay,
        outputs,
    )
}

/// The form of the multipliers to fit a model of `outputs` outputs with: the one `given`, else
/// the one its recipe calls for, read from its metadata (a model trained by reveal), else the
/// margin form.
pub fn model_multipliers(
    given: Option<Multipliers>,
    meta: &BTreeMap<String, String>,
    outputs: usize,
) -> Multipliers {
    let trained = || {
        reveal_train::job::TrainSummary::from_metadata(meta)
            .map(|s| recipe_multipliers(&s.config, outputs))
    };
    given
        .or_else(trained)
        .unwrap_or_default()
        .for_outputs(outputs)
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
    let what = format!("the images of {} ({:?})", spec.source.name(), data.shape);
    check_input_width(d, data.train.x.ncols(), path, &what)?;
    Ok(data)
}

/// A best-k count the training set cannot give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("best {k}: must be between 1 and the {training} training images")]
pub struct TopK {
    pub k: usize,
    pub training: usize,
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
    check_input_width(model.mlp.input_dim(), c.x.ncols(), recon, "its candidates")?;
    if k == 0 || k > data.train.y.len() {
        return Err(TopK {
            k,
            training: data.train.y.len(),
        }
        .into());
    }
    check_labels(&c.y, model.mlp.outputs(), recon)?;
    check_outputs(model.mlp.outputs(), &data, model_path)?;
    let s = score_candidates(&data, &c.x, Some(&model.mlp), k, ssim);
    if let Some(path) = grid_png {
        write_grid(path, &s, &c.x, &data)?;
        if data.outputs() > 1 {
            let y: Vec<f32> = c.y.iter().copied().collect();
            write_class_rows(&class_rows_path(path), &s, &c.x, &y, &data, 10)?;
        }
    }
    Ok((s, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reveal_train::job::TrainSummary;
    use reveal_train::{Loss, Outcome, TrainConfig};

    /// The metadata of a model trained with `loss` and weight decay `wd`.
    fn trained(loss: Loss, wd: f64) -> BTreeMap<String, String> {
        let summary = TrainSummary {
            outcome: Outcome::Stalled,
            epochs: 1,
            rejected_steps: 0,
            train_loss: 0.1,
            train_error: 0.0,
            test_accuracy: 0.5,
            test_size: 10,
            wall_seconds: 0.0,
            warnings: Vec::new(),
            precision: "f32".into(),
            hidden: vec![4],
            config: TrainConfig {
                loss,
                weight_decay: wd,
                ..TrainConfig::fast(1e-5, 10)
            },
            seed: 0,
        };
        BTreeMap::from([(
            "train".to_string(),
            serde_json::to_string(&summary).unwrap(),
        )])
    }

    /// The audit and `reveal reconstruct` need no flag for a model reveal trained: the form comes
    /// from its loss and weight decay; a flag overrides it; a model from elsewhere gets margin.
    #[test]
    fn the_multipliers_follow_the_models_recipe() {
        use Multipliers::*;
        let cases = [
            (Loss::Logistic, 0.0, 10, Margin),
            (Loss::Logistic, 1e-3, 10, Pairs),
            (Loss::Logistic, 1e-3, 1, Margin),
            (Loss::Squared, 0.0, 1, Signed),
            (Loss::Squared, 7.5e-4, 10, Signed),
        ];
        for (loss, wd, outputs, form) in cases {
            assert_eq!(
                model_multipliers(None, &trained(loss, wd), outputs),
                form,
                "{loss:?} wd {wd}, {outputs} outputs"
            );
        }
        let ce = trained(Loss::Logistic, 1e-3);
        assert_eq!(model_multipliers(Some(Margin), &ce, 10), Margin);
        assert_eq!(model_multipliers(None, &BTreeMap::new(), 10), Margin);
    }
}
