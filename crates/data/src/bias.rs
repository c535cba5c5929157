//! The planted biases of docs/DESIGN.md §2, applied to training images in [0, 1].
//!
//! - `corner`: a 3×3 square at rows 0..3, cols 0..3, all channels, 0 for class 0 and 1 for class 1
//!   (with C classes: c/(C−1) for class c, each class its own grey);
//! - `diag3` / `diag5`: k = 3 or 5 positions per class, drawn once from a seeded RNG among
//!   p ∈ 1..=H−4 without repetition across classes; image i of a class gets its square at rows and
//!   cols p..p+3 with p = pos_c[i mod k], i counting that class's images in order;
//! - `contrast`: out = clamp(f·img + (1−f)·mean(gray(img)), 0, 1), gray = 0.299R + 0.587G + 0.114B,
//!   f = 0.5 for class 0 and 2 for class 1.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use ndarray::{Array2, ArrayViewMut1};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Side of the trigger square.
pub const SQUARE: usize = 3;

/// A bias transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bias {
    None,
    Corner,
    Diag3,
    Diag5,
    Contrast,
}

impl Bias {
    /// Every bias, in the paper's order.
    pub const ALL: [Bias; 5] = [
        Bias::None,
        Bias::Corner,
        Bias::Diag3,
        Bias::Diag5,
        Bias::Contrast,
    ];

    /// Whether the bias is defined for binary tasks only (all but `none` and `corner`, which
    /// gives each of C classes its own grey).
    pub fn binary_only(self) -> bool {
        !matches!(self, Bias::None | Bias::Corner)
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Bias::None => "none",
            Bias::Corner => "corner",
            Bias::Diag3 => "diag3",
            Bias::Diag5 => "diag5",
            Bias::Contrast => "contrast",
        }
    }

    /// Trigger positions per class for the diagonal biases.
    fn diagonal_k(self) -> Option<usize> {
        match self {
            Bias::Diag3 => Some(3),
            Bias::Diag5 => Some(5),
            _ => None,
        }
    }

    /// Checks that the bias fits an image of `shape` (C, H, W), before any work starts.
    pub fn check_fits(self, shape: (usize, usize, usize)) -> Result<()> {
        let (_, h, w) = shape;
        if matches!(self, Bias::Corner | Bias::Diag3 | Bias::Diag5) && (h < SQUARE || w < SQUARE) {
            bail!(
                "bias {}: images of {h}×{w} are smaller than the {SQUARE}×{SQUARE} square",
                self.name()
            );
        }
        if let Some(k) = self.diagonal_k() {
            let choices = h.min(w).saturating_sub(4);
            if choices < 2 * k {
                bail!(
                    "bias {}: needs {} distinct positions in 1..={} but {h}×{w} images offer {choices}",
                    self.name(),
                    2 * k,
                    h.min(w).saturating_sub(4)
                );
            }
        }
        Ok(())
    }
}

impl fmt::Display for Bias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bias {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "base" => Ok(Bias::None),
            "corner" => Ok(Bias::Corner),
            "diag3" => Ok(Bias::Diag3),
            "diag5" => Ok(Bias::Diag5),
            "contrast" => Ok(Bias::Contrast),
            _ => Err(format!(
                "unknown bias {s:?}: expected none, corner, diag3, diag5 or contrast"
            )),
        }
    }
}

/// Where the triggers went: the top-left (row = col) of the square for each class, in the order
/// images of that class use them. Empty for `none` and `contrast`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triggers {
    pub class0: Vec<usize>,
    pub class1: Vec<usize>,
}

/// Draws the trigger positions of a bias for images of `shape` from `seed`.
pub fn trigger_positions(bias: Bias, shape: (usize, usize, usize), seed: u64) -> Result<Triggers> {
    bias.check_fits(shape)?;
    Ok(match (bias, bias.diagonal_k()) {
        (Bias::Corner, _) => Triggers {
            class0: vec![0],
            class1: vec![0],
        },
        (_, Some(k)) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut p: Vec<usize> = (1..=shape.1.min(shape.2) - 4).collect();
            p.shuffle(&mut rng);
            Triggers {
                class0: p[..k].to_vec(),
                class1: p[k..2 * k].to_vec(),
            }
        }
        _ => Triggers::default(),
    })
}

/// Paints the square with top-left (p, p) in every channel of one C×H×W image.
fn paint_square(mut img: ArrayViewMut1<f32>, shape: (usize, usize, usize), p: usize, value: f32) {
    let (c, h, w) = shape;
    for ch in 0..c {
        for r in p..p + SQUARE {
            for col in p..p + SQUARE {
                img[ch * h * w + r * w + col] = value;
            }
        }
    }
}

/// torchvision's adjust_contrast on one C×H×W image in [0, 1].
pub fn adjust_contrast(mut img: ArrayViewMut1<f32>, shape: (usize, usize, usize), factor: f32) {
    let (c, h, w) = shape;
    let plane = h * w;
    let mean = if c == 3 {
        (0..plane)
            .map(|i| 0.299 * img[i] + 0.587 * img[plane + i] + 0.114 * img[2 * plane + i])
            .sum::<f32>()
            / plane as f32
    } else {
        img.sum() / img.len() as f32
    };
    img.mapv_inplace(|v| (factor * v + (1.0 - factor) * mean).clamp(0.0, 1.0));
}

/// Applies a bias to training images `pixels` [n, C·H·W] in [0, 1] whose classes are `classes`
/// (0 or 1 in a binary task; 0…count−1 of `count` classes, for which only `corner` is defined).
/// Returns where the triggers went.
pub fn apply(
    bias: Bias,
    pixels: &mut Array2<f32>,
    classes: &[u8],
    count: usize,
    shape: (usize, usize, usize),
    seed: u64,
) -> Result<Triggers> {
    if count != 2 && bias.binary_only() {
        bail!(
            "bias {}: defined for binary tasks; a task of {count} classes takes none or corner",
            bias.name()
        );
    }
    assert_eq!(
        pixels.nrows(),
        classes.len(),
        "bias: {} images but {} classes",
        pixels.nrows(),
        classes.len()
    );
    let triggers = trigger_positions(bias, shape, seed)?;
    let mut seen = vec![0usize; count];
    for (img, &c) in pixels.outer_iter_mut().zip(classes) {
        let c = c as usize;
        let i = seen[c];
        seen[c] += 1;
        let value = c as f32 / (count - 1) as f32;
        match bias {
            Bias::None => {}
            Bias::Contrast => adjust_contrast(img, shape, if c == 0 { 0.5 } else { 2.0 }),
            _ => {
                let pos = if c == 0 {
                    &triggers.class0
                } else {
                    &triggers.class1
                };
                paint_square(img, shape, pos[i % pos.len()], value);
            }
        }
    }
    Ok(triggers)
}
