//! The bf16 products (`GemmPrecision::Bf16`): operands rounded to the nearest bf16, products
//! summed in f32 by the AVX512-BF16 kernel. On a CPU without AVX512-BF16 the kernel tests say
//! so on stderr and pass without running.

use ndarray::{Array2, ArrayView2};
use reveal_tape::check::{randn, Rng};
use reveal_tape::kernels::gemm::{
    cpu_name, from_bf16, matmul, matmul_bf16, matmul_with, to_bf16, with_precision, Backend,
    GemmPrecision, PackedB,
};
use reveal_tape::{Constant, Tape};

/// Whether this CPU runs the bf16 kernel; says so on stderr when it does not.
fn bf16_kernel_here(test: &str) -> bool {
    let here = GemmPrecision::Bf16.available();
    if !here {
        eprintln!(
            "SKIPPED {test}: this CPU ({}) has no AVX512-BF16",
            cpu_name()
        );
    }
    here
}

/// x rounded to bf16 the long way: of the two bf16 around x (its f32 bits cut to the upper 16,
/// and the next one away from zero), the nearer, on a tie the one with an even last bit.
fn nearest_bf16(x: f32) -> f32 {
    let below = f32::from_bits(x.to_bits() & 0xffff_0000);
    let above = f32::from_bits((x.to_bits() & 0xffff_0000) + 0x1_0000);
    let (d_below, d_above) = (
        (x as f64 - below as f64).abs(),
        (above as f64 - x as f64).abs(),
    );
    if d_below < d_above || (d_below == d_above && (below.to_bits() >> 16) & 1 == 0) {
        below
    } else {
        above
    }
}

#[test]
fn to_bf16_rounds_to_the_nearest_and_ties_to_even() {
    let mut rng = Rng::seed(1);
    let mut xs: Vec<f32> = randn((1, 20_000), &mut rng)
        .iter()
        .map(|&v| (v * 1e3) as f32)
        .collect();
    // Ties (the lower 16 bits exactly 0x8000) with even and odd upper halves, signs, limits.
    xs.extend([
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        -(1.0 + 3.0 * 2f32.powi(-8)),
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        1e-42,
        3.0e38,
    ]);
    for x in xs {
        let got = from_bf16(to_bf16(x));
        assert_eq!(got.to_bits(), nearest_bf16(x).to_bits(), "{x:e} → {got:e}");
    }
    assert_eq!(
        from_bf16(to_bf16(1.0 + 2f32.powi(-8))),
        1.0,
        "tie to even, down"
    );
    assert_eq!(
        from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
        1.0 + 2f32.powi(-6),
        "tie, up"
    );
    assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    assert_eq!(
        from_bf16(to_bf16(f32::MAX)),
        f32::INFINITY,
        "past bf16's largest"
    );
    for nan in [
        f32::NAN,
        f32::from_bits(0x7fff_ffff),
        f32::from_bits(0xff80_0001),
    ] {
        assert!(from_bf16(to_bf16(nan)).is_nan(), "{:#x}", nan.to_bits());
    }
}

/// f64 product of the operands rounded to bf16: what the kernel computes, but for its f32
/// sums.
fn rounded_product(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f64> {
    let r = |x: &f32| from_bf16(to_bf16(*x)) as f64;
    a.map(r).dot(&b.map(r))
}

/// Largest |got − want| relative to the largest |want|.
fn rel_err(got: &Array2<f32>, want: &Array2<f64>) -> f64 {
    let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y).abs()));
    err / scale
}

/// Sizes around the tile (12×32) and the pairs of k: odd and even k, 1, edges, a block of k
/// past KC, all four transpose combinations.
#[test]
fn bf16_products_are_f32_sums_of_the_rounded_operands() {
    if !bf16_kernel_here("bf16_products_are_f32_sums_of_the_rounded_operands") {
        return;
    }
    let mut rng = Rng::seed(2);
    let mut case = 0;
    for (m, k, n) in [
        (2, 1, 2),
        (13, 3, 33),
        (12, 32, 32),
        (25, 2, 65),
        (7, 17, 40),
        (130, 257, 190),
        (40, 2049, 35),
        (300, 4097, 20),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = randn(if ta { (k, m) } else { (m, k) }, &mut rng).mapv(|v| v as f32);
            let b = randn(if tb { (n, k) } else { (k, n) }, &mut rng).mapv(|v| v as f32);
            let av = if ta { a.t() } else { a.view() };
            let bv = if tb { b.t() } else { b.view() };
            let got = matmul_bf16(av, bv, None);
            // f32 sums of ≤ 4097 products: well under 1e-4 of the largest output. Sums of the
            // unrounded operands differ by ~1e-3 (bf16 keeps 8 significant bits).
            let err = rel_err(&got, &rounded_product(av, bv));
            assert!(err < 1e-4, "{m}×{k}·{k}×{n} ta {ta} tb {tb}: {err:.2e}");
            let unrounded = rel_err(&got, &av.mapv(f64::from).dot(&bv.mapv(f64::from)));
            assert!(
                k < 3 || unrounded > 1e-4,
                "{m}×{k}·{k}×{n}: within {unrounded:.1e} of the f32 product: not rounded?"
            );
            case += 1;
        }
    }
    assert_eq!(case, 32);
}

/// 1 + 3·2⁻⁸ is a tie between two bf16 and rounds up to 1 + 2⁻⁶: a product of k such values
/// with ones is exactly k·(1 + 2⁻⁶), not the f32 product k·(1 + 3·2⁻⁸).
#[test]
fn bf16_products_round_each_operand() {
    if !bf16_kernel_here("bf16_products_round_each_operand") {
        return;
    }
    for k in [1, 2, 5, 64] {
        let a = Array2::from_elem((14, k), 1.0 + 3.0 * 2f32.powi(-8));
        let b = Array2::from_elem((k, 40), 1.0f32);
        let c = matmul_bf16(a.view(), b.view(), None);
        assert!(
            c.iter().all(|&v| v == k as f32 * (1.0 + 2f32.powi(-6))),
            "k {k}: {}",
            c[[0, 0]]
        );
    }
}

/// B pre-packed gives the same bytes as B packed on the fly, and so do 1, 2 and 3 threads, for
/// both splits (rows when B is pre-packed or A is taller, columns otherwise).
#[test]
fn bf16_results_do_not_depend_on_packing_or_threads() {
    if !bf16_kernel_here("bf16_results_do_not_depend_on_packing_or_threads") {
        return;
    }
    let mut rng = Rng::seed(3);
    for (m, k, n) in [(300, 201, 150), (150, 200, 300), (30, 1100, 70)] {
        let a = randn((m, k), &mut rng).mapv(|v| v as f32);
        let b = randn((k, n), &mut rng).mapv(|v| v as f32);
        let packed = with_precision(GemmPrecision::Bf16, || PackedB::new(b.view()));
        let run = |threads: usize, pre: bool| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| matmul_bf16(a.view(), b.view(), packed.as_ref().filter(|_| pre)))
        };
        let one = run(1, false);
        for (threads, pre) in [(1, true), (2, false), (2, true), (3, false), (3, true)] {
            assert_eq!(
                run(threads, pre),
                one,
                "{m}×{k}·{k}×{n}: {threads} threads, pre-packed {pre}"
            );
        }
    }
}

/// Under `with_precision(Bf16)` the tape's f32 products are the bf16 kernel's — weights on the
/// tape as packed constants too — and f64 products (the checks) stay f64.
#[test]
fn the_selected_precision_rounds_f32_products_only() {
    if !bf16_kernel_here("the_selected_precision_rounds_f32_products_only") {
        return;
    }
    let mut rng = Rng::seed(4);
    let w64 = randn((120, 90), &mut rng);
    let x64 = randn((200, 90), &mut rng);
    let (w, x) = (w64.mapv(|v| v as f32), x64.mapv(|v| v as f32));
    let want = matmul_bf16(x.view(), w.t(), None);
    let shared = std::sync::Arc::new(Constant::new(w.clone()));
    with_precision(GemmPrecision::Bf16, || {
        assert_eq!(matmul(x.view(), w.t(), None), want);
        let tape = Tape::new();
        let xv = tape.var(x.clone());
        let (plain, constant) = (tape.var(w.clone()), tape.shared(&shared));
        assert_eq!(*xv.matmul_t(plain, false, true).value(), want);
        assert_eq!(*xv.matmul_t(constant, false, true).value(), want);
        // f64: the full-precision product, to the last bit.
        let full = matmul_with(Backend::selected(), x64.view(), w64.t(), None);
        assert_eq!(matmul(x64.view(), w64.t(), None), full);
    });
    // Outside, f32 products are full precision again.
    assert_ne!(matmul(x.view(), w.t(), None), want);
}

#[test]
fn selecting_bf16_on_a_cpu_without_it_is_an_error_naming_the_cpu() {
    assert!(GemmPrecision::F32.select().is_ok());
    if !GemmPrecision::Bf16.available() {
        let e = GemmPrecision::Bf16.select().unwrap_err();
        assert!(e.contains("AVX512-BF16") && e.contains(&cpu_name()), "{e}");
        assert_eq!(GemmPrecision::selected(), GemmPrecision::F32);
    } else {
        eprintln!("(this CPU has AVX512-BF16: the refusal is not exercised here)");
    }
}
