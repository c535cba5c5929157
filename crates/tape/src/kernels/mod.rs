//! The compute kernels under the tape: elementwise passes and matrix products.
//!
//! Nothing here knows about derivatives; the ops in [`crate::ops`] call these to compute values,
//! so the kernels can be replaced (threaded, fused, vectorised) without touching a rule.
//!
//! - [`map`], [`zip`], [`zip3`], [`update`]: elementwise work, split across rayon threads when
//!   an array holds at least [`PARALLEL_ELEMENTWISE`] values. Each element is computed alone,
//!   so results do not depend on the thread count.
//! - [`gemm`]: C = A·B by our packed GEMM (AVX-512 or AVX2 micro-kernels, chosen at run time)
//!   or matrixmultiply, with pre-packed constant operands ([`gemm::PackedB`]).

pub mod gemm;
mod micro;

use ndarray::{Array2, Zip};

pub use gemm::{Backend, Element, Isa, PackedB};

/// Elementwise passes over at least this many values are split across threads.
pub const PARALLEL_ELEMENTWISE: usize = 1 << 15;

/// f applied to every element.
pub fn map<T: Element>(a: &Array2<T>, f: impl Fn(T) -> T + Sync + Send) -> Array2<T> {
    if a.len() >= PARALLEL_ELEMENTWISE {
        Zip::from(a).par_map_collect(|&x| f(x))
    } else {
        a.mapv(f)
    }
}

/// f applied to every pair of elements of two equally shaped arrays.
///
/// # Panics
/// If the shapes differ.
pub fn zip<T: Element>(
    a: &Array2<T>,
    b: &Array2<T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Array2<T> {
    assert_eq!(
        a.dim(),
        b.dim(),
        "zip: shapes {:?} and {:?} differ",
        a.dim(),
        b.dim()
    );
    let zip = Zip::from(a).and(b);
    if a.len() >= PARALLEL_ELEMENTWISE {
        zip.par_map_collect(|&x, &y| f(x, y))
    } else {
        zip.map_collect(|&x, &y| f(x, y))
    }
}

/// f applied to every triple of elements of three equally shaped arrays.
///
/// # Panics
/// If the shapes differ.
pub fn zip3<T: Element>(
    a: &Array2<T>,
    b: &Array2<T>,
    c: &Array2<T>,
    f: impl Fn(T, T, T) -> T + Sync + Send,
) -> Array2<T> {
    assert!(
        a.dim() == b.dim() && b.dim() == c.dim(),
        "zip3: shapes {:?}, {:?} and {:?} differ",
        a.dim(),
        b.dim(),
        c.dim()
    );
    let zip = Zip::from(a).and(b).and(c);
    if a.len() >= PARALLEL_ELEMENTWISE {
        zip.par_map_collect(|&x, &y, &z| f(x, y, z))
    } else {
        zip.map_collect(|&x, &y, &z| f(x, y, z))
    }
}

/// In place: f(p, v, &g) for every element of p, v and g (an optimiser's update of a parameter
/// p and its state v from a gradient g).
///
/// # Panics
/// If the shapes differ.
pub fn update<T: Element>(
    p: &mut Array2<T>,
    v: &mut Array2<T>,
    g: &Array2<T>,
    f: impl Fn(&mut T, &mut T, T) + Sync + Send,
) {
    assert!(
        p.dim() == v.dim() && v.dim() == g.dim(),
        "update: shapes {:?}, {:?} and {:?} differ",
        p.dim(),
        v.dim(),
        g.dim()
    );
    let zip = Zip::from(p).and(v).and(g);
    if zip.size() >= PARALLEL_ELEMENTWISE {
        zip.par_for_each(|p, v, &g| f(p, v, g))
    } else {
        zip.for_each(|p, v, &g| f(p, v, g))
    }
}
