//! Every op at first and second order against central differences, over random shapes and values,
//! plus properties of the sweep that need no finite differences.

use ndarray::{array, Array2};
use proptest::prelude::*;
use reveal_tape::check::{gradcheck, gradgradcheck, randn, Mismatch, Rng};
use reveal_tape::scalar::sigmoid;
use reveal_tape::{grad, Tape, Var};

/// A matrix of the given shape with entries in [-2, 2].
fn mat(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f64>> {
    prop::collection::vec(-2.0f64..2.0, rows * cols)
        .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).unwrap())
}

fn side() -> impl Strategy<Value = usize> {
    1usize..=5
}

/// One matrix of a random shape.
fn one() -> impl Strategy<Value = Array2<f64>> {
    (side(), side()).prop_flat_map(|(r, c)| mat(r, c))
}

/// Two matrices of the same random shape.
fn two() -> impl Strategy<Value = (Array2<f64>, Array2<f64>)> {
    (side(), side()).prop_flat_map(|(r, c)| (mat(r, c), mat(r, c)))
}

/// Runs gradcheck and gradgradcheck of a function of several inputs.
fn both<F>(f: F, inputs: &[Array2<f64>]) -> Result<(), Mismatch>
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>> + Clone,
{
    gradcheck(f.clone(), inputs, 1)?;
    gradgradcheck(f, inputs, 2)
}

/// Shorthand for the check of one op, with a readable failure.
macro_rules! check_op {
    ($($input:expr),+; |$v:ident| $body:expr) => {{
        let inputs = vec![$($input.clone()),+];
        let r = both(|_t, $v| vec![$body], &inputs);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }};
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn add((a, b) in two()) { check_op!(a, b; |v| v[0] + v[1]); }

    #[test]
    fn sub((a, b) in two()) { check_op!(a, b; |v| v[0] - v[1]); }

    #[test]
    fn mul((a, b) in two()) { check_op!(a, b; |v| v[0] * v[1]); }

    #[test]
    fn scale_offset_neg(a in one(), c in -3.0f64..3.0) {
        check_op!(a; |v| v[0].scale(c));
        check_op!(a; |v| v[0].offset(c));
        check_op!(a; |v| -v[0]);
    }

    #[test]
    fn matmul_all_transposes(m in side(), k in side(), n in side(), seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = randn(if ta { (k, m) } else { (m, k) }, &mut rng);
            let b = randn(if tb { (n, k) } else { (k, n) }, &mut rng);
            check_op!(a, b; |v| v[0].matmul_t(v[1], ta, tb));
        }
    }

    #[test]
    fn transpose(a in one()) { check_op!(a; |v| v[0].t()); }

    #[test]
    fn broadcasts(r in side(), c in side(), n in side(), seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        check_op!(randn((1, c), &mut rng); |v| v[0].broadcast_rows(n));
        check_op!(randn((r, 1), &mut rng); |v| v[0].broadcast_cols(n));
        check_op!(randn((1, 1), &mut rng); |v| v[0].broadcast_scalar(r, c));
    }

    #[test]
    fn sums(a in one()) {
        check_op!(a; |v| v[0].sum());
        check_op!(a; |v| v[0].sum_rows());
        check_op!(a; |v| v[0].sum_cols());
    }

    /// The fused broadcasts: a row or a column applied to every row or column.
    #[test]
    fn row_and_column_ops(r in side(), c in side(), seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        let a = randn((r, c), &mut rng);
        let (row, col) = (randn((1, c), &mut rng), randn((r, 1), &mut rng));
        check_op!(a, row; |v| v[0].add_row(v[1]));
        check_op!(a, row; |v| v[0].mul_row(v[1]));
        check_op!(a, col; |v| v[0].mul_col(v[1]));
        // They equal their unfused forms exactly.
        let tape = Tape::new();
        let (x, rv, cv) = (tape.var(a), tape.var(row), tape.var(col));
        prop_assert_eq!(&*x.add_row(rv).value(), &*(x + rv.broadcast_rows(r)).value());
        prop_assert_eq!(&*x.mul_row(rv).value(), &*(x * rv.broadcast_rows(r)).value());
        prop_assert_eq!(&*x.mul_col(cv).value(), &*(x * cv.broadcast_cols(c)).value());
    }

    /// The fused products of the backward passes: x ⊙ mask(z), x ⊙ σ(αz), x ⊙ α·σ'(αz). The
    /// mask's z is an input too: its gradient must be zero, as the finite differences say
    /// away from the mask's edges.
    #[test]
    fn fused_backward_products((r, c) in (side(), side()), x in mat(5, 5), alpha in 0.5f64..20.0, seed in any::<u64>()) {
        let z = kinkless(r, c, seed);
        let x = x.slice(ndarray::s![..r, ..c]).to_owned();
        check_op!(x, z; |v| v[0].mask(v[1], -0.05, 0.05));
        check_op!(x, z; |v| v[0].mask(v[1], f64::NEG_INFINITY, 0.0));
        check_op!(x, z; |v| v[0].sigmoid_scale(v[1], alpha));
        check_op!(x, z; |v| v[0].sigmoid_prime_scale(v[1], alpha));
        let tape = Tape::new();
        let (xv, zv) = (tape.var(x.clone()), tape.var(z.clone()));
        let s = z.mapv(|t| sigmoid(alpha * t));
        prop_assert_eq!(&*xv.mask(zv, f64::NEG_INFINITY, 0.0).value(), &(&x * &z.mapv(|t| if t > 0.0 { 1.0 } else { 0.0 })));
        let close = |a: &Array2<f64>, b: &Array2<f64>| (a - b).iter().all(|e| e.abs() < 1e-14);
        prop_assert!(close(&xv.sigmoid_scale(zv, alpha).value(), &(&x * &s)));
        prop_assert!(close(&xv.sigmoid_prime_scale(zv, alpha).value(), &(&x * &s.mapv(|t| alpha * t * (1.0 - t)))));
    }

    #[test]
    fn relu((r, c) in (side(), side()), seed in any::<u64>()) {
        let a = kinkless(r, c, seed);
        check_op!(a; |v| v[0].relu());
    }

    #[test]
    fn excess((r, c) in (side(), side()), seed in any::<u64>()) {
        // Away from the kinks at ±1: shift the kinkless values so some lie beyond ±1.
        let a = kinkless(r, c, seed).mapv(|t| t * 1.5 + if t > 0.0 { 0.4 } else { -0.4 });
        prop_assume!(a.iter().all(|t| (t.abs() - 1.0).abs() > 0.05));
        check_op!(a; |v| v[0].excess(-1.0, 1.0) * v[0]);
        let tape = Tape::new();
        let x = tape.var(a.clone());
        let relu_form = (x.offset(-1.0).relu().square().sum() + (-x).offset(-1.0).relu().square().sum()).item();
        prop_assert!((x.excess(-1.0, 1.0).square().sum().item() - relu_form).abs() < 1e-12);
    }

    #[test]
    fn sigmoid_softplus(a in one()) {
        check_op!(a; |v| v[0].sigmoid());
        check_op!(a; |v| v[0].softplus());
    }

    /// The ops of the cross-entropy loss: eᵃ and the row-wise log-sum-exp, whose value must also
    /// hold where the naive form overflows (every entry shifted by 1000).
    #[test]
    fn exp_logsumexp(a in one()) {
        check_op!(a; |v| v[0].exp());
        check_op!(a; |v| v[0].logsumexp());
        check_op!(a; |v| v[0].logsumexp() * v[0].logsumexp());
        let tape = Tape::new();
        let naive = a.mapv(f64::exp).sum_axis(ndarray::Axis(1)).mapv(f64::ln);
        let shifted = tape.var(a.mapv(|t| t + 1000.0)).logsumexp().value();
        for (s, n) in shifted.iter().zip(&naive) {
            prop_assert!((s - 1000.0 - n).abs() < 1e-9, "{s} − 1000 vs {n}");
        }
    }

    /// Products make the second-order terms of relu nontrivial: (relu(a) ⊙ b)
    #[test]
    fn relu_in_product((r, c) in (side(), side()), b in mat(5, 5), seed in any::<u64>()) {
        let a = kinkless(r, c, seed);
        let b = b.slice(ndarray::s![..r, ..c]).to_owned();
        check_op!(a, b; |v| v[0].relu() * v[1] * v[1]);
    }

    /// The modified ReLU, check (a) of docs/DESIGN.md §2: its forward value is relu(z) exactly and the
    /// gradient of Σ r⊙mrelu(z) is exactly r⊙σ(αz); that rule is differentiable and its own
    /// derivative, α·σ·(1−σ), passes gradcheck (in z and in r).
    #[test]
    fn mrelu((r, c) in (side(), side()), up in mat(5, 5), alpha in 0.5f64..30.0, seed in any::<u64>()) {
        let z = kinkless(r, c, seed);
        let up = up.slice(ndarray::s![..r, ..c]).to_owned();
        let tape = Tape::new();
        let zv = tape.var(z.clone());
        let y = zv.mrelu(alpha);
        prop_assert_eq!(&*y.value(), &z.mapv(|t| t.max(0.0)));
        let g = grad((y * tape.constant(up.clone())).sum(), &[zv], false)[0];
        let expected = &up * &z.mapv(|t| sigmoid(alpha * t));
        prop_assert_eq!(&*g.value(), &expected);

        let rule = gradcheck(
            |_t, v| vec![grad((v[0].mrelu(alpha) * v[1]).sum(), &[v[0]], true)[0]],
            &[z, up],
            3,
        );
        prop_assert!(rule.is_ok(), "{}", rule.unwrap_err());
    }

    /// Accumulation into a node used twice: ∂(x⊙x)/∂x = 2x, with no finite differences.
    #[test]
    fn square_gives_two_x(a in one()) {
        let tape = Tape::new();
        let x = tape.var(a.clone());
        let g = grad((x * x).sum(), &[x], false)[0];
        prop_assert_eq!(&*g.value(), &(&a * 2.0));
    }

    /// ∂/∂a Σ a⊙b = b exactly.
    #[test]
    fn grad_of_inner_product_is_other((a, b) in two()) {
        let tape = Tape::new();
        let (x, y) = (tape.var(a), tape.var(b.clone()));
        let g = grad((x * y).sum(), &[x], false)[0];
        prop_assert_eq!(&*g.value(), &b);
    }

    /// Hessian symmetry through double backward: uᵀ(Hv) = vᵀ(Hu) for a smooth scalar function.
    #[test]
    fn hessian_is_symmetric(n in side(), k in side(), seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        let (w, x0) = (randn((k, n), &mut rng), randn((n, 1), &mut rng));
        let (u, v) = (randn((n, 1), &mut rng), randn((n, 1), &mut rng));
        let hvp = |dir: &Array2<f64>| {
            let tape = Tape::new();
            let x = tape.var(x0.clone());
            let f = (tape.constant(w.clone()).matmul(x).softplus() * x.sum().broadcast_scalar(k, 1)).sum();
            let g = grad(f, &[x], true)[0];
            let h = grad((g * tape.constant(dir.clone())).sum(), &[x], false)[0];
            #[allow(clippy::let_and_return)] // the value must be copied out before the tape drops
            let out = (*h.value()).clone();
            out
        };
        let (hu, hv) = (hvp(&u), hvp(&v));
        let (uhv, vhu) = ((&u * &hv).sum(), (&v * &hu).sum());
        prop_assert!((uhv - vhu).abs() <= 1e-12 * (1.0 + uhv.abs()), "uᵀHv {uhv} vs vᵀHu {vhu}");
    }
}

/// A matrix away from the kink, from a seed.
fn kinkless(r: usize, c: usize, seed: u64) -> Array2<f64> {
    let mut rng = Rng::seed(seed);
    randn((r, c), &mut rng).mapv(|t| {
        if t.abs() < 0.1 {
            t.signum() * 0.1 + t
        } else {
            t
        }
    })
}

#[test]
fn kinkless_is_off_kink() {
    for seed in 0..20 {
        assert!(kinkless(5, 5, seed).iter().all(|t| t.abs() >= 0.1));
    }
}

#[test]
fn softplus_never_overflows_in_f32() {
    let tape = Tape::<f32>::new();
    let x = tape.var(array![[-1000.0f32, -100.0, 0.0, 100.0, 1000.0]]);
    let y = x.softplus();
    let v = y.value();
    assert!(v.iter().all(|t| t.is_finite()), "{v:?}");
    assert_eq!(v[[0, 4]], 1000.0);
    assert_eq!(v[[0, 0]], 0.0);
    assert!((v[[0, 2]] - std::f32::consts::LN_2).abs() < 1e-7);
    let s = x.sigmoid();
    let s = s.value();
    assert!(
        s.iter().all(|t| t.is_finite() && (0.0..=1.0).contains(t)),
        "{s:?}"
    );
    assert_eq!((s[[0, 2]], s[[0, 4]]), (0.5, 1.0));
}

#[test]
#[should_panic(expected = "grad: y must be [1, 1], got (2, 3)")]
fn grad_of_non_scalar_panics_with_shape() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Array2::zeros((2, 3)));
    let _ = grad(x.relu(), &[x], false);
}

#[test]
#[should_panic(expected = "shapes (2, 3) and (3, 2) differ")]
fn shape_mismatch_names_both_shapes() {
    let tape = Tape::<f64>::new();
    let _ = tape.var(Array2::zeros((2, 3))) + tape.var(Array2::zeros((3, 2)));
}

#[test]
fn unconnected_input_gets_zero_gradient() {
    let tape = Tape::<f64>::new();
    let x = tape.var(array![[1.0, 2.0]]);
    let z = tape.var(array![[3.0], [4.0], [5.0]]);
    let g = grad((x * x).sum(), &[x, z], false);
    assert_eq!(*g[1].value(), Array2::<f64>::zeros((3, 1)));
}

/// The sweep visits only nodes on a path from x to y: a large branch that does not depend on x
/// adds no backward nodes.
#[test]
fn sweep_skips_nodes_off_the_path() {
    let count = |with_branch: bool| {
        let tape = Tape::<f64>::new();
        let x = tape.var(array![[1.0, -2.0]]);
        let c = tape.var(array![[0.5, 0.25]]);
        let mut y = (x * c).softplus().sum();
        if with_branch {
            let mut b = c;
            for _ in 0..10 {
                b = (b.sigmoid() * c).softplus();
            }
            y = y + b.sum();
        }
        let before = tape.len();
        let g = grad(y, &[x], true)[0];
        let g = (*g.value()).clone();
        (tape.len() - before, g)
    };
    let (plain, g_plain) = count(false);
    let (branched, g_branched) = count(true);
    assert_eq!(g_plain, g_branched);
    // The branch adds exactly one backward node: the accumulation `+` at y's sum is not even
    // needed, only the Add rule handing g on to the x side.
    assert!(
        branched <= plain + 1,
        "plain {plain} nodes, with branch {branched}"
    );
}

/// Without create_graph the sweep leaves only the returned constants on the tape.
#[test]
fn no_create_graph_leaves_only_results() {
    let tape = Tape::<f64>::new();
    let x = tape.var(array![[1.0, -2.0], [0.5, 3.0]]);
    let w = tape.var(array![[0.3, -0.7], [1.1, 0.2]]);
    let y = x.matmul(w).sigmoid().sum();
    let before = tape.len();
    let g = grad(y, &[x, w], false);
    assert_eq!(tape.len(), before + 2);
    assert_eq!(g[0].shape(), (2, 2));
}

/// A gradient wrt an intermediate node, and a total derivative when one x depends on another.
#[test]
fn gradient_wrt_intermediate_and_nested_inputs() {
    let tape = Tape::<f64>::new();
    let x = tape.var(array![[2.0]]);
    let u = x * x; // u = x²
    let y = (u * x).sum(); // y = x³ = u·x
    let g = grad(y, &[u, x], false);
    assert_eq!(g[0].item(), 2.0); // ∂y/∂u = x
    assert_eq!(g[1].item(), 12.0); // dy/dx = 3x² (total)
}

/// A wrong rule is caught: the checker must reject a deliberately wrong gradient.
#[test]
fn gradcheck_rejects_a_wrong_derivative() {
    // f(x) = softplus(x) recorded as a sigmoid of a constant copy: the value is the same at
    // x0 but the tape's gradient is zero, the truth is σ(x).
    let x0 = array![[0.3, -1.2]];
    let r = gradcheck(
        |t, v| {
            let detached = t.constant(v[0].value().clone());
            vec![detached.softplus() + (v[0] - v[0])]
        },
        &[x0],
        5,
    );
    let m = r.expect_err("a zero gradient for softplus must fail the check");
    assert_eq!(m.analytic, 0.0);
    assert!(m.numeric.abs() > 1e-3, "{m}");
}

/// Large products take the column-split parallel path; they must equal ndarray's own GEMM for
/// every transpose combination.
#[test]
fn large_matmul_matches_ndarray() {
    let mut rng = Rng::seed(11);
    let (m, k, n) = (70, 130, 150); // 1.4M multiply-adds: above the parallel threshold
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = randn(if ta { (k, m) } else { (m, k) }, &mut rng);
        let b = randn(if tb { (n, k) } else { (k, n) }, &mut rng);
        let want = {
            let av = if ta { a.t() } else { a.view() };
            let bv = if tb { b.t() } else { b.view() };
            av.dot(&bv)
        };
        let tape = Tape::new();
        let c = tape.var(a).matmul_t(tape.var(b), ta, tb);
        let got = c.value();
        assert_eq!(got.dim(), (m, n));
        let err = (&*got - &want)
            .mapv(f64::abs)
            .fold(0.0f64, |x, &y| x.max(y));
        assert!(err < 1e-12, "ta {ta} tb {tb}: max error {err}");
    }
}

/// Large elementwise ops (split across threads) give exactly the values and gradients of the
/// same ops written with ndarray.
#[test]
fn large_elementwise_ops_match_ndarray() {
    let mut rng = Rng::seed(12);
    let (a, b) = (randn((300, 200), &mut rng), randn((300, 200), &mut rng)); // 60,000 ≥ the threshold
    let tape = Tape::new();
    let (x, y) = (tape.var(a.clone()), tape.var(b.clone()));
    let z = (x * y + x.relu().scale(0.5)).sigmoid();
    let want_z = (&a * &b + a.mapv(|v| v.max(0.0) * 0.5)).mapv(sigmoid);
    assert_eq!(*z.value(), want_z);
    let g = grad(z.sum(), &[x], false);
    let s = want_z.mapv(|t| t * (1.0 - t));
    let want_gx = &s * &(&b + &a.mapv(|v| if v > 0.0 { 0.5 } else { 0.0 }));
    let err = (&*g[0].value() - &want_gx)
        .mapv(f64::abs)
        .fold(0.0f64, |m, &e| m.max(e));
    assert!(err < 1e-15, "max error {err}");
}

/// The branch-free exponential behind σ agrees with the standard library's to 2 ulp (f32) and
/// 2 ulp (f64) over the whole range it serves, and σ keeps its exact points.
#[test]
fn fast_exponential_matches_libm() {
    use reveal_tape::Scalar;
    let (mut worst32, mut worst64) = (0.0f64, 0.0f64);
    for i in 0..400_000 {
        let x = -i as f64 * 2.5e-4 - (i % 7) as f64 * 1e-9; // 0 down to −100
        let want = x.exp();
        if want > 1e-300 {
            worst64 = worst64.max((f64::exp_nonpositive(x) - want).abs() / want);
        }
        let xf = x as f32;
        let want32 = (xf as f64).exp();
        if want32 > 1e-37 {
            worst32 = worst32.max((f32::exp_nonpositive(xf) as f64 - want32).abs() / want32);
        }
    }
    assert!(worst32 < 2.0 * f32::EPSILON as f64, "f32: {worst32:e}");
    assert!(worst64 < 2.0 * f64::EPSILON, "f64: {worst64:e}");
    assert_eq!((sigmoid(0.0f64), sigmoid(800.0f64)), (0.5, 1.0));
    let s = sigmoid(-30.0f64);
    assert!((s - 1.0 / (1.0 + 30.0f64.exp())).abs() < 1e-28, "{s:e}");
}

/// A hand-written gradient of a function off the tape: right passes, wrong is reported with the
/// input, the element, and both values.
#[test]
fn check_gradient_reports_a_wrong_hand_written_gradient() {
    use reveal_tape::check::{check_gradient, Tolerance};
    // f(a, b) = Σ a ⊙ b²: ∂a = b², ∂b = 2a ⊙ b.
    let f = |v: &[Array2<f64>]| (&v[0] * &v[1].mapv(|t| t * t)).sum();
    let (a, b) = (array![[1.0, 2.0]], array![[3.0, -1.0]]);
    let right = |v: &[Array2<f64>]| vec![v[1].mapv(|t| t * t), &v[0] * &v[1] * 2.0];
    assert!(check_gradient(f, right, &[a.clone(), b.clone()], Tolerance::default()).is_ok());
    let wrong = |v: &[Array2<f64>]| vec![v[1].mapv(|t| t * t), &v[0] * &v[1]];
    let m = check_gradient(f, wrong, &[a, b], Tolerance::default()).unwrap_err();
    assert_eq!((m.input, m.index), (1, (0, 0)), "{m}");
    assert!(
        (m.analytic - 3.0).abs() < 1e-12 && (m.numeric - 6.0).abs() < 1e-6,
        "{m}"
    );
    let text = m.to_string();
    assert!(
        text.contains("input 1") && text.contains("(0, 0)") && text.contains("analytic"),
        "{text}"
    );
}

// ── images: unfold/fold, pooling, channel order ───────────────────────────────────────────

use reveal_tape::Patches;

/// A geometry with the kernel fitting the padded image: C 1–3, H, W 1–6, k 1–3, s 1–3, p 0–2.
fn geometry() -> impl Strategy<Value = Patches> {
    (
        1usize..=3,
        1usize..=6,
        1usize..=6,
        1usize..=3,
        1usize..=3,
        0usize..=2,
    )
        .prop_map(
            |(channels, height, width, kernel, stride, padding)| Patches {
                channels,
                height,
                width,
                kernel,
                stride,
                padding,
            },
        )
        .prop_filter("kernel fits the padded image", |g| g.is_valid())
}

/// PyTorch's conv2d by its definition (NCHW images, weights [O, C, k, k], zero padding):
/// y[i, o, oy, ox] = Σ_{c,ky,kx} w[o, c, ky, kx] · x[i, c, oy·s + ky − p, ox·s + kx − p],
/// returned as [n·OH·OW, O] (one row per output pixel).
fn conv_by_definition(x: &Array2<f64>, w: &Array2<f64>, g: &Patches) -> Array2<f64> {
    let (c, h, wd, k) = (g.channels, g.height, g.width, g.kernel);
    let (oh, ow, o) = (g.out_height(), g.out_width(), w.nrows());
    let n = x.nrows();
    let mut y = Array2::zeros((n * oh * ow, o));
    for i in 0..n {
        for (oy, ox, oc) in itertools_triple(oh, ow, o) {
            let mut sum = 0.0;
            for ch in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                        let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                            let pixel = x[(i, ch * h * wd + iy as usize * wd + ix as usize)];
                            sum += w[(oc, (ch * k + ky) * k + kx)] * pixel;
                        }
                    }
                }
            }
            y[((i * oh + oy) * ow + ox, oc)] = sum;
        }
    }
    y
}

/// Every (a, b, c) below (n1, n2, n3).
fn itertools_triple(
    n1: usize,
    n2: usize,
    n3: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..n1).flat_map(move |a| (0..n2).flat_map(move |b| (0..n3).map(move |c| (a, b, c))))
}

/// A convolution on the tape: NCHW rows → pixel rows → unfold → times channels_last(w)ᵀ.
fn conv<'t>(x: Var<'t, f64>, w: Var<'t, f64>, g: Patches) -> Var<'t, f64> {
    let n = x.shape().0;
    let pixels = x
        .channels_last(g.channels)
        .reshape(n * g.height * g.width, g.channels);
    pixels
        .unfold(g)
        .matmul_t(w.channels_last(g.channels), false, true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The convolution built from the ops equals PyTorch's conv2d by its definition, and passes
    /// gradcheck and gradgradcheck in both x and w (squared, so the second order is not zero).
    #[test]
    fn convolution(g in geometry(), n in 1usize..=2, out in 1usize..=3, seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        let x = randn((n, g.channels * g.pixels()), &mut rng);
        let w = randn((out, g.channels * g.kernel * g.kernel), &mut rng);
        let tape = Tape::new();
        let y = conv(tape.var(x.clone()), tape.var(w.clone()), g).value();
        let expected = conv_by_definition(&x, &w, &g);
        prop_assert!((&*y - &expected).iter().all(|e| e.abs() < 1e-12), "{y:?} vs {expected:?}");
        check_op!(x, w; |v| conv(v[0], v[1], g).square());
    }

    /// Each linear op alone, and each against its partner: ⟨op(a), b⟩ = ⟨a, opᵀ(b)⟩.
    #[test]
    fn unfold_fold_pool(g in geometry(), n in 1usize..=2, seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        let pixels = randn((n * g.pixels(), g.channels), &mut rng);
        let kk = g.kernel * g.kernel * g.channels;
        let windows = randn((n * g.windows(), kk), &mut rng);
        let pooled = randn((n * g.windows(), g.channels), &mut rng);
        check_op!(pixels; |v| v[0].unfold(g).square());
        check_op!(windows; |v| v[0].fold(g).square());
        check_op!(pixels; |v| v[0].avg_pool(g).square());
        check_op!(pooled; |v| v[0].avg_pool_t(g).square());
        let tape = Tape::new();
        let (p, wv, q) = (tape.var(pixels.clone()), tape.var(windows.clone()), tape.var(pooled.clone()));
        let dot = |a: Var<f64>, b: Var<f64>| (a * b).sum().item();
        prop_assert!((dot(p.unfold(g), wv) - dot(p, wv.fold(g))).abs() < 1e-10);
        prop_assert!((dot(p.avg_pool(g), q) - dot(p, q.avg_pool_t(g))).abs() < 1e-10);
    }

    /// Average pooling is the mean of each window's unfolded values, channel by channel.
    #[test]
    fn avg_pool_is_the_window_mean(g in geometry(), seed in any::<u64>()) {
        let mut rng = Rng::seed(seed);
        let pixels = randn((g.pixels(), g.channels), &mut rng);
        let tape = Tape::new();
        let p = tape.var(pixels);
        let (unfolded, pooled) = (p.unfold(g).value(), p.avg_pool(g).value());
        let k2 = (g.kernel * g.kernel) as f64;
        for ((w, c), &v) in pooled.indexed_iter() {
            let mean = (0..g.kernel * g.kernel).map(|j| unfolded[(w, j * g.channels + c)]).sum::<f64>() / k2;
            prop_assert!((v - mean).abs() < 1e-12);
        }
    }

    /// The channel reorderings are inverse permutations; reshape keeps the row-major order.
    #[test]
    fn channel_order_and_reshape(r in side(), c in side(), s in side(), seed in any::<u64>()) {
        let a = randn((r, c * s), &mut Rng::seed(seed));
        check_op!(a; |v| v[0].channels_last(c).square());
        check_op!(a; |v| v[0].channels_first(c).square());
        check_op!(a; |v| v[0].reshape(r * s, c).square());
        let tape = Tape::new();
        let x = tape.var(a.clone());
        prop_assert_eq!(&*x.channels_last(c).channels_first(c).value(), &a);
        let last = x.channels_last(c).value();
        prop_assert_eq!(last[(r - 1, (s - 1) * c)], a[(r - 1, s - 1)]);
    }
}

#[test]
#[should_panic(expected = "unfold: shape (5, 2) is not [n·2·2, 2]")]
fn unfold_names_the_shape_it_wanted() {
    let tape = Tape::<f64>::new();
    let g = Patches {
        channels: 2,
        height: 2,
        width: 2,
        kernel: 1,
        stride: 1,
        padding: 0,
    };
    tape.var(Array2::zeros((5, 2))).unfold(g);
}
