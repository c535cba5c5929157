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
//!
//! With [`GemmPrecision::Bf16`] (opt-in, CPUs with AVX512-BF16) an f32 product rounds its
//! operands to bf16 as it packs them (8 significant bits instead of 24, round to nearest even)
//! and sums their products in f32: the same loops, panels of bf16 pairs, and a micro-kernel of
//! `vdpbf16ps`, which does twice the multiply-adds of an f32 FMA per instruction. Everything
//! outside the products stays f32; f64 products are never rounded.

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
    static PRECISION_OVERRIDE: std::cell::Cell<Option<GemmPrecision>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` with a thread-local setting replaced by `value` (None: no override), restored
/// afterwards (also on panic).
fn with_override<V: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::Cell<Option<V>>>,
    value: Option<V>,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<V: Copy + 'static>(
        &'static std::thread::LocalKey<std::cell::Cell<Option<V>>>,
        Option<V>,
    );
    impl<V: Copy + 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            self.0.with(|o| o.set(self.1));
        }
    }
    let _restore = Restore(key, key.with(|o| o.replace(value)));
    f()
}

/// Runs `f` with every product started on this thread computed by `backend` (to compare
/// backends in one process; the threads a product splits into follow the caller's choice).
pub fn with_backend<R>(backend: Backend, f: impl FnOnce() -> R) -> R {
    with_override(&OVERRIDE, Some(backend), f)
}

/// Runs `f` with every product started on this thread in `precision` (tests and benchmarks;
/// runs use [`GemmPrecision::select`]). On a CPU without AVX512-BF16, products stay f32.
pub fn with_precision<R>(precision: GemmPrecision, f: impl FnOnce() -> R) -> R {
    with_override(&PRECISION_OVERRIDE, Some(precision), f)
}

/// What [`with_backend`] and [`with_precision`] set on one thread, to carry onto another: work
/// handed to the thread pool (a step runs on a worker) would otherwise use the process-wide
/// choices.
#[derive(Clone, Copy, Debug)]
pub struct ProductSettings {
    backend: Option<Backend>,
    precision: Option<GemmPrecision>,
}

impl ProductSettings {
    /// The settings of the calling thread.
    pub fn of_this_thread() -> Self {
        ProductSettings {
            backend: OVERRIDE.with(|o| o.get()),
            precision: PRECISION_OVERRIDE.with(|o| o.get()),
        }
    }

    /// Runs `f` under exactly these settings (on whatever thread calls this): a setting the
    /// original thread did not have is cleared too, since a pool worker may be running another
    /// caller's work further up its stack.
    pub fn apply<R>(self, f: impl FnOnce() -> R) -> R {
        with_override(&OVERRIDE, self.backend, || {
            with_override(&PRECISION_OVERRIDE, self.precision, f)
        })
    }
}

/// How an f32 product reads its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmPrecision {
    /// As they are (the default).
    F32,
    /// Rounded to bf16, products summed in f32 (AVX512-BF16 only; f64 products stay f64).
    Bf16,
}

/// The process-wide [`GemmPrecision`]: 0 for F32, 1 for Bf16.
static PRECISION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl GemmPrecision {
    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            GemmPrecision::F32 => true,
            #[cfg(target_arch = "x86_64")]
            GemmPrecision::Bf16 => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            GemmPrecision::Bf16 => false,
        }
    }

    /// Makes it the precision of every later f32 product in the process; an error naming the CPU
    /// when the CPU cannot run it.
    pub fn select(self) -> Result<(), String> {
        if !self.available() {
            return Err(format!(
                "bf16 products need a CPU with AVX512-BF16, and this one ({}) has none",
                cpu_name()
            ));
        }
        PRECISION.store(self as u8, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The precision products use: the one [`with_precision`] set on this thread, else the
    /// process-wide one ([`GemmPrecision::select`]; F32 until then).
    pub fn selected() -> GemmPrecision {
        PRECISION_OVERRIDE.with(|o| o.get()).unwrap_or_else(|| {
            match PRECISION.load(std::sync::atomic::Ordering::Relaxed) {
                0 => GemmPrecision::F32,
                _ => GemmPrecision::Bf16,
            }
        })
    }
}

/// The element types the kernels exist for (`f32`, `f64`): their micro-kernels and
/// matrixmultiply's GEMM for them.
pub trait Element: Sized + Copy + Send + Sync + 'static {
    /// The micro-kernel for an instruction set: (MR, NR, function).
    #[doc(hidden)]
    fn micro(isa: Isa) -> (usize, usize, MicroFn<Self>);

    /// The bf16 micro-kernel writing this type, on bf16 pairs: (MR, NR, function). f32 has one
    /// (on x86-64), f64, the type of the checks, none (its products are never rounded).
    #[doc(hidden)]
    fn micro_bf16() -> Option<(usize, usize, MicroFn<u32, Self>)>;

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

/// The f32 bf16 micro-kernel (12×32), where the architecture has one.
fn bf16_micro_f32() -> Option<(usize, usize, MicroFn<u32, f32>)> {
    #[cfg(target_arch = "x86_64")]
    return Some((12, 32, super::micro::bf16_avx512));
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// No bf16 micro-kernel (f64).
fn no_bf16_micro<T>() -> Option<(usize, usize, MicroFn<u32, T>)> {
    None
}

macro_rules! element {
    (
        $t:ty, $gemm:path, $avx512:path, $avx2:path, $mr512:literal, $nr512:literal,
        $nr2:literal, bf16 = $bf16:path
    ) => {
        impl Element for $t {
            fn micro_bf16() -> Option<(usize, usize, MicroFn<u32, $t>)> {
                $bf16()
            }

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
    16,
    bf16 = bf16_micro_f32
);
element!(
    f64,
    matrixmultiply::dgemm,
    super::micro::f64_avx512,
    super::micro::f64_avx2,
    12,
    16,
    8,
    bf16 = no_bf16_micro
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

/// The most steps of k in one block.
const MAX_KC: usize = 1024;

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
        Blocking::sized(mr, nr, std::mem::size_of::<T>())
    }

    /// For a tile of MR×NR and operands of `size` bytes (2 for bf16: twice the steps of f32
    /// per block).
    fn sized(mr: usize, nr: usize, size: usize) -> Blocking {
        let (l1, l2) = cache_sizes();
        // A longer KC (512 on the Xeon: a panel of four thirds of L1, read from L2) ran the
        // 1000×3072·3072×1000 product 5 % faster alone, but not the steps, and the training
        // step of case B 12 % slower (its 100-row products reuse each B panel only 9 times).
        // A multiple of 16, so also even: the bf16 kernel takes steps in pairs.
        let kc = ((2 * l1 / 3) / (nr * size)).clamp(64, MAX_KC) / 16 * 16;
        // The A block takes an eighth of L2. On an Intel Xeon (2 MB L2 per core) MC 120–252
        // ran our GEMM at 295–303 GFLOP/s, against 234 with half of L2 (MC 960). MC changes no
        // sum, only which rows share a block: results stay the same bytes.
        let mc = ((l2 / 8) / (kc * size)).clamp(mr, 960) / mr * mr;
        Blocking { mr, nr, kc, mc }
    }
}

/// Packs one panel of an operand (see [`pack_panel`]): the element type as it is, or as bf16
/// pairs.
type PackFn<T, P> = unsafe fn(*const T, isize, isize, usize, usize, usize, usize, usize, &mut [P]);

/// How a product packs its operands and multiplies the panels: the element type itself
/// (`P = T`), or f32 rounded to bf16 pairs (`P = u32`, two steps of k per packed value).
#[derive(Clone, Copy)]
struct Kernel<T, P> {
    blk: Blocking,
    /// Steps of k in one packed value: 1, or 2 for bf16 pairs.
    per: usize,
    pack: PackFn<T, P>,
    micro: MicroFn<P, T>,
    /// Whether a row-major A may be read in place, without packing (only when `P = T`).
    in_place: bool,
}

impl<T: Scalar> Kernel<T, T> {
    /// The instruction set's micro-kernel on the element type.
    fn full(isa: Isa) -> Self {
        Kernel {
            blk: Blocking::for_cpu::<T>(isa),
            per: 1,
            pack: pack_panel::<T>,
            micro: T::micro(isa).2,
            in_place: true,
        }
    }
}

impl<T: Scalar> Kernel<T, u32> {
    /// The bf16 micro-kernel, if T has one and the CPU runs it.
    fn bf16() -> Option<Self> {
        if !GemmPrecision::Bf16.available() {
            return None;
        }
        let (mr, nr, micro) = T::micro_bf16()?;
        Some(Kernel {
            blk: Blocking::sized(mr, nr, 2),
            per: 2,
            pack: pack_panel_bf16::<T>,
            micro,
            in_place: false,
        })
    }
}

impl<T, P> Kernel<T, P> {
    /// Packed values per line of a block of `kc` steps.
    fn steps(&self, kc: usize) -> usize {
        kc.div_ceil(self.per)
    }
}

/// A right-hand operand B [k×n] packed for one kernel: for each block of KC steps of k, its
/// ⌈n/NR⌉ panels, each KC×NR with zeros past column n (bf16: ⌈KC/2⌉ pairs × NR).
pub struct PackedB<T> {
    panels: Panels<T>,
    k: usize,
    n: usize,
    blocking: Blocking,
}

/// The packed values of a [`PackedB`].
enum Panels<T> {
    /// The element type, for the micro-kernel of this instruction set.
    Full(Isa, Vec<T>),
    /// bf16 pairs, for the bf16 micro-kernel.
    Bf16(Vec<u32>),
}

impl<T: Scalar> PackedB<T> {
    /// Packs `b` for the selected backend and precision; `None` when that is matrixmultiply in
    /// full precision (nothing to pack).
    pub fn new(b: ArrayView2<T>) -> Option<PackedB<T>> {
        if let Some(kernel) = bf16_kernel::<T>() {
            let blocking = kernel.blk;
            return Some(PackedB {
                panels: Panels::Bf16(pack_whole(b, kernel)),
                k: b.nrows(),
                n: b.ncols(),
                blocking,
            });
        }
        match Backend::selected() {
            Backend::Packed(isa) => Some(PackedB::for_isa(b, isa)),
            Backend::MatrixMultiply => None,
        }
    }

    /// Packs `b` for one instruction set's micro-kernel.
    pub fn for_isa(b: ArrayView2<T>, isa: Isa) -> PackedB<T> {
        let kernel = Kernel::full(isa);
        PackedB {
            panels: Panels::Full(isa, pack_whole(b, kernel)),
            k: b.nrows(),
            n: b.ncols(),
            blocking: kernel.blk,
        }
    }

    /// `[k, n]` of the matrix it packs.
    pub fn dim(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// What a product of T computes in on this thread now: `f64`, `f32`, or `bf16` (f32 sums of
/// bf16 operands).
pub fn product_precision<T: Scalar>() -> &'static str {
    match bf16_kernel::<T>() {
        Some(_) => "bf16",
        None => T::NAME,
    }
}

/// The bf16 kernel for T when bf16 products are selected and T has one.
fn bf16_kernel<T: Scalar>() -> Option<Kernel<T, u32>> {
    match GemmPrecision::selected() {
        GemmPrecision::Bf16 => Kernel::bf16(),
        GemmPrecision::F32 => None,
    }
}

/// All of B packed for `kernel`, one block of KC steps after another, the blocks split across
/// threads.
fn pack_whole<T: Scalar, P: Copy + Default + Send>(
    b: ArrayView2<T>,
    kernel: Kernel<T, P>,
) -> Vec<P> {
    let Blocking { nr, kc, .. } = kernel.blk;
    let (k, n) = b.dim();
    let panels = n.div_ceil(nr);
    let steps = (k / kc) * kernel.steps(kc) + kernel.steps(k % kc);
    let mut data = vec![P::default(); steps * panels * nr];
    let src = Strided::of(b);
    data.par_chunks_mut(kernel.steps(kc) * panels * nr)
        .enumerate()
        .for_each(|(i, block)| {
            let pc = i * kc;
            pack_b(kernel, &src, n, (pc, kc.min(k - pc)), (0, panels), block);
        });
    data
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

/// x rounded to the nearest bf16 (ties to even), as its 16 bits: the upper half of the f32
/// after adding half a unit of the last kept place. NaN stays NaN (quiet).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    if x.is_nan() {
        ((bits >> 16) | 0x40) as u16
    } else {
        rounded as u16
    }
}

/// The f32 a bf16 stands for (exact).
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Two steps of k as one packed pair: the first in the low half.
#[inline(always)]
fn bf16_pair<T: Scalar>(first: T, second: T) -> u32 {
    // as_f64 as f32 is the identity for f32 (the compiler drops the round trip).
    let half = |v: T| to_bf16(v.as_f64() as f32) as u32;
    half(first) | half(second) << 16
}

/// [`pack_panel`] for the bf16 kernel: the same panel rounded to bf16, two steps of k per
/// packed value (⌈kc/2⌉ groups of `width` pairs; a last odd step is paired with 0). Compiled
/// for AVX-512 (only the bf16 kernel, which needs it, packs this way), where its rounding
/// loops vectorise.
///
/// # Safety
/// The CPU must have AVX-512F and BW. Every addressed element must lie inside the operand.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
unsafe fn pack_panel_bf16<T: Scalar>(
    ptr: *const T,
    line: isize,
    step: isize,
    first: usize,
    count: usize,
    pc: usize,
    kc: usize,
    width: usize,
    out: &mut [u32],
) {
    if count < width {
        out.fill(0);
    }
    // The caller vouches for every element at first + l along the lines and pc + p along k,
    // l < count, p < kc; `out` holds ⌈kc/2⌉·width pairs.
    // SAFETY: the panel's first element is such an element.
    let base = unsafe { ptr.offset(first as isize * line + pc as isize * step) };
    // The element at line l, step p (called with l < count, p < kc).
    // SAFETY: such an element lies inside the operand (see above).
    let at = |l: usize, p: usize| unsafe { *base.offset(l as isize * line + p as isize * step) };
    // `len` values from `start` (called with a run of `count` lines at a step p < kc, or the
    // `kc` steps of a line l < count).
    // SAFETY: such runs lie inside the operand (see above).
    let run =
        |start: isize, len: usize| unsafe { std::slice::from_raw_parts(base.offset(start), len) };
    let zero = T::zero();
    if line == 1 {
        // The lines are adjacent in memory: two contiguous runs per pair of steps.
        for (q, dst) in out.chunks_exact_mut(width).take(kc.div_ceil(2)).enumerate() {
            let lo = run(2 * q as isize * step, count);
            if 2 * q + 1 < kc {
                let hi = run((2 * q + 1) as isize * step, count);
                for ((d, &x), &y) in dst.iter_mut().zip(lo).zip(hi) {
                    *d = bf16_pair(x, y);
                }
            } else {
                for (d, &x) in dst.iter_mut().zip(lo) {
                    *d = bf16_pair(x, zero);
                }
            }
        }
    } else if step == 1 {
        // Each line is contiguous along k: round it into a buffer of pairs in one vectorised
        // pass, then write every width-th value.
        let mut pairs = [0u32; MAX_KC / 2];
        let pairs = &mut pairs[..kc.div_ceil(2)];
        for l in 0..count {
            let src = run(l as isize * line, kc);
            let (whole, rest) = src.split_at(kc / 2 * 2);
            for (d, xy) in pairs.iter_mut().zip(whole.chunks_exact(2)) {
                *d = bf16_pair(xy[0], xy[1]);
            }
            if let Some(&x) = rest.first() {
                pairs[kc / 2] = bf16_pair(x, zero);
            }
            for (q, &v) in pairs.iter().enumerate() {
                // SAFETY: q < ⌈kc/2⌉ and l < count ≤ width: inside out.
                unsafe { *out.get_unchecked_mut(q * width + l) = v };
            }
        }
    } else {
        for q in 0..kc.div_ceil(2) {
            for l in 0..count {
                let second = if 2 * q + 1 < kc {
                    at(l, 2 * q + 1)
                } else {
                    zero
                };
                out[q * width + l] = bf16_pair(at(l, 2 * q), second);
            }
        }
    }
}

/// Packs rows i0..i0+rows × steps pc..pc+kc of A into panels of MR values per step.
fn pack_a<T: Scalar, P>(
    kernel: Kernel<T, P>,
    a: &Strided<T>,
    (i0, rows): (usize, usize),
    (pc, kc): (usize, usize),
    dst: &mut [P],
) {
    let mr = kernel.blk.mr;
    let panel_len = mr * kernel.steps(kc);
    for (panel, out) in dst
        .chunks_mut(panel_len)
        .take(rows.div_ceil(mr))
        .enumerate()
    {
        let r0 = i0 + panel * mr;
        let count = mr.min(i0 + rows - r0);
        // SAFETY: rows r0..r0+count and steps pc..pc+kc lie inside A.
        unsafe { (kernel.pack)(a.ptr, a.rs, a.cs, r0, count, pc, kc, mr, out) };
    }
}

/// Packs steps pc..pc+kc × panels p0..p1 of B (NR columns each, zero past column n) into
/// `dst`, panel after panel, NR values per step.
fn pack_b<T: Scalar, P>(
    kernel: Kernel<T, P>,
    b: &Strided<T>,
    n: usize,
    (pc, kc): (usize, usize),
    (p0, p1): (usize, usize),
    dst: &mut [P],
) {
    let nr = kernel.blk.nr;
    for (panel, out) in dst
        .chunks_mut(kernel.steps(kc) * nr)
        .take(p1 - p0)
        .enumerate()
    {
        let j0 = (p0 + panel) * nr;
        let count = nr.min(n - j0);
        // SAFETY: steps pc..pc+kc and columns j0..j0+count lie inside B.
        unsafe { (kernel.pack)(b.ptr, b.cs, b.rs, j0, count, pc, kc, nr, out) };
    }
}

thread_local! {
    /// Reusable packing buffers of this thread, in f64 units (8-byte aligned).
    static SCRATCH: RefCell<(Vec<f64>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A buffer of at least `len` elements of T, 64-byte aligned, from a reusable f64 vector.
///
/// T must be a plain number type (f32, f64, u32): any bit pattern is a value.
fn scratch<T>(v: &mut Vec<f64>, len: usize) -> &mut [T] {
    let size = std::mem::size_of::<T>();
    let words = (len * size).div_ceil(8) + 8;
    if v.len() < words {
        v.resize(words, 0.0);
    }
    let offset = v.as_ptr().align_offset(64);
    // SAFETY: the types used here have no invalid bit patterns and need at most 8-byte
    // alignment; the slice starts at a 64-byte boundary inside the vector and `words` leaves
    // room for it.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().add(offset) as *mut T, len) }
}

/// The right-hand operand of a product.
#[derive(Clone, Copy)]
enum Rhs<'a, T, P> {
    Raw(Strided<T>),
    Packed(&'a [P]),
}

/// A pointer to C shared by the threads, each writing its own columns.
#[derive(Clone, Copy)]
struct Out<T>(*mut T);
// SAFETY: the threads write disjoint tiles of C, so no element is reached from two threads;
// the elements are written from other threads than the owner's, hence T: Send.
unsafe impl<T: Send> Send for Out<T> {}
// SAFETY: as for Send.
unsafe impl<T: Send> Sync for Out<T> {}

/// C = A·B with `kernel` for rows r0..r1 and column panels p0..p1 of C (one thread's share).
fn gemm_block<T: Scalar, P: Copy>(
    kernel: Kernel<T, P>,
    (k, n): (usize, usize),
    a: Strided<T>,
    b: Rhs<T, P>,
    c: Out<T>,
    (r0, r1): (usize, usize),
    (p0, p1): (usize, usize),
) {
    let Blocking {
        mr,
        nr,
        kc: kc_max,
        mc: mc_max,
    } = kernel.blk;
    let panels_all = n.div_ceil(nr);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (sa, sb) = &mut *s;
        let abuf: &mut [P] = scratch(sa, mc_max.div_ceil(mr) * mr * kernel.steps(kc_max));
        let bbuf: &mut [P] = match b {
            Rhs::Raw(_) => scratch(sb, (p1 - p0) * nr * kernel.steps(kc_max)),
            Rhs::Packed(_) => &mut [],
        };
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            // Packed values per line of this block: kc, or ⌈kc/2⌉ bf16 pairs.
            let s = kernel.steps(kc);
            let bpanels: *const P = match b {
                Rhs::Packed(data) => {
                    let before = (pc / kc_max) * kernel.steps(kc_max) * panels_all * nr;
                    data[before + p0 * s * nr..].as_ptr()
                }
                Rhs::Raw(raw) => {
                    pack_b(kernel, &raw, n, (pc, kc), (p0, p1), bbuf);
                    bbuf.as_ptr()
                }
            };
            for ic in (r0..r1).step_by(mc_max) {
                let mc = mc_max.min(r1 - ic);
                // A row-major (contiguous along k) is read in place by the kernel, but for a
                // last panel with fewer than MR rows; otherwise it is packed.
                let in_place = kernel.in_place && a.cs == 1 && a.rs > 0;
                let full = if in_place { mc / mr } else { 0 };
                pack_a(kernel, &a, (ic + full * mr, mc - full * mr), (pc, kc), abuf);
                for jp in 0..(p1 - p0) {
                    let j0 = (p0 + jp) * nr;
                    let cols = nr.min(n - j0);
                    for ip in 0..mc.div_ceil(mr) {
                        let i0 = ic + ip * mr;
                        let rows = mr.min(r1 - i0);
                        let (ap, lda) = if ip < full {
                            // In place only when P is T (`Kernel::in_place`).
                            // SAFETY: rows i0..i0+MR, steps pc..pc+kc lie inside A.
                            (
                                unsafe { a.ptr.offset(i0 as isize * a.rs + pc as isize) }
                                    as *const P,
                                a.rs as usize,
                            )
                        } else {
                            (abuf[(ip - full) * mr * s..].as_ptr(), 0)
                        };
                        // SAFETY: the panels hold s steps of MR and NR values (or A's rows
                        // are read in place); the tile rows×cols at (i0, j0) lies inside C,
                        // which has row stride n.
                        unsafe {
                            (kernel.micro)(
                                s,
                                ap,
                                lda,
                                bpanels.add(jp * nr * s),
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

/// C = A·B by the selected backend and precision, using `packed` (the same B, pre-packed)
/// when it fits.
pub fn matmul<T: Scalar>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    packed: Option<&PackedB<T>>,
) -> Array2<T> {
    super::count::product((a.nrows(), a.ncols(), b.ncols()));
    match bf16_kernel::<T>() {
        Some(kernel) => product_bf16(kernel, a, b, packed),
        None => matmul_with(Backend::selected(), a, b, packed),
    }
}

/// C = A·B with A and B rounded to bf16 and the products summed in f32 (the bf16 kernel; for
/// tests and benchmarks, [`matmul`] takes it under [`GemmPrecision::Bf16`]).
///
/// # Panics
/// If the CPU has no AVX512-BF16, the inner dimensions differ, or `packed` is not B's shape.
pub fn matmul_bf16(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    packed: Option<&PackedB<f32>>,
) -> Array2<f32> {
    let kernel = Kernel::bf16().expect("matmul_bf16: this CPU has no AVX512-BF16");
    product_bf16(kernel, a, b, packed)
}

/// C = A·B with the bf16 kernel; matrix-vector products (memory-bound: nothing to gain) and
/// empty ones stay in full precision.
fn product_bf16<T: Scalar>(
    kernel: Kernel<T, u32>,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    packed: Option<&PackedB<T>>,
) -> Array2<T> {
    check_shapes(a, b, packed);
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    if m <= 1 || n <= 1 || k == 0 {
        return matmul_with(Backend::selected(), a, b, packed);
    }
    let panels = match packed.map(|p| (&p.panels, p.blocking)) {
        Some((Panels::Bf16(data), blk)) if blk == kernel.blk => Some(data.as_slice()),
        _ => None,
    };
    product(kernel, a, b, panels)
}

/// C = A·B by a given backend in full precision (for tests and benchmarks; [`matmul`] picks
/// the backend and precision itself).
///
/// # Panics
/// If the inner dimensions differ, or `packed` is not B's shape.
pub fn matmul_with<T: Scalar>(
    backend: Backend,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    packed: Option<&PackedB<T>>,
) -> Array2<T> {
    check_shapes(a, b, packed);
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let isa = match backend {
        Backend::Packed(isa) if m > 1 && n > 1 && k > 0 => isa,
        // Matrix-vector products: a tile would be mostly padding.
        Backend::Packed(_) if k > 0 => return matvec_product(a, b),
        _ => return matmul_matrixmultiply(a, b),
    };
    let kernel = Kernel::full(isa);
    let panels = match packed.map(|p| (&p.panels, p.blocking)) {
        Some((Panels::Full(i, data), blk)) if *i == isa && blk == kernel.blk => {
            Some(data.as_slice())
        }
        _ => None,
    };
    product(kernel, a, b, panels)
}

/// Panics unless A·B is defined and `packed` holds B's shape.
fn check_shapes<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>, packed: Option<&PackedB<T>>) {
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
}

/// C = A·B with `kernel` (m, n > 1, k > 0), B read from `panels` when it was pre-packed for
/// this kernel, the tiles of C split across threads.
fn product<T: Scalar, P: Copy + Send + Sync>(
    kernel: Kernel<T, P>,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    panels: Option<&[P]>,
) -> Array2<T> {
    let _flush = super::FlushDenormals::new();
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let blk = kernel.blk;
    let rhs = match panels {
        Some(data) => Rhs::Packed(data),
        None => Rhs::Raw(Strided::of(b)),
    };
    let col_panels = n.div_ceil(blk.nr);
    let row_panels = m.div_ceil(blk.mr);
    // Threads split C by whole tiles. Each thread packs the parts of A and B it reads, so one
    // operand is packed by every thread: split the rows when B is pre-packed or A is the
    // larger operand (each thread then packs only its rows of A), else the columns.
    let by_rows = matches!(rhs, Rhs::Packed(_)) || m > n;
    let units = if by_rows { row_panels } else { col_panels };
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
            ((u0 * blk.mr, (u1 * blk.mr).min(m)), (0, col_panels))
        } else {
            ((0, m), (u0, u1))
        }
    };
    let run = |t: usize| {
        let _flush = super::FlushDenormals::new();
        let (rows, cols) = share(t);
        gemm_block(kernel, (k, n), a, rhs, out, rows, cols)
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
