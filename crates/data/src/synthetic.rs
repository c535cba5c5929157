//! The built-in synthetic data set: small grey images of rings (class 0) and plus-shaped crosses
//! (class 1) at random positions and sizes, with random brightness and pixel noise. The class
//! really is the shape, so a model can learn the concept, and the planted biases apply as to
//! any other grey images.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::images::Images;

/// Default side of the synthetic images.
pub const DEFAULT_SIZE: usize = 16;

/// `n` images of side `size`, classes alternating ring, cross, ring, …, from `seed`.
pub fn generate(n: usize, size: usize, seed: u64) -> Images {
    assert!(
        size >= 8,
        "synthetic images need a side of at least 8, got {size}"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0f32, 0.04).expect("valid σ");
    let s = size as f32;
    let mut pixels = Vec::with_capacity(n * size * size);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 2) as u8;
        let radius = rng.gen_range(0.22 * s..0.36 * s);
        let (cy, cx) = (
            rng.gen_range(radius + 1.0..s - radius - 1.0),
            rng.gen_range(radius + 1.0..s - radius - 1.0),
        );
        let half_width = rng.gen_range(0.6f32..1.1);
        let brightness = rng.gen_range(0.65f32..1.0);
        for r in 0..size {
            for c in 0..size {
                let (dy, dx) = (r as f32 + 0.5 - cy, c as f32 + 0.5 - cx);
                // Distance from the stroke: the circle of `radius`, or the two bars of the cross.
                let off = if class == 0 {
                    ((dy * dy + dx * dx).sqrt() - radius).abs()
                } else {
                    let bar_v = dx.abs().max((dy.abs() - radius).max(0.0));
                    let bar_h = dy.abs().max((dx.abs() - radius).max(0.0));
                    bar_v.min(bar_h)
                };
                let ink = (1.0 - (off - half_width).max(0.0)).clamp(0.0, 1.0) * brightness;
                let v = (ink + noise.sample(&mut rng)).clamp(0.0, 1.0);
                pixels.push((v * 255.0).round() as u8);
            }
        }
        labels.push(class);
    }
    Images {
        shape: (1, size, size),
        pixels,
        labels,
        class_names: vec!["ring".into(), "cross".into()],
    }
}
