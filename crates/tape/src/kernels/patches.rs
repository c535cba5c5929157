//! The index work of convolutions and pooling over images stored one pixel per row, channels in
//! the columns: [n·H·W, C] (channels last, so a pixel's C values are contiguous).
//!
//! A window of a k×k kernel at output position (oy, ox) covers, in each of its k kernel rows ky,
//! the pixels (iy, ix0 … ix0 + k − 1) with iy = oy·s + ky − p and ix0 = ox·s − p: one contiguous
//! run of pixel rows, cut where it leaves the image (zero padding). [`runs`] lists those runs
//! once per image; the four kernels copy or add whole runs of `count·C` values, so the hot loops
//! are slice copies and adds with no per-element index arithmetic.

use ndarray::Array2;
use rayon::prelude::*;

use super::{Element, PARALLEL_ELEMENTWISE};
use crate::scalar::Scalar;

/// Where the windows of a convolution (or a pooling) sit over images of C channels, H×W pixels,
/// stored [n·H·W, C]: a k×k kernel moved with stride s over the image padded with p zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patches {
    /// C.
    pub channels: usize,
    /// H.
    pub height: usize,
    /// W.
    pub width: usize,
    /// k.
    pub kernel: usize,
    /// s.
    pub stride: usize,
    /// p.
    pub padding: usize,
}

impl Patches {
    /// OH = ⌊(H + 2p − k)/s⌋ + 1.
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// OW = ⌊(W + 2p − k)/s⌋ + 1.
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Pixels per image, H·W.
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Windows per image, OH·OW.
    pub fn windows(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Whether the kernel fits the padded image, with nonzero sizes and stride, and the padding
    /// smaller than the kernel (as PyTorch requires of pooling; a convolution with more padding
    /// only adds windows of zeros).
    pub fn is_valid(&self) -> bool {
        self.channels > 0
            && self.height > 0
            && self.width > 0
            && self.kernel > 0
            && self.stride > 0
            && self.kernel <= self.height + 2 * self.padding
            && self.kernel <= self.width + 2 * self.padding
    }

    /// The number of images n of an [n·H·W, C] matrix (`what` names the op in the panic).
    pub fn images_of(&self, shape: (usize, usize), what: &str) -> usize {
        assert!(self.is_valid(), "{what}: invalid geometry {self:?}");
        assert!(
            shape.1 == self.channels && shape.0.is_multiple_of(self.pixels()),
            "{what}: shape {shape:?} is not [n·{}·{}, {}]",
            self.height,
            self.width,
            self.channels
        );
        shape.0 / self.pixels()
    }

    /// The number of images n of an [n·OH·OW, cols] matrix of windows.
    pub fn images_of_windows(&self, shape: (usize, usize), cols: usize, what: &str) -> usize {
        assert!(self.is_valid(), "{what}: invalid geometry {self:?}");
        assert!(
            shape.1 == cols && shape.0.is_multiple_of(self.windows()),
            "{what}: shape {shape:?} is not [n·{}·{}, {cols}]",
            self.out_height(),
            self.out_width()
        );
        shape.0 / self.windows()
    }
}

/// One run of a window inside the image: window `window` (oy·OW + ox) reads `count` pixels
/// from pixel `pixel` (iy·W + ix) on; in the window's unfolded row they start at kernel
/// position `offset` (ky·k + kx).
#[derive(Clone, Copy, Debug)]
struct Run {
    window: usize,
    offset: usize,
    pixel: usize,
    count: usize,
}

/// Every run of every window of one image, in window order.
fn runs(g: &Patches) -> Vec<Run> {
    let (k, s, p) = (g.kernel as isize, g.stride as isize, g.padding as isize);
    let (h, w) = (g.height as isize, g.width as isize);
    let ow = g.out_width();
    let mut out = Vec::with_capacity(g.windows() * g.kernel);
    for oy in 0..g.out_height() {
        for ox in 0..ow {
            let ix0 = ox as isize * s - p;
            // The kernel columns that land inside the image: kx ∈ [lo, hi).
            let (lo, hi) = ((-ix0).max(0), (w - ix0).min(k));
            if lo >= hi {
                continue;
            }
            for ky in 0..k {
                let iy = oy as isize * s + ky - p;
                if iy < 0 || iy >= h {
                    continue;
                }
                out.push(Run {
                    window: oy * ow + ox,
                    offset: (ky * k + lo) as usize,
                    pixel: (iy * w + ix0 + lo) as usize,
                    count: (hi - lo) as usize,
                });
            }
        }
    }
    out
}

/// Runs `f(image, out_chunk, in_chunk)` for every image, on several threads when the output is
/// large: each image owns its chunk of the output.
fn per_image<T: Element>(
    images: usize,
    out: &mut [T],
    input: &[T],
    f: impl Fn(&mut [T], &[T]) + Sync,
) {
    if images == 0 {
        return;
    }
    let (o, i) = (out.len() / images, input.len() / images);
    if out.len() < PARALLEL_ELEMENTWISE {
        out.chunks_mut(o)
            .zip(input.chunks(i))
            .for_each(|(o, i)| f(o, i));
    } else {
        out.par_chunks_mut(o)
            .zip(input.par_chunks(i))
            .for_each(|(o, i)| f(o, i));
    }
}

/// dst += src, elementwise (equal lengths).
#[inline(always)]
fn add_to<T: Scalar>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = *d + s;
    }
}

/// A fresh [rows, cols] output filled by `body(out, input, run)` for every run of every one of
/// the `n` images of `a` (each image's chunk of the output and of the input; images on several
/// threads when the output is large): the frame the four kernels below share.
fn over_runs<T: Scalar>(
    a: &Array2<T>,
    g: &Patches,
    n: usize,
    (rows, cols): (usize, usize),
    body: impl Fn(&mut [T], &[T], &Run) + Sync,
) -> Array2<T> {
    let a = a.as_standard_layout();
    let mut out = Array2::zeros((rows, cols));
    let runs = runs(g);
    let dst = out.as_slice_mut().expect("fresh array");
    per_image(
        n,
        dst,
        a.as_slice().expect("standard layout"),
        |dst, src| runs.iter().for_each(|r| body(dst, src, r)),
    );
    out
}

/// im2col: [n·H·W, C] → [n·OH·OW, k·k·C], row (i, oy, ox) holding its window's pixels in
/// the order (ky, kx, c), zeros where the window hangs over the edge.
pub fn unfold<T: Scalar>(a: &Array2<T>, g: &Patches) -> Array2<T> {
    let n = g.images_of(a.dim(), "unfold");
    let (c, cols) = (g.channels, g.kernel * g.kernel * g.channels);
    over_runs(a, g, n, (n * g.windows(), cols), |dst, src, r| {
        let at = r.window * cols + r.offset * c;
        dst[at..at + r.count * c].copy_from_slice(&src[r.pixel * c..(r.pixel + r.count) * c]);
    })
}

/// col2im, the transpose of [`unfold`]: [n·OH·OW, k·k·C] → [n·H·W, C], each window's values
/// added back to the pixels they were read from (overlaps sum, padding drops out).
pub fn fold<T: Scalar>(a: &Array2<T>, g: &Patches) -> Array2<T> {
    let (c, cols) = (g.channels, g.kernel * g.kernel * g.channels);
    let n = g.images_of_windows(a.dim(), cols, "fold");
    over_runs(a, g, n, (n * g.pixels(), c), |dst, src, r| {
        let at = r.window * cols + r.offset * c;
        add_to(
            &mut dst[r.pixel * c..(r.pixel + r.count) * c],
            &src[at..at + r.count * c],
        );
    })
}

/// Average pooling: [n·H·W, C] → [n·OH·OW, C], each window's mean over its k·k positions
/// (padding counts as zeros, PyTorch's `count_include_pad`).
pub fn avg_pool<T: Scalar>(a: &Array2<T>, g: &Patches) -> Array2<T> {
    let n = g.images_of(a.dim(), "avg_pool");
    let c = g.channels;
    let mut out = over_runs(a, g, n, (n * g.windows(), c), |dst, src, r| {
        let row = &mut dst[r.window * c..(r.window + 1) * c];
        for px in src[r.pixel * c..(r.pixel + r.count) * c].chunks_exact(c) {
            add_to(row, px);
        }
    });
    out.mapv_inplace(|v| v / T::from_f64((g.kernel * g.kernel) as f64));
    out
}

/// The transpose of [`avg_pool`]: [n·OH·OW, C] → [n·H·W, C], each window's value spread over
/// its k·k positions divided by k² (the positions in the padding drop out).
pub fn avg_pool_t<T: Scalar>(a: &Array2<T>, g: &Patches) -> Array2<T> {
    let c = g.channels;
    let n = g.images_of_windows(a.dim(), c, "avg_pool_t");
    let mut out = over_runs(a, g, n, (n * g.pixels(), c), |dst, src, r| {
        let row = &src[r.window * c..(r.window + 1) * c];
        for px in dst[r.pixel * c..(r.pixel + r.count) * c].chunks_exact_mut(c) {
            add_to(px, row);
        }
    });
    out.mapv_inplace(|v| v / T::from_f64((g.kernel * g.kernel) as f64));
    out
}

/// Per row, a [C, S] block (channel-major, as PyTorch flattens an image) → an [S, C] block
/// (channels last): [r, C·S] → [r, S·C].
pub fn channels_last<T: Scalar>(a: &Array2<T>, channels: usize) -> Array2<T> {
    permute_rows(a, channels, "channels_last")
}

/// The inverse of [`channels_last`]: per row an [S, C] block → a [C, S] block.
pub fn channels_first<T: Scalar>(a: &Array2<T>, channels: usize) -> Array2<T> {
    let cols = a.ncols();
    assert!(
        channels > 0 && cols.is_multiple_of(channels),
        "channels_first: shape {:?} does not split into {channels} channels",
        a.dim()
    );
    permute_rows(a, cols / channels, "channels_first")
}

/// Per row, the [b, cols/b] block transposed.
fn permute_rows<T: Scalar>(a: &Array2<T>, b: usize, what: &str) -> Array2<T> {
    let (r, cols) = a.dim();
    assert!(
        b > 0 && cols.is_multiple_of(b),
        "{what}: shape {:?} does not split into blocks of {b} rows",
        a.dim()
    );
    let a = a.as_standard_layout();
    let blocks = a
        .view()
        .into_shape_with_order((r, b, cols / b))
        .expect("standard layout");
    let t = blocks
        .permuted_axes([0, 2, 1])
        .as_standard_layout()
        .into_owned();
    t.into_shape_with_order((r, cols)).expect("standard layout")
}
