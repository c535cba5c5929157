//! The compute kernels under the tape: elementwise passes and matrix products.
//!
//! Nothing here knows about derivatives; the ops (`ops.rs`) call these to compute values,
//! so the kernels can be replaced (threaded, fused, vectorised) without touching a rule.
//!
//! - [`map`], [`zip`], [`update`]: elementwise work, split across rayon threads when
//!   an array holds at least [`PARALLEL_ELEMENTWISE`] values. Each element is computed alone,
//!   so results do not depend on the thread count.
//! - [`gemm`]: C = A·B by our packed GEMM (AVX-512 or AVX2 micro-kernels, chosen at run time)
//!   or matrixmultiply, with pre-packed constant operands ([`gemm::PackedB`]).
//! - [`count`]: the work done, counted (product FLOPs, recorded bytes) for the benchmark.

pub mod count;
pub mod gemm;
mod micro;
pub mod patches;

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::OnceLock;

use ndarray::{Array2, Zip};
use rayon::prelude::*;

pub use gemm::{Backend, Element, Isa, PackedB};

/// Flush-to-zero and denormals-are-zero on the current thread while the guard lives; the
/// previous mode comes back on drop. A no-op off x86-64.
///
/// Results below f32's smallest normal number (1.2·10⁻³⁸) are flushed to 0 and such inputs read
/// as 0. A reconstruction makes many: σ(αz) of a strongly negative pre-activation is ≈ 10⁻³⁸,
/// times λ/m and a weight. The CPU computes with denormals on a slow path (microcode assists),
/// and on an Intel Xeon with AVX-512 that made a 10-class MNIST reconstruction step 4.5× slower
/// and a binary one 1.4× (the GEMM micro-kernel was 89 % of the time). Numbers that small
/// change no figure we report. TensorFlow runs its kernels under the same flags
/// (`port::ScopedFlushDenormal`); PyTorch offers them as `torch.set_flush_denormal(True)`.
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

/// MXCSR bits: flush-to-zero (15) and denormals-are-zero (6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl FlushDenormals {
    /// Sets the flags on this thread until the guard is dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = mxcsr::get();
            mxcsr::set(saved | FTZ_DAZ);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        mxcsr::set(self.saved);
    }
}

/// Reading and writing the SSE control register of the current thread.
#[cfg(target_arch = "x86_64")]
mod mxcsr {
    pub fn get() -> u32 {
        let mut v: u32 = 0;
        // SAFETY: stmxcsr stores the 32-bit register to the given address, a valid u32.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags))
        };
        v
    }

    pub fn set(v: u32) {
        // SAFETY: ldmxcsr loads a value read from the register with at most the FTZ and DAZ
        // bits set, both of which every x86-64 CPU supports (no reserved bit is touched).
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly, preserves_flags))
        };
    }
}

/// Elementwise passes over at least this many values are split across threads.
pub const PARALLEL_ELEMENTWISE: usize = 1 << 15;

/// One elementwise pass over index ranges of its arrays.
trait Pass: Sync {
    /// Does the elements in `range`.
    ///
    /// # Safety
    /// `range` lies inside the arrays, and no two calls running at once share an index.
    unsafe fn run(&self, range: Range<usize>);
}

/// The pass's loop compiled for AVX-512 (the pass inlines into it and vectorises 16 wide).
#[cfg(target_arch = "x86_64")]
///
/// # Safety
/// The CPU must have these features, and `range` must satisfy [`Pass::run`]'s contract.
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
unsafe fn run_avx512<P: Pass>(p: &P, range: Range<usize>) {
    // SAFETY: the caller upholds Pass::run's contract.
    unsafe { p.run(range) }
}

/// The pass's loop compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
///
/// # Safety
/// The CPU must have these features, and `range` must satisfy [`Pass::run`]'s contract.
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<P: Pass>(p: &P, range: Range<usize>) {
    // SAFETY: the caller upholds Pass::run's contract.
    unsafe { p.run(range) }
}

/// Runs a pass over `0..len` with the widest vector instructions this CPU has, split across
/// threads when long. Each element is computed alone, so the split does not change a result.
fn apply<P: Pass>(p: &P, len: usize) {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    let isa = *ISA.get_or_init(|| [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.available()));
    let run = |r: Range<usize>| {
        let _flush = FlushDenormals::new();
        // SAFETY: the ranges below cover 0..len without overlap; the ISA was detected.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Some(Isa::Avx512) => run_avx512(p, r),
                #[cfg(target_arch = "x86_64")]
                Some(Isa::Avx2) => run_avx2(p, r),
                _ => p.run(r),
            }
        }
    };
    if len < PARALLEL_ELEMENTWISE {
        return run(0..len);
    }
    let chunk = len
        .div_ceil(rayon::current_num_threads())
        .next_multiple_of(64);
    (0..len.div_ceil(chunk))
        .into_par_iter()
        .for_each(|i| run(i * chunk..((i + 1) * chunk).min(len)));
}

/// A raw pointer the threads of a pass share, each using its own range.
struct Shared<T>(*mut T);
// SAFETY: passes hand disjoint ranges to the threads, so no element is reached from two
// threads; the elements themselves move between threads, hence T: Send.
unsafe impl<T: Send> Sync for Shared<T> {}

/// The pass of [`map`] and [`zip`]: out[i] = f(ins[0][i], …) for K inputs.
struct Apply<'a, T, F, const K: usize> {
    ins: [&'a [T]; K],
    out: Shared<MaybeUninit<T>>,
    f: F,
}

impl<T: Element, F: Fn([T; K]) -> T + Sync, const K: usize> Pass for Apply<'_, T, F, K> {
    #[inline(always)]
    unsafe fn run(&self, range: Range<usize>) {
        // SAFETY: `range` lies inside out (the contract of run), and no other call touches it.
        let out =
            unsafe { std::slice::from_raw_parts_mut(self.out.0.add(range.start), range.len()) };
        let ins = self.ins.map(|a| &a[range.clone()]);
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: every input has the output's length, so i < range.len() is inside it.
            o.write((self.f)(ins.map(|a| unsafe { *a.get_unchecked(i) })));
        }
    }
}

/// f applied elementwise to K equally shaped arrays in standard layout, into a new array.
fn apply_new<T: Element, const K: usize>(
    shape: (usize, usize),
    ins: [&[T]; K],
    f: impl Fn([T; K]) -> T + Sync,
) -> Array2<T> {
    let len = shape.0 * shape.1;
    let mut out: Vec<T> = Vec::with_capacity(len);
    let pass = Apply {
        ins,
        out: Shared(out.spare_capacity_mut().as_mut_ptr()),
        f,
    };
    apply(&pass, len);
    // SAFETY: the pass wrote every one of the len elements.
    unsafe { out.set_len(len) };
    Array2::from_shape_vec(shape, out).expect("length matches the shape")
}

/// f applied to every element.
pub fn map<T: Element>(a: &Array2<T>, f: impl Fn(T) -> T + Sync + Send) -> Array2<T> {
    match a.as_slice() {
        Some(x) => apply_new(a.dim(), [x], |[v]| f(v)),
        None => a.mapv(f),
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
    match (a.as_slice(), b.as_slice()) {
        (Some(x), Some(y)) => apply_new(a.dim(), [x, y], |[u, v]| f(u, v)),
        _ => Zip::from(a).and(b).map_collect(|&x, &y| f(x, y)),
    }
}

/// The pass of [`update`].
struct Update<'a, T, F> {
    p: Shared<T>,
    v: Shared<T>,
    g: &'a [T],
    f: F,
}

impl<T: Element, F: Fn(&mut T, &mut T, T) + Sync> Pass for Update<'_, T, F> {
    #[inline(always)]
    unsafe fn run(&self, range: Range<usize>) {
        // SAFETY: `range` lies inside p and v (the contract of run), and no other call touches
        // it.
        let (p, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(self.p.0.add(range.start), range.len()),
                std::slice::from_raw_parts_mut(self.v.0.add(range.start), range.len()),
            )
        };
        for ((p, v), &g) in p.iter_mut().zip(v).zip(&self.g[range]) {
            (self.f)(p, v, g);
        }
    }
}

/// In place: f(p, v, g) for every element of p, v and g (an optimiser's update of a parameter
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
    let len = p.len();
    match (p.as_slice_mut(), v.as_slice_mut(), g.as_slice()) {
        (Some(ps), Some(vs), Some(gs)) => {
            let pass = Update {
                p: Shared(ps.as_mut_ptr()),
                v: Shared(vs.as_mut_ptr()),
                g: gs,
                f,
            };
            apply(&pass, len);
        }
        _ => Zip::from(p).and(v).and(g).for_each(|p, v, &g| f(p, v, g)),
    }
}

/// The pass of [`matvec`] when M's rows are contiguous: out[i] = ⟨M_i, x⟩, summed in 16
/// interleaved partial sums (a fixed order, so it vectorises and stays deterministic). Row i
/// starts at m + i·ld, `ld` of either sign (a view with its rows reversed has ld < 0).
struct RowDots<'a, T> {
    m: *const T,
    ld: isize,
    x: &'a [T],
    out: Shared<MaybeUninit<T>>,
}

// SAFETY: M is only read; each range writes its own elements of out.
unsafe impl<T: Sync + Send> Sync for RowDots<'_, T> {}

impl<T: Element + num_traits::Float> Pass for RowDots<'_, T> {
    #[inline(always)]
    unsafe fn run(&self, range: Range<usize>) {
        let k = self.x.len();
        for i in range {
            // SAFETY: row i of the rows×k matrix that matvec's caller vouches for.
            let row = unsafe { std::slice::from_raw_parts(self.m.offset(i as isize * self.ld), k) };
            let mut acc = [T::zero(); 16];
            let (body, tail) = (k / 16 * 16, k % 16);
            for (r, x) in row[..body]
                .chunks_exact(16)
                .zip(self.x[..body].chunks_exact(16))
            {
                for l in 0..16 {
                    acc[l] = acc[l] + r[l] * x[l];
                }
            }
            for l in 0..tail {
                acc[l] = acc[l] + row[body + l] * self.x[body + l];
            }
            let mut s = T::zero();
            for a in acc {
                s = s + a;
            }
            // SAFETY: i lies in range, inside out, and no other call touches it.
            unsafe { (*self.out.0.add(i)).write(s) };
        }
    }
}

/// The pass of [`matvec`] when M's columns are contiguous (M = Nᵀ, N row-major):
/// out[i] = Σ_p x[p]·N[p, i], added up over p in order. Row p of N starts at n + p·ld, `ld` of
/// either sign.
struct ColumnSums<'a, T> {
    n: *const T,
    ld: isize,
    x: &'a [T],
    out: Shared<MaybeUninit<T>>,
}

// SAFETY: N is only read; each range writes its own elements of out.
unsafe impl<T: Sync + Send> Sync for ColumnSums<'_, T> {}

impl<T: Element + num_traits::Float> Pass for ColumnSums<'_, T> {
    #[inline(always)]
    unsafe fn run(&self, range: Range<usize>) {
        // SAFETY: `range` lies inside out (the contract of run), and no other call touches it.
        let out =
            unsafe { std::slice::from_raw_parts_mut(self.out.0.add(range.start), range.len()) };
        for o in out.iter_mut() {
            o.write(T::zero());
        }
        for (p, &xp) in self.x.iter().enumerate() {
            // SAFETY: columns `range` of row p of the k×rows matrix N that matvec's caller
            // vouches for.
            let row = unsafe {
                std::slice::from_raw_parts(
                    self.n.offset(p as isize * self.ld + range.start as isize),
                    range.len(),
                )
            };
            for (o, &v) in out.iter_mut().zip(row) {
                // SAFETY: every element of out was written with zero above.
                o.write(unsafe { o.assume_init() } + xp * v);
            }
        }
    }
}

/// y = M·x for M [rows×k] given by a pointer and strides, one of them 1 (a matrix or a
/// transposed one), and x [k] contiguous: the matrix-vector products, which a tiled GEMM would
/// spend mostly on padding.
///
/// # Safety
/// The pointer and strides must address a valid rows×k matrix (strides of either sign).
pub(crate) unsafe fn matvec<T: Element + num_traits::Float>(
    (m, rs, cs): (*const T, isize, isize),
    rows: usize,
    x: &[T],
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(rows);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr());
    if cs == 1 || x.len() <= 1 {
        apply(
            &RowDots {
                m,
                ld: rs,
                x,
                out: dst,
            },
            rows,
        );
    } else {
        debug_assert_eq!(rs, 1, "matvec: neither stride is 1");
        apply(
            &ColumnSums {
                n: m,
                ld: cs,
                x,
                out: dst,
            },
            rows,
        );
    }
    // SAFETY: the pass wrote every one of the rows elements.
    unsafe { out.set_len(rows) };
    out
}
