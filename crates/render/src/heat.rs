//! A map of one value per pixel as a heat image: white at 0, deepening red up to a fixed top.

use std::path::Path;

use anyhow::Result;
use ndarray::Array1;

use crate::grid;

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

/// Writes an h×w map as a heat-image PNG (atomically), each pixel drawn at least 8 blocks wide.
pub fn write_heat_png(
    path: &Path,
    map: &Array1<f64>,
    top: f64,
    (h, w): (usize, usize),
) -> Result<()> {
    assert_eq!(
        map.len(),
        h * w,
        "heat map: {} values for {h}×{w}",
        map.len()
    );
    grid::write_png(
        path,
        &[heat_image(map, top).view()],
        (3, h, w),
        1,
        grid::default_scale(w).max(8),
    )
}
