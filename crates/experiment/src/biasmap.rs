//! The bias map: where the reconstructions' classes differ in a way clean images of the same
//! task do not, and whether that difference sits in one compact spot.
//!
//! A classifier's decision lives in the difference between its classes. For images with labels
//! ±1 let D(c, p) = mean_{y=+1} x(c, p) − mean_{y=−1} x(c, p), per channel c and pixel p. The
//! reconstructions give D_rec; clean held-out images of the task (which carry no planted
//! trigger) give D_clean, the class difference the concept itself explains. Their residual
//!
//! ```text
//! R = D_rec − β·D_clean,   β = ⟨D_rec, D_clean⟩ / ⟨D_clean, D_clean⟩   (least squares)
//! ```
//!
//! is what the reconstructions separate beyond the concept. Per pixel, with |·| the length over
//! channels, the residual is weighed against how much the clean classes differ there,
//! r(p) = |R(p)| / max(|D_clean(p)|, median_q |D_clean(q)|), so that a difference where the
//! concept has none (a corner of an MNIST digit, a patch of sky) counts for more than one
//! along the strokes of the digits; then standardised robustly over the image,
//! z(p) = (r(p) − median r) / (1.4826·MAD r): the map. (Dividing by the *training* set's class
//! difference, as an earlier map did, cancels exactly a trigger the training set carries; the
//! clean reference does not carry it.)
//!
//! A shortcut shows as a compact spot of large z. The hotspot search scores every k×k window,
//! k = 2…6, as Σ z / k (the window's mean z times its side, so that windows of every size are on
//! one scale under noise), and keeps the best. Whether that is a spot or noise is calibrated,
//! not tuned: the same score computed for maps that carry no shortcut —
//! - class-difference maps of random subsets of the clean images, as many per class as there
//!   are candidates (what reconstructions of a concept-learning model would give if they were
//!   real images), and
//! - the null models' reconstructions (random models with the audited model's layer norms) —
//!
//! and the threshold is the largest of them.
//!
//! Check against planted triggers: the K pixels with the largest z, K being the trigger area,
//! and the fraction of them inside a trigger square (precision; chance = area / H·W).

use ndarray::{Array1, Array2};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reveal_data::bias::SQUARE;
use reveal_data::Triggers;
use serde::{Deserialize, Serialize};

/// Window sides of the hotspot search.
pub const WINDOWS: std::ops::RangeInclusive<usize> = 2..=6;

/// D(c, p) = mean_{y=+1} x − mean_{y=−1} x, as a row of C·H·W values.
pub fn class_difference(x: &Array2<f32>, y: &[f32]) -> Array1<f64> {
    assert_eq!(
        x.nrows(),
        y.len(),
        "bias map: {} images but {} labels",
        x.nrows(),
        y.len()
    );
    let mut sums = [Array1::<f64>::zeros(x.ncols()), Array1::zeros(x.ncols())];
    let mut counts = [0usize; 2];
    for (row, &l) in x.rows().into_iter().zip(y) {
        let k = usize::from(l > 0.0);
        sums[k].zip_mut_with(&row, |a, &b| *a += b as f64);
        counts[k] += 1;
    }
    let [neg, pos] = sums;
    pos / counts[1].max(1) as f64 - neg / counts[0].max(1) as f64
}

/// The map z(p) (H·W values) of a class difference against the clean images' one.
pub fn residual_map(
    d_rec: &Array1<f64>,
    d_clean: &Array1<f64>,
    shape: (usize, usize, usize),
) -> Array1<f64> {
    let (c, h, w) = shape;
    assert_eq!(
        d_rec.len(),
        c * h * w,
        "bias map: {} values for shape {shape:?}",
        d_rec.len()
    );
    assert_eq!(
        d_clean.len(),
        d_rec.len(),
        "bias map: reference has {} values, not {}",
        d_clean.len(),
        d_rec.len()
    );
    let beta = d_rec.dot(d_clean) / d_clean.dot(d_clean).max(f64::MIN_POSITIVE);
    let residual = d_rec - &(d_clean * beta);
    let length = |d: &Array1<f64>| {
        Array1::from_shape_fn(h * w, |p| {
            (0..c)
                .map(|ch| d[ch * h * w + p].powi(2))
                .sum::<f64>()
                .sqrt()
        })
    };
    let clean = length(d_clean);
    let floor = median(clean.to_vec()).max(f64::MIN_POSITIVE);
    let r = &length(&residual) / &clean.mapv(|v| v.max(floor));
    robust_z(&r)
}

/// The median of some values (0 for none).
fn median(mut a: Vec<f64>) -> f64 {
    a.sort_by(f64::total_cmp);
    let n = a.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => a[n / 2],
        _ => 0.5 * (a[n / 2 - 1] + a[n / 2]),
    }
}

/// (v − median) / (1.4826·MAD): a z-score that a few extreme pixels cannot inflate.
fn robust_z(v: &Array1<f64>) -> Array1<f64> {
    let med = median(v.to_vec());
    let mad = median(v.iter().map(|x| (x - med).abs()).collect());
    let scale = (1.4826 * mad).max(1e-12 * med.abs().max(f64::MIN_POSITIVE));
    v.mapv(|x| (x - med) / scale)
}

/// The most compact spot of a map: its window (rows r0..=r1, cols c0..=c1) and score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hotspot {
    /// [r0, c0, r1, c1], inclusive.
    pub region: [usize; 4],
    /// Σ z over the window / its side.
    pub score: f64,
}

/// The best k×k window of a map over k in [`WINDOWS`] (k up to the image's side).
pub fn hotspot(z: &Array1<f64>, h: usize, w: usize) -> Hotspot {
    assert_eq!(z.len(), h * w, "hotspot: {} values for {h}×{w}", z.len());
    // Summed-area table: any window's sum in four lookups.
    let mut sat = vec![0.0f64; (h + 1) * (w + 1)];
    for r in 0..h {
        for c in 0..w {
            sat[(r + 1) * (w + 1) + c + 1] =
                z[r * w + c] + sat[r * (w + 1) + c + 1] + sat[(r + 1) * (w + 1) + c]
                    - sat[r * (w + 1) + c];
        }
    }
    let sum = |r0: usize, c0: usize, k: usize| {
        let at = |r: usize, c: usize| sat[r * (w + 1) + c];
        at(r0 + k, c0 + k) - at(r0, c0 + k) - at(r0 + k, c0) + at(r0, c0)
    };
    let mut best = Hotspot {
        region: [0, 0, 0, 0],
        score: f64::NEG_INFINITY,
    };
    for k in WINDOWS.filter(|&k| k <= h.min(w)) {
        for r0 in 0..=h - k {
            for c0 in 0..=w - k {
                let score = sum(r0, c0, k) / k as f64;
                if score > best.score {
                    best = Hotspot {
                        region: [r0, c0, r0 + k - 1, c0 + k - 1],
                        score,
                    };
                }
            }
        }
    }
    best
}

/// Hotspot scores of maps with no shortcut in them, from the clean images alone: `draws`
/// class-difference maps of random class-balanced subsets of `per_class` images per class
/// (the training set's size: what reconstructions of a concept-learning model would give if
/// they were the real training images), each against the full clean class difference.
pub fn clean_null_scores(
    clean: &Array2<f32>,
    labels: &[f32],
    per_class: usize,
    shape: (usize, usize, usize),
    draws: usize,
    seed: u64,
) -> Vec<f64> {
    let d_clean = class_difference(clean, labels);
    let by_class = |positive: bool| -> Vec<usize> {
        (0..labels.len())
            .filter(|&i| (labels[i] > 0.0) == positive)
            .collect()
    };
    let (mut neg, mut pos) = (by_class(false), by_class(true));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..draws)
        .map(|_| {
            neg.shuffle(&mut rng);
            pos.shuffle(&mut rng);
            let take: Vec<usize> = neg
                .iter()
                .take(per_class)
                .chain(pos.iter().take(per_class))
                .copied()
                .collect();
            let x = clean.select(ndarray::Axis(0), &take);
            let y: Vec<f32> = take.iter().map(|&i| labels[i]).collect();
            let z = residual_map(&class_difference(&x, &y), &d_clean, shape);
            hotspot(&z, shape.1, shape.2).score
        })
        .collect()
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
    /// Whether a detected region (when given) overlaps a trigger square.
    pub region_overlaps: Option<bool>,
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

/// Pixels (row, col) of a map, strongest first.
pub fn top_pixels(map: &Array1<f64>, w: usize, count: usize) -> Vec<[usize; 2]> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]));
    order.iter().take(count).map(|&p| [p / w, p % w]).collect()
}

/// Compares a map (and a detected region, if any) with the planted triggers; `None` when there
/// are none (base, contrast).
pub fn check(
    map: &Array1<f64>,
    region: Option<[usize; 4]>,
    triggers: &Triggers,
    shape: (usize, usize, usize),
) -> Option<TriggerCheck> {
    let (_, h, w) = shape;
    let (mask, tops) = trigger_pixels(triggers, h, w);
    let k = mask.iter().filter(|&&m| m).count();
    if k == 0 {
        return None;
    }
    let top = top_pixels(map, w, k);
    let inside = top.iter().filter(|&&[r, c]| mask[r * w + c]).count();
    let squares_hit = tops
        .iter()
        .filter(|&&p| {
            top.iter()
                .any(|&[r, c]| (p..p + SQUARE).contains(&r) && (p..p + SQUARE).contains(&c))
        })
        .count();
    let region_overlaps = region.map(|[r0, c0, r1, c1]| {
        (r0..=r1).any(|r| (c0..=c1).any(|c| r < h && c < w && mask[r * w + c]))
    });
    Some(TriggerCheck {
        trigger_pixels: k,
        precision: inside as f64 / k as f64,
        chance: k as f64 / (h * w) as f64,
        squares_hit,
        squares: tops.len(),
        region_overlaps,
    })
}

/// The map as a heat image (H×W RGB in [0, 1]) on a fixed scale: white at z ≤ 0, deepening red
/// up to z = `top` (and beyond).
pub fn heat_image(map: &Array1<f64>, top: f64) -> Array1<f32> {
    let n = map.len();
    let mut out = Array1::<f32>::zeros(3 * n);
    for (p, &v) in map.iter().enumerate() {
        let t = (v / top.max(1e-9)).clamp(0.0, 1.0) as f32;
        let (r, g, b) = (1.0 - 0.3 * t, 1.0 - t, 1.0 - t);
        out[p] = r;
        out[n + p] = g;
        out[2 * n + p] = b;
    }
    out
}
