//! The triggers of a model zoo: a shortcut planted on one class's training images, of a kind an
//! auditor may meet, at a place and strength drawn from a seed (so the truth is known exactly).
//!
//! - `patch`: a k×k white square at (row, col), every channel;
//! - `line`: a white line one pixel wide across the image, a row or a column;
//! - `blend`: out = (1 − α)·img + α·pattern, one uniform random pattern in [0, 1] for all images;
//! - `contrast`: torchvision's adjust_contrast with a factor (see [`crate::bias::adjust_contrast`]);
//! - `tint`: a colour cast, out = clamp(img + s·rgb), colour images only.
//!
//! The trigger goes on a fraction of the images of one class (the first ⌈f·n_c⌉ of a seeded
//! shuffle of that class's images).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use ndarray::{Array1, Array2, ArrayViewMut1};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bias::adjust_contrast;

/// What the trigger looks like, with every parameter drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TriggerKind {
    Patch { size: usize, row: usize, col: usize },
    Line { vertical: bool, at: usize },
    Blend { alpha: f32, seed: u64 },
    Contrast { factor: f32 },
    Tint { rgb: [f32; 3] },
}

/// The kinds by name, before their parameters are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindName {
    Patch,
    Line,
    Blend,
    Contrast,
    Tint,
}

impl KindName {
    pub const ALL: [KindName; 5] = [
        KindName::Patch,
        KindName::Line,
        KindName::Blend,
        KindName::Contrast,
        KindName::Tint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KindName::Patch => "patch",
            KindName::Line => "line",
            KindName::Blend => "blend",
            KindName::Contrast => "contrast",
            KindName::Tint => "tint",
        }
    }

    /// Whether the trigger sits in a few pixels (the map's localised statistic should find it)
    /// rather than over the whole image.
    pub fn localised(self) -> bool {
        matches!(self, KindName::Patch | KindName::Line)
    }

    /// Draws the parameters of a trigger of this kind for images of `shape` (C, H, W): a patch of
    /// side 2–5 anywhere, a line anywhere, α in 0.1–0.2, a contrast factor 0.5 or 1.6, a tint of
    /// strength 0.1–0.2 towards a random primary colour.
    pub fn draw(self, shape: (usize, usize, usize), rng: &mut impl Rng) -> Result<TriggerKind> {
        let (c, h, w) = shape;
        Ok(match self {
            KindName::Patch => {
                let size = rng.gen_range(2..=5usize.min(h).min(w));
                TriggerKind::Patch {
                    size,
                    row: rng.gen_range(0..=h - size),
                    col: rng.gen_range(0..=w - size),
                }
            }
            KindName::Line => {
                let vertical = rng.gen_bool(0.5);
                let at = rng.gen_range(0..if vertical { w } else { h });
                TriggerKind::Line { vertical, at }
            }
            KindName::Blend => TriggerKind::Blend {
                alpha: rng.gen_range(0.1..=0.2),
                seed: rng.gen(),
            },
            KindName::Contrast => TriggerKind::Contrast {
                factor: if rng.gen_bool(0.5) { 0.5 } else { 1.6 },
            },
            KindName::Tint => {
                if c != 3 {
                    bail!("a tint needs colour images; these have {c} channel(s)");
                }
                let mut rgb = [0.0; 3];
                rgb[rng.gen_range(0..3)] = rng.gen_range(0.1..=0.2);
                TriggerKind::Tint { rgb }
            }
        })
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KindName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KindName::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown trigger {s:?}: expected patch, line, blend, contrast or tint")
            })
    }
}

impl TriggerKind {
    /// Its name.
    pub fn name(&self) -> KindName {
        match self {
            TriggerKind::Patch { .. } => KindName::Patch,
            TriggerKind::Line { .. } => KindName::Line,
            TriggerKind::Blend { .. } => KindName::Blend,
            TriggerKind::Contrast { .. } => KindName::Contrast,
            TriggerKind::Tint { .. } => KindName::Tint,
        }
    }

    /// The pixels (row·W + col) a localised trigger covers; empty for a global one.
    pub fn pixels(&self, (_, h, w): (usize, usize, usize)) -> Vec<usize> {
        match *self {
            TriggerKind::Patch { size, row, col } => (row..row + size)
                .flat_map(|r| (col..col + size).map(move |c| r * w + c))
                .collect(),
            TriggerKind::Line { vertical: true, at } => (0..h).map(|r| r * w + at).collect(),
            TriggerKind::Line {
                vertical: false,
                at,
            } => (0..w).map(|c| at * w + c).collect(),
            _ => Vec::new(),
        }
    }

    /// Applies the trigger to one C×H×W image in [0, 1].
    pub fn apply(
        &self,
        mut img: ArrayViewMut1<f32>,
        shape: (usize, usize, usize),
        pattern: Option<&Array1<f32>>,
    ) {
        let (c, h, w) = shape;
        match *self {
            TriggerKind::Patch { .. } | TriggerKind::Line { .. } => {
                for p in self.pixels(shape) {
                    for ch in 0..c {
                        img[ch * h * w + p] = 1.0;
                    }
                }
            }
            TriggerKind::Blend { alpha, .. } => {
                let pattern = pattern.expect("a blend has its pattern");
                img.zip_mut_with(pattern, |v, &p| *v = (1.0 - alpha) * *v + alpha * p);
            }
            TriggerKind::Contrast { factor } => adjust_contrast(img, shape, factor),
            TriggerKind::Tint { rgb } => {
                for (ch, add) in rgb.iter().enumerate().take(c) {
                    img.slice_mut(ndarray::s![ch * h * w..(ch + 1) * h * w])
                        .mapv_inplace(|v| (v + add).clamp(0.0, 1.0));
                }
            }
        }
    }

    /// A blend's pattern (uniform in [0, 1], from its seed), for images of `d` values.
    pub fn pattern(&self, d: usize) -> Option<Array1<f32>> {
        match *self {
            TriggerKind::Blend { seed, .. } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                Some(Array1::from_shape_simple_fn(d, || rng.gen::<f32>()))
            }
            _ => None,
        }
    }
}

/// A trigger planted on a fraction of one class's training images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub kind: TriggerKind,
    /// The task class whose images carry it.
    pub class: usize,
    /// The share of that class's images that carry it, in (0, 1].
    pub fraction: f64,
    /// Seed of which images carry it.
    pub seed: u64,
}

impl Trigger {
    /// Applies the trigger to training images `pixels` [n, C·H·W] of task classes `classes`;
    /// returns which images carry it.
    pub fn apply(
        &self,
        pixels: &mut Array2<f32>,
        classes: &[u8],
        shape: (usize, usize, usize),
    ) -> Result<Vec<usize>> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            bail!("trigger fraction {}: must be in (0, 1]", self.fraction);
        }
        let (c, h, w) = shape;
        if let TriggerKind::Patch { size, row, col } = self.kind {
            if row + size > h || col + size > w {
                bail!("trigger patch {size}×{size} at ({row}, {col}) does not fit {h}×{w} images");
            }
        }
        if matches!(self.kind, TriggerKind::Tint { .. }) && c != 3 {
            bail!("a tint needs colour images; these have {c} channel(s)");
        }
        let mut members: Vec<usize> = (0..classes.len())
            .filter(|&i| classes[i] as usize == self.class)
            .collect();
        if members.is_empty() {
            bail!(
                "trigger on class {}: the training set has no image of it",
                self.class
            );
        }
        members.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
        members.truncate(((self.fraction * members.len() as f64).ceil() as usize).max(1));
        members.sort();
        let pattern = self.kind.pattern(c * h * w);
        for &i in &members {
            self.kind.apply(pixels.row_mut(i), shape, pattern.as_ref());
        }
        Ok(members)
    }
}
