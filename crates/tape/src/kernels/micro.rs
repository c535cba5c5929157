//! Register-blocked GEMM micro-kernels for x86-64: AVX-512 and AVX2 + FMA, f32 and f64, and
//! AVX512-BF16 (f32 sums of bf16 operands).
//!
//! A micro-kernel computes one MR×NR tile of C from a packed panel of A (k steps of MR values,
//! one column of the tile's rows each) and a packed panel of B (k steps of NR values, one row
//! of the tile's columns each):
//!
//! ```text
//! acc[i][j] = Σ_p Ã[p][i] · B̃[p][j]        (p = 0 … k−1, in this order, one FMA each)
//! C[i][j]   = acc[i][j]                      (first block of k)
//! C[i][j]   = C[i][j] + acc[i][j]            (later blocks)
//! ```
//!
//! The tile's accumulators live in registers: NR/lanes vectors per row, MR rows. Every element
//! goes through the same FMA chain whether its tile is full or at an edge (edges are computed
//! in full on zero-padded panels and only the valid part is stored), so a result does not
//! depend on where the tile boundaries fall — that is what keeps the threaded GEMM's bytes
//! independent of the thread count.
//!
//! The bf16 kernel's packed values are *pairs*: a `u32` holding two bf16 of consecutive steps of
//! k (the first in the low half). One `vdpbf16ps` adds both products of a pair to each f32
//! accumulator, so its "step" is two steps of k, and a panel of k steps holds ⌈k/2⌉ pairs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `C tile (rows×cols, row stride ldc) (+)= A·B̃` over `k` steps, B packed. A is packed (MR
/// values per step) when `lda` is 0, else read in place: row i of the tile at `a + i·lda`,
/// contiguous along k (only for full tiles: all MR rows must exist). `P` is the packed value:
/// the element type itself, or a bf16 pair (`u32`, one step = two steps of k).
pub(crate) type MicroFn<P, T = P> = unsafe fn(
    k: usize,
    a: *const P,
    lda: usize,
    b: *const P,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
    rows: usize,
    cols: usize,
);

/// Writes the accumulators of an MR×NR tile to C: directly when the tile is full, through a
/// buffer on the stack at edges. `$store` writes one vector to a pointer.
macro_rules! micro_kernel {
    (
        $(#[$doc:meta])*
        $name:ident, $feature:literal, $t:ty, $v:ty, lanes = $lanes:literal, mr = $mr:literal,
        nv = $nv:literal, zero = $zero:ident, splat = $splat:ident, load = $load:ident,
        fma = $fma:ident, add = $add:ident, store = $store:ident
    ) => {
        micro_kernel!(
            $(#[$doc])*
            $name, $feature, $t, $v, lanes = $lanes, mr = $mr, nv = $nv, zero = $zero,
            splat = $splat, load = $load, fma = $fma, add = $add, store = $store,
            packed = $t, operand = $v, load_b = $load
        );
    };
    (
        $(#[$doc:meta])*
        $name:ident, $feature:literal, $t:ty, $v:ty, lanes = $lanes:literal, mr = $mr:literal,
        nv = $nv:literal, zero = $zero:ident, splat = $splat:ident, load = $load:ident,
        fma = $fma:ident, add = $add:ident, store = $store:ident,
        packed = $p:ty, operand = $vb:ty, load_b = $load_b:ident
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// The CPU must have the target feature. `b` must hold `k·NR` readable values; `a` must
        /// hold `k·MR` values when `lda` is 0, else MR rows of `k` values `lda` apart; `c` must
        /// be writable at `rows` rows of `cols` values, `ldc` apart, with `rows ≤ MR`,
        /// `cols ≤ NR`, and `rows == MR` when `lda` is not 0. No other thread may touch that tile.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $name(
            k: usize,
            a: *const $p,
            lda: usize,
            b: *const $p,
            c: *mut $t,
            ldc: usize,
            accumulate: bool,
            rows: usize,
            cols: usize,
        ) {
            const MR: usize = $mr;
            const NV: usize = $nv;
            const NR: usize = NV * $lanes;
            // SAFETY: every pointer below stays inside the panels and the tile that the caller
            // vouches for (see # Safety); the intrinsics need the feature this function enables.
            unsafe {
            // Ask for the tile's rows of C now, so that they are in cache when the tile is
            // written after the k steps (each row is NR values: 128 bytes, two lines).
            for i in 0..MR {
                let row = c.wrapping_add(i * ldc);
                _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR - 1) as *const i8);
            }
            let mut acc: [[$v; NV]; MR] = [[$zero(); NV]; MR];
            // One step: acc[i][·] += A[i, p] · B̃[p, ·], A[i, p] at a + i·row + p·step.
            macro_rules! steps {
                ($row:expr, $step:expr) => {
                    let mut b = b;
                    for p in 0..k {
                        let bv: [$vb; NV] = std::array::from_fn(|j| $load_b(b.add(j * $lanes)));
                        for (i, row) in acc.iter_mut().enumerate() {
                            let ai = $splat(*a.add(i * $row + p * $step));
                            for (r, &bj) in row.iter_mut().zip(&bv) {
                                *r = $fma(ai, bj, *r);
                            }
                        }
                        b = b.add(NR);
                    }
                };
            }
            if lda == 0 {
                steps!(1, MR);
            } else {
                steps!(lda, 1);
            }
            if rows == MR && cols == NR {
                for (i, row) in acc.iter().enumerate() {
                    let ci = c.add(i * ldc);
                    for (j, &r) in row.iter().enumerate() {
                        let p = ci.add(j * $lanes);
                        let v = if accumulate { $add($load(p), r) } else { r };
                        $store(p, v);
                    }
                }
            } else {
                let mut tile = [0 as $t; MR * NR];
                for (i, row) in acc.iter().enumerate() {
                    for (j, &r) in row.iter().enumerate() {
                        $store(tile.as_mut_ptr().add(i * NR + j * $lanes), r);
                    }
                }
                for i in 0..rows {
                    let ci = c.add(i * ldc);
                    for j in 0..cols {
                        let v = tile[i * NR + j];
                        *ci.add(j) = if accumulate { *ci.add(j) + v } else { v };
                    }
                }
            }
            }
        }
    };
}

micro_kernel!(
    /// f32, AVX-512: 12 rows × 32 columns (24 zmm accumulators).
    f32_avx512, "avx512f", f32, __m512, lanes = 16, mr = 12, nv = 2,
    zero = _mm512_setzero_ps, splat = _mm512_set1_ps, load = _mm512_loadu_ps,
    fma = _mm512_fmadd_ps, add = _mm512_add_ps, store = _mm512_storeu_ps
);

micro_kernel!(
    /// f64, AVX-512: 12 rows × 16 columns (24 zmm accumulators).
    f64_avx512, "avx512f", f64, __m512d, lanes = 8, mr = 12, nv = 2,
    zero = _mm512_setzero_pd, splat = _mm512_set1_pd, load = _mm512_loadu_pd,
    fma = _mm512_fmadd_pd, add = _mm512_add_pd, store = _mm512_storeu_pd
);

micro_kernel!(
    /// f32, AVX2 + FMA: 6 rows × 16 columns (12 ymm accumulators).
    f32_avx2, "avx2,fma", f32, __m256, lanes = 8, mr = 6, nv = 2,
    zero = _mm256_setzero_ps, splat = _mm256_set1_ps, load = _mm256_loadu_ps,
    fma = _mm256_fmadd_ps, add = _mm256_add_ps, store = _mm256_storeu_ps
);

micro_kernel!(
    /// f64, AVX2 + FMA: 6 rows × 8 columns (12 ymm accumulators).
    f64_avx2, "avx2,fma", f64, __m256d, lanes = 4, mr = 6, nv = 2,
    zero = _mm256_setzero_pd, splat = _mm256_set1_pd, load = _mm256_loadu_pd,
    fma = _mm256_fmadd_pd, add = _mm256_add_pd, store = _mm256_storeu_pd
);

/// Two bf16 (a pair of steps of k) broadcast to all 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
fn splat_pair(pair: u32) -> __m512bh {
    // SAFETY: both are 512 bits of plain data; any bit pattern is a valid __m512bh.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair as i32)) }
}

/// 16 pairs of bf16 (16 columns, two steps of k each) from `p`.
///
/// # Safety
/// `p` must hold 16 readable `u32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn load_pairs(p: *const u32) -> __m512bh {
    // SAFETY: the caller vouches for 64 readable bytes; any bit pattern is a valid __m512bh.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p as *const __m512i)) }
}

/// acc + a₀·b₀ + a₁·b₁ in every lane (`vdpbf16ps`; the products are exact in f32).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
fn dot_pairs(a: __m512bh, b: __m512bh, acc: __m512) -> __m512 {
    _mm512_dpbf16_ps(acc, a, b)
}

micro_kernel!(
    /// f32 sums of bf16 operands, AVX512-BF16: 12 rows × 32 columns (24 zmm accumulators),
    /// `k` counts pairs of steps.
    bf16_avx512, "avx512f,avx512bf16", f32, __m512, lanes = 16, mr = 12, nv = 2,
    zero = _mm512_setzero_ps, splat = splat_pair, load = _mm512_loadu_ps,
    fma = dot_pairs, add = _mm512_add_ps, store = _mm512_storeu_ps,
    packed = u32, operand = __m512bh, load_b = load_pairs
);
