//! Matrix products: a BLIS-style GEMM of our own, with operands packed once when they are
//! constant, and matrixmultiply as the reference and the fallback.
//!
//! C [m×n] = A [m×k] · B [k×n], every operand a strided view (a transposed matrix is just other
//! strides). The loops, outermost first:
//!
//! ```text
//! columns of C split across threads, in whole NR-wide panels
//!   for each block of KC steps of k:        pack B's panels (KC×NR each), unless pre-packed
//!     for each block of MC rows of A:       pack A's panels (MR×KC each)
//!       for each NR panel, each MR panel:   the micro-kernel: an MR×NR tile of C in registers
//! ```
//!
//! KC is sized so a B panel stays in L1 and MC so the packed A block stays in L2; the
//! micro-kernel asks for its tile of C ahead, so that C is in cache when it is written. The first
//! block of k writes C, later ones add to it; every element of C is summed in the same order
//! whatever the thread count, so results are byte-identical with one thread or many.
//!
//! A [`PackedB`] holds a constant right-hand operand (a weight matrix, or its transpose) packed
//! in exactly the layout the loops read, so a reconstruction packs each weight once per run
//! instead of once per product.

use std::cell::RefCell;
use std::sync::OnceLock;

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use super::micro::MicroFn;
use crate::scalar::Scalar;

/// Products with fewer multiply-adds than this run on one thread.
pub const PARALLEL_GEMM: usize = 1 << 20;

/// The instruction sets our micro-kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F: 32 registers of 512 bits.
    Avx512,
    /// AVX2 with FMA: 16 registers of 256 bits.
    Avx2,
}

impl Isa {
    /// Whether this CPU has it.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 => is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }
}

/// Which code computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Our packed GEMM with the micro-kernel for this instruction set.
    Packed(Isa),
    /// The matrixmultiply crate (column blocks split across threads as ours are).
    MatrixMultiply,
}

impl Backend {
    /// Every backend this CPU can run, best first.
    pub fn available() -> Vec<Backend> {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|isa| isa.available())
            .map(Backend::Packed)
            .chain([Backend::MatrixMultiply])
            .collect()
    }

    /// Short name: `avx512`, `avx2` or `matrixmultiply`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Packed(Isa::Avx512) => "avx512",
            Backend::Packed(Isa::Avx2) => "avx2",
            Backend::MatrixMultiply => "matrixmultiply",
        }
    }

    /// The backend of this name, if the CPU can run it.
    pub fn parse(name: &str) -> Option<Backend> {
        Backend::available().into_iter().find(|b| b.name() == name)
    }

    /// The backend products use: the one [`with_backend`] set on this thread, else the
    /// process-wide choice — `REVEAL_GEMM` (avx512, avx2 or matrixmultiply) when set to one this
    /// CPU can run, else the best available, chosen once at the first product.
    pub fn selected() -> Backend {
        static CHOICE: OnceLock<Backend> = OnceLock::new();
        OVERRIDE.with(|o| o.get()).unwrap_or_else(|| {
            *CHOICE.get_or_init(|| {
                std::env::var("REVEAL_GEMM")
                    .ok()
                    .and_then(|v| Backend::parse(v.trim()))
                    .unwrap_or(Backend::available()[0])
            })
        })
    }
}

thread_local! {
    static OVERRIDE: std::cell::Cell<Option<Backend>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every product started on this thread computed by `backend` (to compare
/// backends in one process; the threads a product splits into follow the caller's choice).
pub fn with_backend<R>(backend: Backend, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Backend>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(backend))));
    f()
}

/// The element types the kernels exist for (`f32`, `f64`): their micro-kernels and
/// matrixmultiply's GEMM for them.
pub trait Element: Sized + Copy + Send + Sync + 'static {
    /// The micro-kernel for an instruction set: (MR, NR, function).
    #[doc(hidden)]
    fn micro(isa: Isa) -> (usize, usize, MicroFn<Self>);

    /// matrixmultiply's `sgemm`/`dgemm` with α = 1, β = 0: C = A·B for (m, k, n), each operand
    /// a pointer with its row and column strides.
    ///
    /// # Safety
    /// The pointers and strides must address valid m×k, k×n and m×n matrices; C is written,
    /// not read.
    #[doc(hidden)]
    unsafe fn gemm_reference(
        dims: (usize, usize, usize),
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        c: (*mut Self, isize, isize),
    );
}

macro_rules! element {
    ($t:ty, $gemm:path, $avx512:path, $avx2:path, $mr512:literal, $nr512:literal, $nr2:literal) => {
        impl Element for $t {
            fn micro(isa: Isa) -> (usize, usize, MicroFn<$t>) {
                #[cfg(target_arch = "x86_64")]
                match isa {
                    Isa::Avx512 => ($mr512, $nr512, $avx512),
                    Isa::Avx2 => (6, $nr2, $avx2),
                }
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("no micro-kernels for {isa:?} on this architecture")
            }

            unsafe fn gemm_reference(
                (m, k, n): (usize, usize, usize),
                a: (*const $t, isize, isize),
                b: (*const $t, isize, isize),
                c: (*mut $t, isize, isize),
            ) {
                // SAFETY: the caller vouches for the three matrices (# Safety above).
                unsafe {
                    $gemm(
                        m, k, n, 1.0, a.0, a.1, a.2, b.0, b.1, b.2, 0.0, c.0, c.1, c.2,
                    )
                }
            }
        }
    };
}

element!(
    f32,
    matrixmultiply::sgemm,
    super::micro::f32_avx512,
    super::micro::f32_avx2,
    12,
    32,
    16
);
element!(
    f64,
    matrixmultiply::dgemm,
    super::micro::f64_avx512,
    super::micro::f64_avx2,
    12,
    16,
    8
);

/// The CPU's brand string (CPUID), e.g. "AMD EPYC 9B45"; "unknown" where there is none.
pub fn cpu_name() -> String {
    #[cfg(target_arch = "x86_64")]
    #[allow(unused_unsafe)] // __cpuid is a safe function in newer Rust
    // SAFETY: CPUID is available on every x86-64 CPU; the brand leaves are read only when the
    // highest extended leaf says they exist.
    unsafe {
        use std::arch::x86_64::__cpuid;
        if __cpuid(0x8000_0000).eax >= 0x8000_0004 {
            let bytes: Vec<u8> = (0x8000_0002u32..=0x8000_0004)
                .flat_map(|leaf| {
                    let r = __cpuid(leaf);
                    [r.eax, r.ebx, r.ecx, r.edx]
                        .into_iter()
                        .flat_map(u32::to_le_bytes)
                })
                .collect();
            let name = String::from_utf8_lossy(&bytes);
            let name = name.trim_matches(|c: char| c == '\0' || c.is_whitespace());
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    "unknown".to_string()
}

/// L1 data and L2 cache sizes of one core in bytes (CPUID; 32 KiB and 512 KiB when unknown).
pub fn cache_sizes() -> (usize, usize) {
    static SIZES: OnceLock<(usize, usize)> = OnceLock::new();
    *SIZES.get_or_init(|| {
        let (mut l1, mut l2) = (32 << 10, 512 << 10);
        #[cfg(target_arch = "x86_64")]
        #[allow(unused_unsafe)] // __cpuid is a safe function in newer Rust
        // SAFETY: CPUID is available on every x86-64 CPU; the extended leaves are read only
        // when the highest extended leaf says they exist.
        unsafe {
            use std::arch::x86_64::__cpuid;
            let max_ext = __cpuid(0x8000_0000).eax;
            if max_ext >= 0x8000_0006 {
                let kb = (__cpuid(0x8000_0006).ecx >> 16) as usize;
                if kb > 0 {
                    l2 = kb << 10;
                }
            }
            // AMD reports the L1 data cache in leaf 0x8000_0005; Intel in leaf 4.
            let amd_l1 = if max_ext >= 0x8000_0005 {
                (__cpuid(0x8000_0005).ecx >> 24) as usize
            } else {
                0
            };
            if amd_l1 > 0 {
                l1 = amd_l1 << 10;
            } else if __cpuid(0).eax >= 4 {
                let r = std::arch::x86_64::__cpuid_count(4, 0);
                if r.eax & 0x1f == 1 {
                    // ways × partitions × line size × sets
                    let ways = ((r.ebx >> 22) + 1) as usize;
                    let parts = (((r.ebx >> 12) & 0x3ff) + 1) as usize;
                    let line = ((r.ebx & 0xfff) + 1) as usize;
                    l1 = ways * parts * line * (r.ecx as usize + 1);
                }
            }
        }
        (l1, l2)
    })
}

/// The blocking of one micro-kernel: tile MR×NR, KC steps of k, MC rows of A per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of a tile of C (and of a packed panel of A).
    pub mr: usize,
    /// Columns of a tile of C (and of a packed panel of B).
    pub nr: usize,
    /// Steps of k per block.
    pub kc: usize,
    /// Rows of A per block.
    pub mc: usize,
}

impl Blocking {
    /// Sized from the caches: a KC×NR panel of B fills two thirds of L1, an MC×KC block of A
    /// an eighth of L2.
    pub fn for_cpu<T: Element>(isa: Isa) -> Blocking {
        let (mr, nr, _) = T::micro(isa);
        let size = std::mem::size_of::<T>();
        let (l1, l2) = cache_sizes();
        // A longer KC (512 on the Xeon: a panel of four thirds of L1, read from L2) ran the
        // 1000×3072·3072×1000 product 5 % faster alone, but not the steps, and the training
        // step of case B 12 % slower (its 100-row products reuse each B panel only 9 times).
        let kc = ((2 * l1 / 3) / (nr * size)).clamp(64, 512) / 16 * 16;
        // The A block takes an eighth of L2. On an Intel Xeon (2 MB L2 per core) MC 120–252
        // ran our GEMM at 295–303 GFLOP/s, against 234 with half of L2 (MC 960). MC changes no
        // sum, only which rows share a block: results stay the same bytes.
        let mc = ((l2 / 8) / (kc * size)).clamp(mr, 960) / mr * mr;
        Blocking { mr, nr, kc, mc }
    }
}

/// A right-hand operand B [k×n] packed for one backend: for each block of KC steps of k, its
/// ⌈n/NR⌉ panels, each KC×NR with zeros past column n.
pub struct PackedB<T> {
    data: Vec<T>,
    k: usize,
    n: usize,
    isa: Isa,
    blocking: Blocking,
}

impl<T: Scalar> PackedB<T> {
    /// Packs `b` for the selected backend; `None` when that is matrixmultiply (nothing to pack).
    pub fn new(b: ArrayView2<T>) -> Option<PackedB<T>> {
        match Backend::selected() {
            Backend::Packed(isa) => Some(PackedB::for_isa(b, isa)),
            Backend::MatrixMultiply => None,
        }
    }

    /// Packs `b` for one instruction set's micro-kernel.
    pub fn for_isa(b: ArrayView2<T>, isa: Isa) -> PackedB<T> {
        let blocking = Blocking::for_cpu::<T>(isa);
        let (k, n) = b.dim();
        let panels = n.div_ceil(blocking.nr);
        let mut data = vec![T::zero(); k * panels * blocking.nr];
        let src = Strided::of(b);
        // One block of KC steps after another, the blocks split across threads.
        data.par_chunks_mut(blocking.kc * panels * blocking.nr)
            .enumerate()
            .for_each(|(i, block)| {
                let pc = i * blocking.kc;
                let kc = blocking.kc.min(k - pc);
                pack_b(&src, n, pc, kc, 0, panels, blocking.nr, block);
            });
        PackedB {
            data,
            k,
            n,
            isa,
            blocking,
        }
    }

    /// `[k, n]` of the matrix it packs.
    pub fn dim(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// A matrix as a pointer and element strides (a view without its lifetime, for the threads).
#[derive(Clone, Copy)]
struct Strided<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

// SAFETY: only read, and only while the view it was made from is borrowed by the caller.
unsafe impl<T: Sync> Sync for Strided<T> {}
// SAFETY: as for Sync: a shared read-only view, sent to threads that only read through it.
unsafe impl<T: Sync> Send for Strided<T> {}

impl<T: Copy> Strided<T> {
    fn of(a: ArrayView2<T>) -> Self {
        Strided {
            ptr: a.as_ptr(),
            rs: a.strides()[0],
            cs: a.strides()[1],
        }
    }
}

/// Packs one panel: `count` lines (rows of A, or columns of B) starting at `first`, over steps
/// pc..pc+kc, as kc groups of `width` values (zero past `count`). `line` and `step` are the
/// operand's strides along the lines and along k.
///
/// # Safety
/// Every addressed element must lie inside the operand.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pack_panel<T: Scalar>(
    ptr: *const T,
    line: isize,
    step: isize,
    first: usize,
    count: usize,
    pc: usize,
    kc: usize,
    width: usize,
    out: &mut [T],
) {
    if count < width {
        out.fill(T::zero());
    }
    // The caller vouches that each element addressed, at first + l along the lines and pc + p
    // along k for l < count and p < kc, lies inside the operand; `out` holds kc·width values.
    // SAFETY: the panel's first element is such an element.
    let base = unsafe { ptr.offset(first as isize * line + pc as isize * step) };
    if line == 1 {
        // The lines are adjacent in memory: one contiguous run per step.
        for (p, dst) in out.chunks_exact_mut(width).take(kc).enumerate() {
            // SAFETY: see above.
            let src = unsafe { std::slice::from_raw_parts(base.offset(p as isize * step), count) };
            dst[..count].copy_from_slice(src);
        }
    } else if step == 1 {
        // Each line is contiguous along k: read it in one pass, write every width-th value.
        for l in 0..count {
            // SAFETY: see above.
            let src = unsafe { std::slice::from_raw_parts(base.offset(l as isize * line), kc) };
            for (p, &v) in src.iter().enumerate() {
                // SAFETY: p < kc and l < count ≤ width, so the index is below kc·width.
                unsafe { *out.get_unchecked_mut(p * width + l) = v };
            }
        }
    } else {
        for p in 0..kc {
            for l in 0..count {
                // SAFETY: see above.
                out[p * width + l] = unsafe { *base.offset(l as isize * line + p as isize * step) };
            }
        }
    }
}

/// Packs rows i0..i0+rows × steps pc..pc+kc of A into panels of MR values per step.
fn pack_a<T: Scalar>(
    a: &Strided<T>,
    (i0, rows): (usize, usize),
    pc: usize,
    kc: usize,
    mr: usize,
    dst: &mut [T],
) {
    for (panel, out) in dst.chunks_mut(mr * kc).take(rows.div_ceil(mr)).enumerate() {
        let r0 = i0 + panel * mr;
        let count = mr.min(i0 + rows - r0);
        // SAFETY: rows r0..r0+count and steps pc..pc+kc lie inside A.
        unsafe { pack_panel(a.ptr, a.rs, a.cs, r0, count, pc, kc, mr, out) };
    }
}

/// Packs steps pc..pc+kc × panels p0..p1 of B (NR columns each, zero past column n) into
/// `dst`, panel after panel, NR values per step.
#[allow(clippy::too_many_arguments)]
fn pack_b<T: Scalar>(
    b: &Strided<T>,
    n: usize,
    pc: usize,
    kc: usize,
    p0: usize,
    p1: usize,
    nr: usize,
    dst: &mut [T],
) {
    for (panel, out) in dst.chunks_mut(kc * nr).take(p1 - p0).enumerate() {
        let j0 = (p0 + panel) * nr;
        let count = nr.min(n - j0);
        // SAFETY: steps pc..pc+kc and columns j0..j0+count lie inside B.
        unsafe { pack_panel(b.ptr, b.cs, b.rs, j0, count, pc, kc, nr, out) };
    }
}

thread_local! {
    /// Reusable packing buffers of this thread, in f64 units (8-byte aligned).
    static SCRATCH: RefCell<(Vec<f64>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A buffer of at least `len` elements of T, 64-byte aligned, from a reusable f64 vector.
fn scratch<T>(v: &mut Vec<f64>, len: usize) -> &mut [T] {
    let size = std::mem::size_of::<T>();
    let words = (len * size).div_ceil(8) + 8;
    if v.len() < words {
        v.resize(words, 0.0);
    }
    let offset = v.as_ptr().align_offset(64);
    // SAFETY: f32 and f64 have no invalid bit patterns and need at most 8-byte alignment; the
    // slice starts at a 64-byte boundary inside the vector and `words` leaves room for it.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().add(offset) as *mut T, len) }
}

/// The right-hand operand of a product.
#[derive(Clone, Copy)]
enum Rhs<'a, T> {
    Raw(Strided<T>),
    Packed(&'a PackedB<T>),
}

/// A pointer to C shared by the threads, each writing its own columns.
#[derive(Clone, Copy)]
struct Out<T>(*mut T);
// SAFETY: the threads write disjoint tiles of C, so no element is reached from two threads;
// the elements are written from other threads than the owner's, hence T: Send.
unsafe impl<T: Send> Send for Out<T> {}
// SAFETY: as for Send.
unsafe impl<T: Send> Sync for Out<T> {}

/// C = A·B with our kernels for rows r0..r1 and column panels p0..p1 of C (one thread's share).
#[allow(clippy::too_many_arguments)]
fn gemm_block<T: Scalar>(
    isa: Isa,
    blk: Blocking,
    (k, n): (usize, usize),
    a: Strided<T>,
    b: Rhs<T>,
    c: Out<T>,
    (r0, r1): (usize, usize),
    (p0, p1): (usize, usize),
) {
    let (_, _, micro) = T::micro(isa);
    let Blocking {
        mr,
        nr,
        kc: kc_max,
        mc: mc_max,
    } = blk;
    let panels_all = n.div_ceil(nr);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (sa, sb) = &mut *s;
        let abuf: &mut [T] = scratch(sa, mc_max.div_ceil(mr) * mr * kc_max);
        let bbuf: &mut [T] = match b {
            Rhs::Raw(_) => scratch(sb, (p1 - p0) * nr * kc_max),
            Rhs::Packed(_) => &mut [],
        };
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            let bpanels: *const T = match b {
                Rhs::Packed(pb) => pb.data[pc * panels_all * nr + p0 * kc * nr..].as_ptr(),
                Rhs::Raw(raw) => {
                    pack_b(&raw, n, pc, kc, p0, p1, nr, bbuf);
                    bbuf.as_ptr()
                }
            };
            for ic in (r0..r1).step_by(mc_max) {
                let mc = mc_max.min(r1 - ic);
                // A row-major (contiguous along k) is read in place by the kernel, but for a
                // last panel with fewer than MR rows; otherwise it is packed.
                let in_place = a.cs == 1 && a.rs > 0;
                let full = if in_place { mc / mr } else { 0 };
                pack_a(&a, (ic + full * mr, mc - full * mr), pc, kc, mr, abuf);
                for jp in 0..(p1 - p0) {
                    let j0 = (p0 + jp) * nr;
                    let cols = nr.min(n - j0);
                    for ip in 0..mc.div_ceil(mr) {
                        let i0 = ic + ip * mr;
                        let rows = mr.min(r1 - i0);
                        let (ap, lda) = if ip < full {
                            // SAFETY: rows i0..i0+MR, steps pc..pc+kc lie inside A.
                            (
                                unsafe { a.ptr.offset(i0 as isize * a.rs + pc as isize) },
                                a.rs as usize,
                            )
                        } else {
                            (abuf[(ip - full) * mr * kc..].as_ptr(), 0)
                        };
                        // SAFETY: the panels hold kc steps of MR and NR values (or A's rows
                        // are read in place); the tile rows×cols at (i0, j0) lies inside C,
                        // which has row stride n.
                        unsafe {
                            micro(
                                kc,
                                ap,
                                lda,
                                bpanels.add(jp * nr * kc),
                                c.0.add(i0 * n + j0),
                                n,
                                pc > 0,
                                rows,
                                cols,
                            )
                        };
                    }
                }
            }
        }
    });
}

/// C = A·B with matrixmultiply, large products split into column blocks across threads.
fn matmul_matrixmultiply<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let threads = rayon::current_num_threads();
    if m * k * n < PARALLEL_GEMM || threads < 2 || n < 2 * threads {
        return a.dot(&b);
    }
    // Every element is written by one block's GEMM with β = 0, which does not read C, so the
    // output needs no zeroing first.
    let mut c = Array2::<T>::uninit((m, n));
    let width = n.div_ceil(threads);
    c.axis_chunks_iter_mut(Axis(1), width)
        .into_par_iter()
        .zip(b.axis_chunks_iter(Axis(1), width).into_par_iter())
        .for_each(|(mut c_block, b_block)| {
            let _flush = super::FlushDenormals::new();
            let (sa, sb) = (a.strides(), b_block.strides());
            let (rs, cs) = (c_block.strides()[0], c_block.strides()[1]);
            let out = c_block.as_mut_ptr() as *mut T;
            // SAFETY: A (m×k), this B block (k×cols) and this C block (m×cols) are addressed
            // with their own strides; gemm writes every element of the C block and, with β = 0,
            // reads none.
            unsafe {
                T::gemm_reference(
                    (m, k, b_block.ncols()),
                    (a.as_ptr(), sa[0], sa[1]),
                    (b_block.as_ptr(), sb[0], sb[1]),
                    (out, rs, cs),
                )
            };
        });
    // SAFETY: the blocks cover every column, so every element was written above.
    unsafe { c.assume_init() }
}

/// C = A·B when A has one row or B one column, as a matrix-vector product: C = A·b, or
/// Cᵀ = Bᵀ·aᵀ.
fn matvec_product<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let (m, n) = (a.nrows(), b.ncols());
    let (mat, vec, rows) = if n == 1 {
        (a.view(), b.t(), m)
    } else {
        (b.t(), a.view(), n)
    };
    // Strided both ways (a sliced view): copied to standard layout first.
    let matrix = if mat.strides().contains(&1) || mat.ncols() <= 1 {
        ndarray::CowArray::from(mat)
    } else {
        ndarray::CowArray::from(mat.as_standard_layout().into_owned())
    };
    let x = vec.row(0).to_vec();
    let (s0, s1) = (matrix.strides()[0], matrix.strides()[1]);
    // SAFETY: `matrix` is a rows×k matrix with these strides, one of them 1.
    let y = unsafe { super::matvec((matrix.as_ptr(), s0, s1), rows, &x) };
    let shape = if n == 1 { (m, 1) } else { (1, n) };
    Array2::from_shape_vec(shape, y).expect("rows values")
}

/// C = A·B by the selected backend, using `packed` (the same B, pre-packed) when it fits.
pub fn matmul<T: Scalar>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    packed: Option<&PackedB<T>>,
) -> Array2<T> {
    matmul_with(Backend::selected(), a, b, packed)
}

/// C = A·B by a given backend (for tests and benchmarks; [`matmul`] picks the backend itself).
///
/// # Panics
/// If the inner dimensions differ, or `packed` is not B's shape.
pub fn matmul_with<T: Scalar>(
    backend: Backend,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    packed: Option<&PackedB<T>>,
) -> Array2<T> {
    assert_eq!(
        a.ncols(),
        b.nrows(),
        "matmul: inner dimensions differ: {:?} · {:?}",
        a.dim(),
        b.dim()
    );
    if let Some(p) = packed {
        assert_eq!(
            p.dim(),
            b.dim(),
            "matmul: packed operand is {:?}, B is {:?}",
            p.dim(),
            b.dim()
        );
    }
    let _flush = super::FlushDenormals::new();
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let isa = match backend {
        Backend::Packed(isa) if m > 1 && n > 1 && k > 0 => isa,
        // Matrix-vector products: a tile would be mostly padding.
        Backend::Packed(_) if k > 0 => return matvec_product(a, b),
        _ => return matmul_matrixmultiply(a, b),
    };
    let blk = Blocking::for_cpu::<T>(isa);
    let rhs = match packed {
        Some(p) if p.isa == isa && p.blocking == blk => Rhs::Packed(p),
        _ => Rhs::Raw(Strided::of(b)),
    };
    let panels = n.div_ceil(blk.nr);
    let row_panels = m.div_ceil(blk.mr);
    // Threads split C by whole tiles. Each thread packs the parts of A and B it reads, so one
    // operand is packed by every thread: split the rows when B is pre-packed or A is the
    // larger operand (each thread then packs only its rows of A), else the columns.
    let by_rows = matches!(rhs, Rhs::Packed(_)) || m > n;
    let units = if by_rows { row_panels } else { panels };
    let threads = if m * k * n < PARALLEL_GEMM {
        1
    } else {
        rayon::current_num_threads().min(units)
    };
    let mut c = Array2::<T>::uninit((m, n));
    let out = Out(c.as_mut_ptr() as *mut T);
    let a = Strided::of(a);
    let per = units.div_ceil(threads);
    let share = |t: usize| {
        let (u0, u1) = ((t * per).min(units), ((t + 1) * per).min(units));
        if by_rows {
            ((u0 * blk.mr, (u1 * blk.mr).min(m)), (0, panels))
        } else {
            ((0, m), (u0, u1))
        }
    };
    let run = |t: usize| {
        let _flush = super::FlushDenormals::new();
        let (rows, cols) = share(t);
        gemm_block(isa, blk, (k, n), a, rhs, out, rows, cols)
    };
    if threads == 1 {
        run(0);
    } else {
        (0..threads).into_par_iter().for_each(run);
    }
    // SAFETY: the first block of k writes every element of every panel; the shares cover
    // every panel.
    unsafe { c.assume_init() }
}
