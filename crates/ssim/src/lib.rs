#![warn(missing_docs)]
//! # reveal-ssim
//!
//! The structural similarity index (SSIM) and the NCC distance for images with values in [0, 1],
//! stored as `&[f32]` in C×H×W (channel-major) order.
//!
//! SSIM of images x and y, with Gaussian-weighted local means μ, variances σ² = E\[x²\] − μ² and
//! covariance σxy = E\[xy\] − μxμy:
//!
//! ```text
//! SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2) + ε)
//! ```
//!
//! averaged over channels and pixels. Two presets:
//! - [`Ssim::kornia3`]: the one of the papers (kornia): a 3×3 window, σ 1.5, C1 = 0.01²,
//!   C2 = 0.03², reflect padding without repeating the edge (`d c b | a b c d` → `b`), same size,
//!   ε = 1e-12 in the denominator;
//! - [`Ssim::gauss11`]: Wang et al. 2004 as scikit-image computes it with
//!   `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1`: an 11×11
//!   window (truncate 3.5), symmetric padding (`b a | a b c`), no ε, and a 5-pixel border cropped
//!   from the map before averaging.
//!
//! ```
//! use reveal_ssim::Ssim;
//! let a = vec![0.0f32; 8 * 8];
//! let s = Ssim::kornia3().mean(&a, &a, (1, 8, 8));
//! assert!((s - 0.99998889).abs() < 1e-8); // the ε of the kornia preset
//! ```

use rayon::prelude::*;

/// How the filter sees beyond the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Mirror without repeating the edge (PyTorch/kornia `reflect`, scipy `mirror`).
    Reflect,
    /// Mirror repeating the edge (scipy/scikit-image `reflect`, NumPy `symmetric`).
    Symmetric,
}

/// An SSIM configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Ssim {
    /// The normalised 1-D Gaussian; the window is its outer product (separable filtering).
    pub kernel: Vec<f64>,
    /// How the image is extended past its edges.
    pub padding: Padding,
    /// C1 = (0.01·data range)².
    pub c1: f64,
    /// C2 = (0.03·data range)².
    pub c2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Pixels dropped from each border of the map before averaging.
    pub crop: usize,
}

/// The normalised Gaussian exp(−x²/2σ²) over x = −r..=r for an odd `size` = 2r + 1.
pub fn gaussian_kernel(size: usize, sigma: f64) -> Vec<f64> {
    assert!(
        !size.is_multiple_of(2),
        "gaussian_kernel: size must be odd, got {size}"
    );
    let r = (size / 2) as f64;
    let k: Vec<f64> = (0..size)
        .map(|i| (-(i as f64 - r).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

impl Ssim {
    /// The papers' SSIM (kornia): 3×3 Gaussian, σ 1.5, reflect padding, ε 1e-12.
    pub fn kornia3() -> Self {
        Self::kornia(3, 1.5)
    }

    /// kornia's SSIM with another window size or σ.
    pub fn kornia(window: usize, sigma: f64) -> Self {
        Ssim {
            kernel: gaussian_kernel(window, sigma),
            padding: Padding::Reflect,
            c1: 0.01f64.powi(2),
            c2: 0.03f64.powi(2),
            eps: 1e-12,
            crop: 0,
        }
    }

    /// Wang et al. 2004 as scikit-image computes it: 11×11 Gaussian, σ 1.5.
    pub fn gauss11() -> Self {
        Self::skimage(1.5)
    }

    /// scikit-image's Gaussian-weighted SSIM for σ (window 2·⌊3.5σ + 0.5⌋ + 1).
    pub fn skimage(sigma: f64) -> Self {
        let r = (3.5 * sigma + 0.5) as usize;
        Ssim {
            kernel: gaussian_kernel(2 * r + 1, sigma),
            padding: Padding::Symmetric,
            c1: 0.01f64.powi(2),
            c2: 0.03f64.powi(2),
            eps: 0.0,
            crop: r,
        }
    }

    /// A preset by name: `kornia3` or `gauss11`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "kornia3" => Some(Self::kornia3()),
            "gauss11" => Some(Self::gauss11()),
            _ => None,
        }
    }

    /// The SSIM map, C×H×W, for two images of `shape` (C, H, W).
    pub fn map(&self, x: &[f32], y: &[f32], shape: (usize, usize, usize)) -> Vec<f64> {
        let (c, h, w) = shape;
        let n = c * h * w;
        assert_eq!(
            (x.len(), y.len()),
            (n, n),
            "ssim: images of {} and {} values for shape {shape:?}",
            x.len(),
            y.len()
        );
        let mut out = Vec::with_capacity(n);
        let plane = h * w;
        for ch in 0..c {
            let xs: Vec<f64> = x[ch * plane..(ch + 1) * plane]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let ys: Vec<f64> = y[ch * plane..(ch + 1) * plane]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let prod = |a: &[f64], b: &[f64]| -> Vec<f64> {
                a.iter().zip(b).map(|(p, q)| p * q).collect()
            };
            let f = |img: &[f64]| self.filter(img, h, w);
            let (mx, my) = (f(&xs), f(&ys));
            let (exx, eyy, exy) = (f(&prod(&xs, &xs)), f(&prod(&ys, &ys)), f(&prod(&xs, &ys)));
            for i in 0..plane {
                let (sx, sy, sxy) = (
                    exx[i] - mx[i] * mx[i],
                    eyy[i] - my[i] * my[i],
                    exy[i] - mx[i] * my[i],
                );
                let num = (2.0 * mx[i] * my[i] + self.c1) * (2.0 * sxy + self.c2);
                let den = (mx[i] * mx[i] + my[i] * my[i] + self.c1) * (sx + sy + self.c2);
                out.push(num / (den + self.eps));
            }
        }
        out
    }

    /// The mean of the SSIM map over channels and pixels (after the preset's crop).
    pub fn mean(&self, x: &[f32], y: &[f32], shape: (usize, usize, usize)) -> f64 {
        let (c, h, w) = shape;
        let map = self.map(x, y, shape);
        let k = self.crop;
        assert!(
            h > 2 * k && w > 2 * k,
            "ssim: a {h}×{w} image is too small for a crop of {k}"
        );
        let mut sum = 0.0;
        for ch in 0..c {
            for r in k..h - k {
                for col in k..w - k {
                    sum += map[ch * h * w + r * w + col];
                }
            }
        }
        sum / (c * (h - 2 * k) * (w - 2 * k)) as f64
    }

    /// Separable Gaussian filtering of one H×W plane, same size, with the preset's padding.
    fn filter(&self, img: &[f64], h: usize, w: usize) -> Vec<f64> {
        let r = self.kernel.len() / 2;
        let pass = |src: &[f64], along_rows: bool| -> Vec<f64> {
            let mut dst = vec![0.0; h * w];
            for i in 0..h {
                for j in 0..w {
                    let (pos, len) = if along_rows { (j, w) } else { (i, h) };
                    let mut acc = 0.0;
                    for (t, &k) in self.kernel.iter().enumerate() {
                        let q =
                            pad_index(pos as isize + t as isize - r as isize, len, self.padding);
                        acc += k * if along_rows {
                            src[i * w + q]
                        } else {
                            src[q * w + j]
                        };
                    }
                    dst[i * w + j] = acc;
                }
            }
            dst
        };
        pass(&pass(img, true), false)
    }
}

/// Maps an index outside 0..len back inside by mirroring at the borders.
pub fn pad_index(mut i: isize, len: usize, padding: Padding) -> usize {
    let n = len as isize;
    if n == 1 {
        return 0;
    }
    loop {
        if i < 0 {
            i = match padding {
                Padding::Reflect => -i,
                Padding::Symmetric => -i - 1,
            };
        } else if i >= n {
            i = match padding {
                Padding::Reflect => 2 * (n - 1) - i,
                Padding::Symmetric => 2 * n - 1 - i,
            };
        } else {
            return i as usize;
        }
    }
}

/// Each channel of an image standardised to zero mean and unit (N−1) standard deviation
/// (a constant channel becomes zeros).
pub fn standardise(x: &[f32], channels: usize) -> Vec<f64> {
    assert!(
        channels > 0 && x.len().is_multiple_of(channels),
        "standardise: {} values in {channels} channels",
        x.len()
    );
    let n = x.len() / channels;
    let mut out = Vec::with_capacity(x.len());
    for ch in x.chunks_exact(n) {
        let mean = ch.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var =
            ch.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        let sd = var.sqrt();
        out.extend(ch.iter().map(|&v| {
            if sd > 0.0 {
                (v as f64 - mean) / sd
            } else {
                0.0
            }
        }));
    }
    out
}

/// NCC distance: the squared Euclidean distance between the standardised images.
pub fn ncc_distance(x: &[f32], y: &[f32], channels: usize) -> f64 {
    assert_eq!(
        x.len(),
        y.len(),
        "ncc_distance: images of {} and {} values",
        x.len(),
        y.len()
    );
    let (a, b) = (standardise(x, channels), standardise(y, channels));
    a.iter().zip(&b).map(|(p, q)| (p - q).powi(2)).sum()
}

/// The Pearson correlation (mean over channels) that an NCC distance `dist` between images of
/// `len` values in `channels` channels implies: ρ = 1 − dist / (2·C·(N − 1)).
pub fn correlation_from_distance(dist: f64, len: usize, channels: usize) -> f64 {
    let n = len / channels;
    1.0 - dist / (2.0 * channels as f64 * (n.max(2) - 1) as f64)
}

/// All NCC distances between images `a[i]` and `b[j]`, as rows i of a Vec of length `b.len()`,
/// computed in parallel over i.
pub fn ncc_matrix(a: &[&[f32]], b: &[&[f32]], channels: usize) -> Vec<Vec<f64>> {
    let sb: Vec<Vec<f64>> = b.par_iter().map(|y| standardise(y, channels)).collect();
    a.par_iter()
        .map(|x| {
            let sx = standardise(x, channels);
            sb.iter()
                .map(|sy| sx.iter().zip(sy).map(|(p, q)| (p - q).powi(2)).sum())
                .collect()
        })
        .collect()
}

/// SSIM means of many image pairs, in parallel.
pub fn ssim_pairs(
    ssim: &Ssim,
    pairs: &[(&[f32], &[f32])],
    shape: (usize, usize, usize),
) -> Vec<f64> {
    pairs
        .par_iter()
        .map(|(x, y)| ssim.mean(x, y, shape))
        .collect()
}
