//! The bias map: what separates the recovered samples' classes that does not separate the
//! training images' classes as much.
//!
//! A classifier's decision lives in the difference between its classes. For a set of images with
//! labels ±1, let d(p) = mean_{y=+1} x(p) − mean_{y=−1} x(p) (channels summed in square) and its
//! share s(p) = d(p)² / Σ_q d(q)². The map is
//! B(p) = log((s_recon(p) + 1/P) / (s_train(p) + 1/P)), P = H·W pixels: positive where the
//! reconstructions' class difference concentrates more than the training set's does. A model that
//! learned the concept gives back samples whose classes differ like the training classes (B ≈ 0);
//! one that learned a trigger gives back mean-image blobs that differ almost only at the trigger,
//! which in the training set is one part of the class difference among many.
//!
//! Check against planted triggers: the K pixels with the largest B, K being the trigger area, and
//! the fraction of them inside a trigger square (precision; chance = area / H·W).

use ndarray::{Array1, Array2};
use reveal_data::bias::SQUARE;
use reveal_data::Triggers;
use serde::{Deserialize, Serialize};

/// Share of the class difference per pixel (H·W), s(p) = d(p)² / Σ d², channels summed.
fn difference_share(x: &Array2<f32>, y: &[f32], shape: (usize, usize, usize)) -> Array1<f64> {
    assert_eq!(
        x.nrows(),
        y.len(),
        "bias map: {} images but {} labels",
        x.nrows(),
        y.len()
    );
    let (c, h, w) = shape;
    let class_mean = |positive: bool| {
        let rows: Vec<_> = x
            .rows()
            .into_iter()
            .zip(y)
            .filter(|(_, &l)| (l > 0.0) == positive)
            .map(|(r, _)| r)
            .collect();
        let mut m = Array1::<f64>::zeros(x.ncols());
        for r in &rows {
            m.zip_mut_with(r, |a, &b| *a += b as f64);
        }
        m / rows.len().max(1) as f64
    };
    let d = class_mean(true) - class_mean(false);
    let mut s = Array1::<f64>::zeros(h * w);
    for ch in 0..c {
        for p in 0..h * w {
            s[p] += d[ch * h * w + p].powi(2);
        }
    }
    let total = s.sum().max(f64::MIN_POSITIVE);
    s / total
}

/// B(p) for candidates (with their labels) and training images (with theirs), both in the
/// mean-subtracted space.
pub fn bias_map(
    candidates: &Array2<f32>,
    cand_y: &[f32],
    train: &Array2<f32>,
    train_y: &[f32],
    shape: (usize, usize, usize),
) -> Array1<f64> {
    let eps = 1.0 / (shape.1 * shape.2) as f64;
    let (r, t) = (
        difference_share(candidates, cand_y, shape),
        difference_share(train, train_y, shape),
    );
    ndarray::Zip::from(&r)
        .and(&t)
        .map_collect(|a, b| ((a + eps) / (b + eps)).ln())
}

/// How well a map finds the planted triggers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerCheck {
    /// Pixels covered by the trigger squares.
    pub trigger_pixels: usize,
    /// Fraction of the top-`trigger_pixels` map pixels inside a trigger square.
    pub precision: f64,
    /// What a random map would give: trigger area / image area.
    pub chance: f64,
    /// Trigger squares with at least one of their pixels among the top ones.
    pub squares_hit: usize,
    pub squares: usize,
}

/// The trigger squares' pixels (row·W + col) and the squares themselves.
fn trigger_pixels(t: &Triggers, h: usize, w: usize) -> (Vec<bool>, Vec<usize>) {
    let mut mask = vec![false; h * w];
    let mut tops: Vec<usize> = t.class0.iter().chain(&t.class1).copied().collect();
    tops.sort();
    tops.dedup();
    for &p in &tops {
        for r in p..(p + SQUARE).min(h) {
            for c in p..(p + SQUARE).min(w) {
                mask[r * w + c] = true;
            }
        }
    }
    (mask, tops)
}

/// Compares a map with the planted triggers; `None` when there are none (base, contrast).
pub fn check(
    map: &Array1<f64>,
    triggers: &Triggers,
    shape: (usize, usize, usize),
) -> Option<TriggerCheck> {
    let (_, h, w) = shape;
    let (mask, tops) = trigger_pixels(triggers, h, w);
    let k = mask.iter().filter(|&&m| m).count();
    if k == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..h * w).collect();
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]));
    let top = &order[..k];
    let inside = top.iter().filter(|&&p| mask[p]).count();
    let squares_hit = tops
        .iter()
        .filter(|&&p| {
            top.iter()
                .any(|&q| (p..p + SQUARE).contains(&(q / w)) && (p..p + SQUARE).contains(&(q % w)))
        })
        .count();
    Some(TriggerCheck {
        trigger_pixels: k,
        precision: inside as f64 / k as f64,
        chance: k as f64 / (h * w) as f64,
        squares_hit,
        squares: tops.len(),
    })
}

/// The map as a heat image (H×W RGB in [0, 1]): white 0, red positive, blue negative.
pub fn heat_image(map: &Array1<f64>) -> Array1<f32> {
    let peak = map.iter().fold(1e-9f64, |m, v| m.max(v.abs()));
    let n = map.len();
    let mut out = Array1::<f32>::zeros(3 * n);
    for (p, &v) in map.iter().enumerate() {
        let t = (v / peak).clamp(-1.0, 1.0) as f32;
        let (r, g, b) = if t >= 0.0 {
            (1.0, 1.0 - t, 1.0 - t)
        } else {
            (1.0 + t, 1.0 + t, 1.0)
        };
        out[p] = r;
        out[n + p] = g;
        out[2 * n + p] = b;
    }
    out
}
