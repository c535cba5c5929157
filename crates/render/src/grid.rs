//! Image grids as PNG: rows of C×H×W images in [0, 1], upscaled so a person can see them.

use std::path::Path;

use anyhow::{anyhow, Result};
use image::{ImageBuffer, ImageFormat, Rgb};
use ndarray::ArrayView1;
use reveal_io::write_atomic;

/// Lays out `images` (each C×H×W in [0, 1], C = 1 or 3) in a grid of `cols` columns, each pixel
/// drawn as a `scale`×`scale` block, with a 1-block gap between images.
pub fn render(
    images: &[ArrayView1<f32>],
    shape: (usize, usize, usize),
    cols: usize,
    scale: usize,
) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    let (c, h, w) = shape;
    assert!(
        c == 1 || c == 3,
        "grid: images must have 1 or 3 channels, not {c}"
    );
    let cols = cols.max(1);
    let rows = images.len().div_ceil(cols).max(1);
    let (cell_h, cell_w) = ((h + 1) * scale, (w + 1) * scale);
    let mut out = ImageBuffer::from_pixel(
        (cols * cell_w) as u32,
        (rows * cell_h) as u32,
        Rgb([40, 40, 40]),
    );
    for (k, img) in images.iter().enumerate() {
        assert_eq!(
            img.len(),
            c * h * w,
            "grid: image {k} has {} values, shape {shape:?} needs {}",
            img.len(),
            c * h * w
        );
        let (oy, ox) = ((k / cols) * cell_h, (k % cols) * cell_w);
        for r in 0..h {
            for col in 0..w {
                let px = |ch: usize| {
                    (img[ch * h * w + r * w + col].clamp(0.0, 1.0) * 255.0).round() as u8
                };
                let rgb = if c == 3 {
                    [px(0), px(1), px(2)]
                } else {
                    [px(0); 3]
                };
                for dy in 0..scale {
                    for dx in 0..scale {
                        out.put_pixel(
                            (ox + col * scale + dx) as u32,
                            (oy + r * scale + dy) as u32,
                            Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    out
}

/// Renders a grid and writes it as a PNG, atomically.
pub fn write_png(
    path: &Path,
    images: &[ArrayView1<f32>],
    shape: (usize, usize, usize),
    cols: usize,
    scale: usize,
) -> Result<()> {
    let img = render(images, shape, cols, scale);
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| anyhow!("{}: cannot encode PNG: {e}", path.display()))?;
    write_atomic(path, &bytes.into_inner())
}

/// A scale that makes an image of side `side` about 64 pixels wide.
pub fn default_scale(side: usize) -> usize {
    (64 / side.max(1)).clamp(1, 8)
}

/// The best `count` pairs as a grid of `cols` columns: odd rows the reconstructions, even rows
/// their training images.
pub fn write_pairs_png(
    path: &Path,
    pairs: &[reveal_score::Pair],
    recon: &ndarray::Array2<f32>,
    train: &ndarray::Array2<f32>,
    shape: (usize, usize, usize),
    count: usize,
    cols: usize,
) -> Result<()> {
    let best = &pairs[..count.min(pairs.len())];
    let blank = ndarray::Array1::zeros(recon.ncols());
    let mut images = Vec::with_capacity(4 * best.len());
    for chunk in best.chunks(cols.max(1)) {
        let pad = cols.max(1) - chunk.len();
        images.extend(chunk.iter().map(|p| recon.row(p.candidate)));
        images.extend(std::iter::repeat_n(blank.view(), pad));
        images.extend(chunk.iter().map(|p| train.row(p.train)));
        images.extend(std::iter::repeat_n(blank.view(), pad));
    }
    write_png(path, &images, shape, cols, default_scale(shape.2))
}
