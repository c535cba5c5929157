//! The bias map: where the reconstructions' classes differ in a way clean images of the same
//! task do not, and whether that difference sits in one compact spot.
//!
//! A classifier's decision lives in the difference between its classes. For images with labels
//! ±1 let D(c, p) = mean_{y=+1} x(c, p) − mean_{y=−1} x(c, p), per channel c and pixel p. The
//! reconstructions give D_rec, each candidate weighted by its multiplier λ_i (the model's weights
//! are θ = (1/m) Σ λ_i ∇θ m_i(x_i): a candidate with λ_i ≈ 0 is no part of them and its pixels
//! are unconstrained noise; on the quick experiments the weighting raised the diagonal triggers'
//! precision on CIFAR-10 from 0.21–0.49 to 0.55–0.85). Clean held-out images of the task,
//! which carry no planted trigger, give D_clean, the class difference the concept itself
//! explains. They are `Prepared::reference`: from the training file, after the training set, so
//! from the training data's own distribution (MNIST's test file, written by other people, left
//! spots where the training file's digits differ and held the diagonal triggers' precision on
//! MNIST at 0.44–0.58 instead of 0.49–0.59). Reconstructions
//! render that concept blurred, so the concept is D_clean at three sharpnesses: D_clean itself
//! and D_clean smoothed by Gaussians of σ = 1 and 2 pixels (per channel). Their residual
//!
//! ```text
//! R = D_rec − P·D_rec,   P the least-squares projection onto span{D_clean, G₁∗D_clean, G₂∗D_clean}
//! ```
//!
//! is what the reconstructions separate beyond the concept. Per pixel, with |·| the length over
//! channels, the residual is weighed against how much a class difference of real images varies
//! there by chance: s(p) = √(Σ_c var₊(c, p)/n₊ + var₋(c, p)/n₋) from the clean images, floored
//! at its median so that pixels where every image is blank do not divide by zero;
//! r(p) = |R(p)| / max(s(p), median s). A difference where the images hardly vary (the border
//! of an MNIST digit, the sky above a CIFAR-10 object) counts for more than one where they vary
//! a lot. Then r is standardised robustly over the image, z(p) = (r(p) − median r) /
//! (1.4826·MAD r), and the z image is *opened* by two-pixel segments (the morphological opening
//! by a 1×2 and by a 2×1 segment, the larger of the two: each pixel keeps the largest, over the
//! segments that contain it, of the segment's smaller z): a pixel stays high only as part of a
//! raised run at least two pixels long, in a row or a column. A planted square and a line one
//! pixel wide keep their values; a lone pixel (one image's rare stroke, a speck of a
//! reconstruction) falls to its neighbours' level. That is the map. (The first maps were opened
//! by a 2×2 square, which also erased lines one pixel wide.)
//!
//! (Dividing by the *training* set's class difference, as the first map did, cancels exactly a
//! trigger the training set carries; the clean reference does not carry it. Dividing by |D_clean|
//! instead of s, as the second did, found the corner trigger but missed squares inside the
//! objects: a diagonal trigger's top pixels 0.13 of the time on CIFAR-10.)
//!
//! A shortcut shows as a compact spot or a thin line of large z. The hotspot search scores every
//! window of the shapes in [`windows`] (squares k×k, k = 2…6, and bars one pixel wide) as
//! Σ z / √area (so that windows of every size are on one scale under noise: a sum of `area`
//! unit-variance values has standard deviation √area), and keeps the best. Whether that is a spot or noise is calibrated,
//! not tuned: the same score computed for maps that carry no shortcut —
//! - class-difference maps of random subsets of the clean images, as many per class as the
//!   training set has (what reconstructions of a concept-learning model would give if they were
//!   its real training images: m = 2n candidates approximate n images), and
//! - the null models' reconstructions (random models with the audited model's layer norms) —
//!
//! and the threshold is the largest of them.
//!
//! Check against planted triggers: the K pixels with the largest z, K being the trigger area,
//! and the fraction of them inside a trigger square (precision; chance = area / H·W).
//!
//! A shortcut spread over the image (a blend, a contrast or colour change) is no spot; it shows
//! as a residual R that every candidate of a class shares: [`consistency`] (ρ_half), calibrated
//! by [`clean_null_scores`] (docs/DESIGN.md §8).

use ndarray::{Array1, Array2};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reveal_data::bias::SQUARE;
use reveal_data::Triggers;
use serde::{Deserialize, Serialize};

use crate::stats::median;

/// Square sides of the hotspot search.
pub const SQUARES: std::ops::RangeInclusive<usize> = 2..=6;

/// Lengths of the one-pixel-wide bars of the hotspot search (and the image's side).
pub const BARS: [usize; 3] = [4, 8, 14];

/// The window shapes (rows, cols) of the hotspot search on an h×w map: the squares of
/// [`SQUARES`], and bars 1×k and k×1 for k in [`BARS`] and the full side.
pub fn windows(h: usize, w: usize) -> Vec<(usize, usize)> {
    let mut shapes: Vec<(usize, usize)> = SQUARES.map(|k| (k, k)).collect();
    for k in BARS.into_iter().chain([h.min(w)]) {
        shapes.push((1, k));
        shapes.push((k, 1));
    }
    shapes.sort();
    shapes.dedup();
    shapes.retain(|&(a, b)| a <= h && b <= w);
    shapes
}

/// The clean images' side of the map: an orthonormal basis of the concept's class difference
/// at three sharpnesses, and the per-pixel scale s(p) (already floored at its median).
pub struct Reference {
    basis: Vec<Array1<f64>>,
    scale: Array1<f64>,
    shape: (usize, usize, usize),
}

/// Widths (pixels) of the Gaussians the concept is also rendered at.
pub const BLURS: [f64; 2] = [1.0, 2.0];

impl Reference {
    /// From clean images (rows of C·H·W values) and their labels ±1.
    pub fn new(clean: &Array2<f32>, labels: &[f32], shape: (usize, usize, usize)) -> Reference {
        let (c, h, w) = shape;
        assert_eq!(
            clean.ncols(),
            c * h * w,
            "bias map: images of {} values for shape {shape:?}",
            clean.ncols()
        );
        // D_clean, and the variance of its estimate: var₊/n₊ + var₋/n₋ per value.
        let Moments {
            mean: [m0, m1],
            square: [q0, q1],
            weight: n,
        } = class_moments(clean, labels, &vec![1.0; labels.len()]);
        let spread = |m: Array1<f64>, q: Array1<f64>, n: f64| {
            (q - &m * &m).mapv(|v| v.max(0.0)) / n.max(1.0)
        };
        let d_clean = &m1 - &m0;
        let var = spread(m0, q0, n[0]) + spread(m1, q1, n[1]);
        let mut basis: Vec<Array1<f64>> = Vec::new();
        let sharpnesses =
            std::iter::once(d_clean.clone()).chain(BLURS.iter().map(|&s| blur(&d_clean, shape, s)));
        for mut v in sharpnesses {
            // Gram–Schmidt: the basis stays orthonormal, so P·d = Σ ⟨d, b⟩ b.
            for b in &basis {
                let along = v.dot(b);
                v.scaled_add(-along, b);
            }
            let norm = v.dot(&v).sqrt();
            if norm > 1e-9 * d_clean.dot(&d_clean).sqrt().max(f64::MIN_POSITIVE) {
                basis.push(v / norm);
            }
        }
        let s = channel_sum(&var, shape).mapv(f64::sqrt);
        let floor = median(s.to_vec()).max(f64::MIN_POSITIVE);
        Reference {
            basis,
            scale: s.mapv(|v| v.max(floor)),
            shape,
        }
    }

    /// r(p) = |R(p)| / s(p) (H·W values) of a class difference D_rec (C·H·W values).
    pub fn residual(&self, d_rec: &Array1<f64>) -> Array1<f64> {
        self.relative(&self.beyond(d_rec))
    }

    /// R = D_rec − P·D_rec (C·H·W values, signed): the class difference beyond the concept.
    pub fn beyond(&self, d_rec: &Array1<f64>) -> Array1<f64> {
        let mut residual = d_rec.clone();
        for b in &self.basis {
            residual.scaled_add(-d_rec.dot(b), b);
        }
        residual
    }

    /// s(p) per value (C·H·W): the per-pixel scale repeated over the channels.
    fn scale_per_value(&self) -> Array1<f64> {
        let c = self.shape.0;
        let p = self.scale.len();
        Array1::from_shape_fn(c * p, |i| self.scale[i % p])
    }

    /// |v(p)| / s(p) (H·W values; the length over channels) of a C·H·W row.
    pub fn relative(&self, v: &Array1<f64>) -> Array1<f64> {
        assert_eq!(
            v.len(),
            self.scale.len() * self.shape.0,
            "bias map: {} values for shape {:?}",
            v.len(),
            self.shape
        );
        &channel_sum(&v.mapv(|v| v * v), self.shape).mapv(f64::sqrt) / &self.scale
    }

    /// The map z(p) (H·W values) of a class difference D_rec: the residual standardised and
    /// opened.
    pub fn map(&self, d_rec: &Array1<f64>) -> Array1<f64> {
        let (_, h, w) = self.shape;
        open_segments(&robust_z(&self.residual(d_rec)), h, w)
    }
}

/// Σ over channels of a C·H·W row: H·W values.
fn channel_sum(v: &Array1<f64>, (c, h, w): (usize, usize, usize)) -> Array1<f64> {
    Array1::from_shape_fn(h * w, |p| (0..c).map(|ch| v[ch * h * w + p]).sum())
}

/// Per class (index 0 for −1, 1 for +1): the weighted mean and mean square of every value, and
/// the total weight.
struct Moments {
    mean: [Array1<f64>; 2],
    square: [Array1<f64>; 2],
    weight: [f64; 2],
}

fn class_moments(x: &Array2<f32>, y: &[f32], w: &[f64]) -> Moments {
    assert!(
        x.nrows() == y.len() && y.len() == w.len(),
        "bias map: {} images but {} labels and {} weights",
        x.nrows(),
        y.len(),
        w.len()
    );
    let d = x.ncols();
    let mut sums = [Array1::<f64>::zeros(d), Array1::zeros(d)];
    let mut squares = [Array1::<f64>::zeros(d), Array1::zeros(d)];
    let mut total = [0.0f64; 2];
    for ((row, &l), &wi) in x.rows().into_iter().zip(y).zip(w) {
        let k = usize::from(l > 0.0);
        sums[k].zip_mut_with(&row, |a, &b| *a += wi * b as f64);
        squares[k].zip_mut_with(&row, |a, &b| *a += wi * (b as f64).powi(2));
        total[k] += wi;
    }
    let t = total.map(|t| t.max(f64::MIN_POSITIVE));
    let [s0, s1] = sums;
    let [q0, q1] = squares;
    Moments {
        mean: [s0 / t[0], s1 / t[1]],
        square: [q0 / t[0], q1 / t[1]],
        weight: total,
    }
}

/// D(c, p) = Σ_{y=+1} w x / Σ_{y=+1} w − Σ_{y=−1} w x / Σ_{y=−1} w, as a row of C·H·W values.
pub fn class_difference(x: &Array2<f32>, y: &[f32], w: &[f64]) -> Array1<f64> {
    let [m0, m1] = class_moments(x, y, w).mean;
    m1 - m0
}

/// Each channel of a C·H·W row smoothed by a Gaussian of width `sigma` pixels (separable,
/// cut at 4σ, edges mirrored).
pub fn blur(v: &Array1<f64>, (c, h, w): (usize, usize, usize), sigma: f64) -> Array1<f64> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let taps: Vec<f64> = (-radius..=radius)
        .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp())
        .collect();
    let total: f64 = taps.iter().sum();
    // Index i mirrored into 0..n (… 1 0 | 0 1 … n−1 | n−1 n−2 …).
    let mirror = |i: isize, n: usize| {
        let period = 2 * n as isize;
        let j = i.rem_euclid(period);
        (if j < n as isize { j } else { period - 1 - j }) as usize
    };
    let mut out = v.clone();
    for ch in 0..c {
        let plane = ch * h * w;
        let mut rows = vec![0.0; h * w];
        for r in 0..h {
            for col in 0..w {
                rows[r * w + col] = taps
                    .iter()
                    .enumerate()
                    .map(|(t, k)| {
                        k * v[plane + r * w + mirror(col as isize + t as isize - radius, w)]
                    })
                    .sum::<f64>()
                    / total;
            }
        }
        for r in 0..h {
            for col in 0..w {
                out[plane + r * w + col] = taps
                    .iter()
                    .enumerate()
                    .map(|(t, k)| k * rows[mirror(r as isize + t as isize - radius, h) * w + col])
                    .sum::<f64>()
                    / total;
            }
        }
    }
    out
}

/// The morphological opening of an h×w image by an a×b rectangle: the erosion e(q) = min of the
/// a×b window at q, then the dilation out(p) = max of e over the windows that contain p.
pub fn opening(z: &Array1<f64>, h: usize, w: usize, (a, b): (usize, usize)) -> Array1<f64> {
    assert_eq!(z.len(), h * w, "opening: {} values for {h}×{w}", z.len());
    if a > h || b > w || a * b < 2 {
        return z.clone();
    }
    let (eh, ew) = (h - a + 1, w - b + 1);
    let window =
        |r: usize, c: usize| (0..a).flat_map(move |i| (0..b).map(move |j| (r + i) * w + c + j));
    let eroded: Vec<f64> = (0..eh * ew)
        .map(|q| {
            window(q / ew, q % ew)
                .map(|p| z[p])
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let mut out = Array1::from_elem(h * w, f64::NEG_INFINITY);
    for (q, &e) in eroded.iter().enumerate() {
        for p in window(q / ew, q % ew) {
            out[p] = out[p].max(e);
        }
    }
    out
}

/// The larger of the openings by a 1×2 and a 2×1 segment: what stays raised is part of a run of
/// at least two pixels in a row or a column (a square, a line), not a lone pixel.
pub fn open_segments(z: &Array1<f64>, h: usize, w: usize) -> Array1<f64> {
    let across = opening(z, h, w, (1, 2));
    let down = opening(z, h, w, (2, 1));
    Array1::from_shape_fn(h * w, |p| across[p].max(down[p]))
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
    /// Σ z over the window / √(its area).
    pub score: f64,
}

/// The best window of a map over the shapes of [`windows`].
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
    let sum = |r0: usize, c0: usize, a: usize, b: usize| {
        let at = |r: usize, c: usize| sat[r * (w + 1) + c];
        at(r0 + a, c0 + b) - at(r0, c0 + b) - at(r0 + a, c0) + at(r0, c0)
    };
    let mut best = Hotspot {
        region: [0, 0, 0, 0],
        score: f64::NEG_INFINITY,
    };
    for (a, b) in windows(h, w) {
        let norm = ((a * b) as f64).sqrt();
        for r0 in 0..=h - a {
            for c0 in 0..=w - b {
                let score = sum(r0, c0, a, b) / norm;
                if score > best.score {
                    best = Hotspot {
                        region: [r0, c0, r0 + a - 1, c0 + b - 1],
                        score,
                    };
                }
            }
        }
    }
    best
}

/// Random class-balanced subsets of the clean images: `draws` lists of `per_class` indices per
/// class (labels ±1), the same draws for every statistic calibrated on them.
pub fn clean_draws(labels: &[f32], per_class: usize, draws: usize, seed: u64) -> Vec<Vec<usize>> {
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
            neg.iter()
                .take(per_class)
                .chain(pos.iter().take(per_class))
                .copied()
                .collect()
        })
        .collect()
}

/// What the clean subsets of [`clean_null_scores`] give.
pub struct CleanScores {
    /// The hotspot score of each subset's class-difference map.
    pub hotspot: Vec<f64>,
    /// ρ_half of a reconstruction of each subset with the candidates' own make-up.
    pub consistency: Vec<f64>,
    /// ρ_half of each subset with every image taken equally often, `copies` times.
    pub consistency_even: Vec<f64>,
}

/// What maps with no shortcut in them give, from the clean images alone: for each of
/// [`clean_draws`] (the training set's size: what reconstructions of a concept-learning model
/// would give if they were the real training images), the hotspot score of its class-difference
/// map, and the [`consistency`] of two reconstructions of it that carry no shortcut: one with
/// the candidates' own make-up — each candidate slot (its label and weight, `slots`) filled with
/// an image of its class drawn from the subset at random, with replacement, as a reconstruction
/// gives some training images back several times, with unequal λ, and others not at all — and
/// one with every image taken `copies` times at equal weight. The copies of one image fall into
/// both halves, which raises ρ_half. Each against the reference of all of them.
pub fn clean_null_scores(
    clean: &Array2<f32>,
    labels: &[f32],
    reference: &Reference,
    (per_class, copies): (usize, usize),
    slots: (&[f32], &[f64]),
    draws: usize,
    seed: u64,
) -> CleanScores {
    let (_, h, w) = reference.shape;
    let (slot_y, slot_w) = slots;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5107);
    clean_draws(labels, per_class, draws, seed)
        .iter()
        .enumerate()
        .map(|(k, take)| {
            let x = clean.select(ndarray::Axis(0), take);
            let y: Vec<f32> = take.iter().map(|&i| labels[i]).collect();
            let ones = vec![1.0; y.len()];
            let d = class_difference(&x, &y, &ones);
            let hot = hotspot(&reference.map(&d), h, w).score;
            let of_class = |positive: bool| -> Vec<usize> {
                take.iter()
                    .copied()
                    .filter(|&i| (labels[i] > 0.0) == positive)
                    .collect()
            };
            let pools = [of_class(false), of_class(true)];
            let filled: Vec<usize> = slot_y
                .iter()
                .map(|&l| {
                    *pools[usize::from(l > 0.0)]
                        .choose(&mut rng)
                        .expect("a class of the draw")
                })
                .collect();
            let rho_of = |rows: &[usize], weights: &[f64]| {
                let x = clean.select(ndarray::Axis(0), rows);
                let y: Vec<f32> = rows.iter().map(|&i| labels[i]).collect();
                consistency(reference, &x, &y, weights, seed + k as u64)
            };
            let even: Vec<usize> = take
                .iter()
                .flat_map(|&i| [i].repeat(copies.max(1)))
                .collect();
            (
                hot,
                rho_of(&filled, slot_w),
                rho_of(&even, &vec![1.0; even.len()]),
            )
        })
        .fold(
            CleanScores {
                hotspot: Vec::new(),
                consistency: Vec::new(),
                consistency_even: Vec::new(),
            },
            |mut s, (hot, rho, even)| {
                s.hotspot.push(hot);
                s.consistency.push(rho);
                s.consistency_even.push(even);
                s
            },
        )
}

/// Random halvings of the candidates behind one [`consistency`].
pub const SPLITS: usize = 20;

/// ρ_half, how consistently a set of images (labels ±1, weights w) departs from the concept:
/// split each class at random into halves A and B, take each half's class difference beyond
/// the concept per value over s, R_A = (D_A − P·D_A)/s and R_B likewise, and correlate them,
/// ρ = ⟨R_A, R_B⟩ / (‖R_A‖ ‖R_B‖); averaged over [`SPLITS`] halvings through Fisher's z
/// (tanh of the mean atanh). A pattern every image of a class carries (a blended pattern, a
/// contrast or colour change) comes back in both halves; the images' own variation and the
/// reconstructions' independent noise do not: the statistic of the global verdict
/// ([`crate::verdict::Consistency`], docs/DESIGN.md §8).
pub fn consistency(reference: &Reference, x: &Array2<f32>, y: &[f32], w: &[f64], seed: u64) -> f64 {
    assert!(
        x.nrows() == y.len() && y.len() == w.len(),
        "consistency: {} images but {} labels and {} weights",
        x.nrows(),
        y.len(),
        w.len()
    );
    let s = reference.scale_per_value();
    let mut classes: [Vec<usize>; 2] =
        [false, true].map(|positive| (0..y.len()).filter(|&i| (y[i] > 0.0) == positive).collect());
    if classes.iter().any(|c| c.len() < 2) {
        return 0.0;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let half = |classes: &[Vec<usize>; 2], k: usize| -> Array1<f64> {
        let take: Vec<usize> = classes
            .iter()
            .flat_map(|c| c.iter().skip(k).step_by(2))
            .copied()
            .collect();
        let ys: Vec<f32> = take.iter().map(|&i| y[i]).collect();
        let ws: Vec<f64> = take.iter().map(|&i| w[i]).collect();
        let d = class_difference(&x.select(ndarray::Axis(0), &take), &ys, &ws);
        reference.beyond(&d) / &s
    };
    let mut z = 0.0;
    for _ in 0..SPLITS {
        for c in classes.iter_mut() {
            c.shuffle(&mut rng);
        }
        let (a, b) = (half(&classes, 0), half(&classes, 1));
        let rho = a.dot(&b) / (a.dot(&a) * b.dot(&b)).sqrt().max(f64::MIN_POSITIVE);
        z += rho.clamp(-1.0 + 1e-12, 1.0 - 1e-12).atanh();
    }
    (z / SPLITS as f64).tanh()
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
