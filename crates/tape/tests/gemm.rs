//! The GEMM kernels against ndarray's product: every backend this CPU can run, f32 and f64,
//! transposed operands, pre-packed right-hand operands, edge sizes, and thread counts.

use ndarray::{Array2, ArrayView2};
use reveal_tape::check::{randn, Rng};
use reveal_tape::kernels::gemm::{matmul_with, with_backend, Backend, PackedB};
use reveal_tape::kernels::Isa;
use reveal_tape::{Constant, Scalar, Tape};

/// Sizes around the tile and block edges: 1, below and above MR and NR, above KC, and 4097.
const SIDES: [usize; 6] = [1, 7, 17, 33, 300, 4097];

/// Largest |a − b| relative to the largest |b|.
fn rel_err<T: Scalar>(a: &Array2<T>, b: &Array2<T>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let scale = b
        .iter()
        .fold(0.0f64, |m, v| m.max(v.as_f64().abs()))
        .max(1e-30);
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x.as_f64() - y.as_f64()).abs()));
    err / scale
}

fn view(a: &Array2<f64>, t: bool) -> ArrayView2<'_, f64> {
    if t {
        a.t()
    } else {
        a.view()
    }
}

/// m×k·k×n for one backend and one transpose combination; op(A), op(B) random.
fn check_product<T: Scalar>(
    backend: Backend,
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
    seed: u64,
) {
    let mut rng = Rng::seed(seed);
    let a64 = randn(if ta { (k, m) } else { (m, k) }, &mut rng);
    let b64 = randn(if tb { (n, k) } else { (k, n) }, &mut rng);
    let want = view(&a64, ta).dot(&view(&b64, tb));
    let (a, b) = (a64.mapv(T::from_f64), b64.mapv(T::from_f64));
    let (av, bv) = (
        if ta { a.t() } else { a.view() },
        if tb { b.t() } else { b.view() },
    );
    let got = matmul_with(backend, av, bv, None);
    // f32 sums of up to 4097 products of unit normals: relative error well under 1e-4.
    let tol = if T::NAME == "f32" { 1e-4 } else { 1e-12 };
    let err = rel_err(&got.mapv(|v| v.as_f64()), &want);
    assert!(
        err < tol,
        "{} {m}×{k}·{k}×{n} ta {ta} tb {tb}: relative error {err:.2e}",
        backend.name()
    );
    if let Backend::Packed(isa) = backend {
        // The pre-packed right-hand operand gives the same bytes as packing on the fly.
        let packed = PackedB::for_isa(bv, isa);
        assert_eq!(
            matmul_with(backend, av, bv, Some(&packed)),
            got,
            "{} {m}×{k}·{k}×{n}: pre-packed differs",
            backend.name()
        );
    }
}

#[test]
fn every_backend_matches_ndarray_at_edge_sizes() {
    let mut seed = 0;
    for backend in Backend::available() {
        for &m in &SIDES {
            for &k in &SIDES {
                for &n in &SIDES {
                    // Keep the cube small: at most one side is 4097 or 300.
                    if [m, k, n].iter().filter(|&&s| s >= 300).count() > 1 {
                        continue;
                    }
                    let (ta, tb) = (seed % 2 == 1, seed % 3 == 1);
                    check_product::<f32>(backend, (m, k, n), ta, tb, seed);
                    check_product::<f64>(backend, (m, k, n), tb, ta, seed);
                    seed += 1;
                }
            }
        }
    }
}

#[test]
fn every_transpose_combination_at_a_threaded_size() {
    for backend in Backend::available() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check_product::<f32>(backend, (130, 257, 190), ta, tb, 7);
            check_product::<f64>(backend, (130, 257, 190), ta, tb, 8);
        }
    }
}

/// The same bytes with one thread as with several, for both splits (rows when B is pre-packed
/// or A is taller, columns otherwise).
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::seed(3);
    let run = |threads: usize, backend: Backend, a: &Array2<f32>, b: &Array2<f32>, pre: bool| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let packed = match (backend, pre) {
                (Backend::Packed(isa), true) => Some(PackedB::for_isa(b.view(), isa)),
                _ => None,
            };
            matmul_with(backend, a.view(), b.view(), packed.as_ref())
        })
    };
    for (m, k, n) in [
        (300, 200, 150),
        (150, 200, 300),
        (40_000, 3, 1),
        (1, 3, 40_000),
    ] {
        let a = randn((m, k), &mut rng).mapv(|v| v as f32);
        let b = randn((k, n), &mut rng).mapv(|v| v as f32);
        for backend in Backend::available() {
            for pre in [false, true] {
                let one = run(1, backend, &a, &b, pre);
                for threads in [2, 3] {
                    assert_eq!(
                        run(threads, backend, &a, &b, pre),
                        one,
                        "{} {threads} threads",
                        backend.name()
                    );
                }
            }
        }
    }
}

/// A [`Constant`] on the tape is packed once and its products equal those of a plain leaf.
#[test]
fn products_with_a_shared_constant_equal_plain_ones() {
    let mut rng = Rng::seed(4);
    let w = randn((120, 90), &mut rng).mapv(|v| v as f32);
    let x = randn((200, 90), &mut rng).mapv(|v| v as f32);
    let g = randn((200, 120), &mut rng).mapv(|v| v as f32);
    let shared = std::sync::Arc::new(Constant::new(w.clone()));
    for backend in Backend::available() {
        with_backend(backend, || {
            for _ in 0..2 {
                let tape = Tape::new();
                let (xv, gv) = (tape.var(x.clone()), tape.var(g.clone()));
                let (plain, constant) = (tape.var(w.clone()), tape.shared(&shared));
                // X·Wᵀ and G·W: the weight as a right-hand operand, transposed and not.
                assert_eq!(
                    *xv.matmul_t(constant, false, true).value(),
                    *xv.matmul_t(plain, false, true).value()
                );
                assert_eq!(*gv.matmul(constant).value(), *gv.matmul(plain).value());
            }
        });
    }
}

#[test]
fn the_avx2_kernel_is_offered_wherever_avx512_is() {
    // A CPU with AVX-512F has AVX2 and FMA too: a machine that runs one kernel tests both.
    if Isa::Avx512.available() {
        assert!(Isa::Avx2.available());
    }
    assert_eq!(
        *Backend::available().last().unwrap(),
        Backend::MatrixMultiply
    );
}

#[cfg(target_arch = "x86_64")]
/// The kernels flush denormal results to zero (and read denormal inputs as zero), while the
/// calling thread's own mode is left as it was.
#[test]
fn kernels_flush_denormals_and_restore_the_thread_mode() {
    let tiny = f32::MIN_POSITIVE / 8.0; // a denormal
    let half = |v: f32| std::hint::black_box(v) * 0.5;
    assert!(half(tiny) > 0.0, "outside the kernels denormals are kept");
    let a = Array2::from_elem((3, 70_000), tiny); // long enough to run on several threads
    assert!(reveal_tape::kernels::map(&a, half)
        .iter()
        .all(|&v| v == 0.0));
    let b = Array2::from_elem((2, 2), 1e-20f32);
    let c = matmul_with(Backend::selected(), b.view(), b.view(), None);
    assert!(c.iter().all(|&v| v == 0.0), "1e-40 in a product: {c:?}");
    {
        let _flush = reveal_tape::kernels::FlushDenormals::new();
        assert_eq!(half(tiny), 0.0);
    }
    assert!(
        half(tiny) > 0.0,
        "the mode is restored when the guard drops"
    );
}

/// Views with negative strides (rows or columns reversed, as `slice(s![..;-1, ..])` gives) go
/// through every backend and every path — matrix-vector products included — to ndarray's
/// product. (The matrix-vector path once clamped a negative row stride to 0 and read row 0 for
/// every output.)
#[test]
fn reversed_views_multiply_right_on_every_backend() {
    use ndarray::s;
    let mut rng = Rng::seed(41);
    for backend in Backend::available() {
        for (m, k, n) in [(9, 5, 1), (1, 6, 8), (13, 7, 11), (5, 1, 4)] {
            let a = randn((m, k), &mut rng);
            let b = randn((k, n), &mut rng);
            for (ra, ca, rb, cb) in [
                (true, false, false, false),
                (false, true, false, false),
                (false, false, true, false),
                (false, false, false, true),
                (true, true, true, true),
            ] {
                fn flip(x: &Array2<f64>, r: bool, c: bool) -> ArrayView2<'_, f64> {
                    let v = x.view();
                    match (r, c) {
                        (true, true) => v.slice_move(s![..;-1, ..;-1]),
                        (true, false) => v.slice_move(s![..;-1, ..]),
                        (false, true) => v.slice_move(s![.., ..;-1]),
                        (false, false) => v,
                    }
                }
                let (av, bv) = (flip(&a, ra, ca), flip(&b, rb, cb));
                let want = av.dot(&bv);
                let got = matmul_with(backend, av, bv, None);
                assert!(
                    rel_err(&got, &want) < 1e-12,
                    "{} {m}×{k}·{k}×{n} reversed (A rows {ra}, cols {ca}; B rows {rb}, cols {cb}): {:e}",
                    backend.name(),
                    rel_err(&got, &want)
                );
            }
        }
    }
}
