//! Gradient checkers in f64, after PyTorch's `gradcheck` and `gradgradcheck`.
//!
//! A function under test takes the tape and its input variables and returns one or more output
//! variables of any shape. Outputs are contracted with fixed random vectors r_k, so the checked
//! scalar is s = Σ_k ⟨out_k, r_k⟩. Its gradient from the tape is compared with central differences
//! (s(x + ε) − s(x − ε)) / 2ε; an element passes when |analytic − numeric| ≤ atol + rtol·|numeric|.

use std::fmt;

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::grad::grad;
use crate::tape::{Tape, Var};

/// A differentiable function of several matrices with one or more outputs (for the helpers).
trait Function: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>> {}
impl<F> Function for F where F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>> {}

/// Step and tolerances of a check. The default is PyTorch's gradcheck: ε 1e-6, atol 1e-5, rtol 1e-3.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Finite-difference step ε.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numeric value).
    pub rtol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The worst element of a failed check.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Which input.
    pub input: usize,
    /// `[row, col]` within that input.
    pub index: (usize, usize),
    /// The tape's gradient.
    pub analytic: f64,
    /// The central difference.
    pub numeric: f64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradient of input {} at {:?}: analytic {:.9e}, finite difference {:.9e}",
            self.input, self.index, self.analytic, self.numeric
        )
    }
}

impl std::error::Error for Mismatch {}

/// A seeded random generator for test inputs (ChaCha8 inside: the same numbers on every
/// platform; its type is ours, so a test does not need our `rand` version).
#[derive(Clone, Debug)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    /// A generator from a seed.
    pub fn seed(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }
}

/// Standard-normal matrix from a seeded generator.
pub fn randn(shape: (usize, usize), rng: &mut Rng) -> Array2<f64> {
    Array2::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng.0))
}

/// Records the inputs and f, and returns s = Σ_k ⟨out_k, r_k⟩ as a 1×1 variable.
fn contracted<'t, F: Function>(
    tape: &'t Tape<f64>,
    f: &F,
    inputs: &[Array2<f64>],
    r: &[Array2<f64>],
) -> (Vec<Var<'t, f64>>, Var<'t, f64>) {
    let xs: Vec<_> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let outs = f(tape, &xs);
    assert_eq!(
        outs.len(),
        r.len(),
        "function returned {} outputs, expected {}",
        outs.len(),
        r.len()
    );
    let mut s = tape.scalar(0.0);
    for (out, rk) in outs.into_iter().zip(r) {
        s = s + (out * tape.constant(rk.clone())).sum();
    }
    (xs, s)
}

/// Shapes of f's outputs at `inputs`.
fn output_shapes<F: Function>(f: &F, inputs: &[Array2<f64>]) -> Vec<(usize, usize)> {
    let tape = Tape::new();
    let xs: Vec<_> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    f(&tape, &xs).iter().map(|o| o.shape()).collect()
}

/// Checks the tape's gradient of f against central differences at `inputs`.
pub fn gradcheck<F>(f: F, inputs: &[Array2<f64>], seed: u64) -> Result<(), Mismatch>
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>>,
{
    gradcheck_with(f, inputs, seed, Tolerance::default())
}

/// [`gradcheck`] with a chosen step and tolerances.
pub fn gradcheck_with<F>(
    f: F,
    inputs: &[Array2<f64>],
    seed: u64,
    tol: Tolerance,
) -> Result<(), Mismatch>
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>>,
{
    let mut rng = Rng::seed(seed);
    let r: Vec<_> = output_shapes(&f, inputs)
        .into_iter()
        .map(|s| randn(s, &mut rng))
        .collect();

    let tape = Tape::new();
    let (xs, s) = contracted(&tape, &f, inputs, &r);
    let analytic: Vec<_> = grad(s, &xs, false).iter().map(|g| g.value()).collect();

    let s_at = |perturbed: &[Array2<f64>]| contracted(&Tape::new(), &f, perturbed, &r).1.item();
    let analytic: Vec<Array2<f64>> = analytic.iter().map(|a| (**a).clone()).collect();
    compare(&analytic, s_at, inputs, tol)
}

/// Checks a gradient written by hand for a function that is not on the tape: `f` maps the
/// inputs to a number, `df` returns its gradient with respect to each input (the inputs'
/// shapes); both are compared with central differences of `f`.
///
/// ```
/// use ndarray::array;
/// use reveal_tape::check::{check_gradient, Tolerance};
///
/// // f(a) = Σ a², whose gradient is 2a.
/// let f = |x: &[ndarray::Array2<f64>]| x[0].mapv(|v| v * v).sum();
/// let right = |x: &[ndarray::Array2<f64>]| vec![x[0].mapv(|v| 2.0 * v)];
/// let wrong = |x: &[ndarray::Array2<f64>]| vec![x[0].mapv(|v| 3.0 * v)];
/// let at = [array![[1.0, -2.0]]];
/// assert!(check_gradient(f, right, &at, Tolerance::default()).is_ok());
/// let m = check_gradient(f, wrong, &at, Tolerance::default()).unwrap_err();
/// assert_eq!((m.input, m.index), (0, (0, 1))); // the worst element: 3·(−2) against −4
/// ```
pub fn check_gradient<F, G>(
    f: F,
    df: G,
    inputs: &[Array2<f64>],
    tol: Tolerance,
) -> Result<(), Mismatch>
where
    F: Fn(&[Array2<f64>]) -> f64,
    G: Fn(&[Array2<f64>]) -> Vec<Array2<f64>>,
{
    let analytic = df(inputs);
    assert_eq!(
        analytic.len(),
        inputs.len(),
        "check_gradient: {} gradients for {} inputs",
        analytic.len(),
        inputs.len()
    );
    for (k, (a, x)) in analytic.iter().zip(inputs).enumerate() {
        assert_eq!(
            a.dim(),
            x.dim(),
            "check_gradient: gradient {k} is {:?}, input {k} is {:?}",
            a.dim(),
            x.dim()
        );
    }
    compare(&analytic, f, inputs, tol)
}

/// Compares `analytic` gradients of `s` at `inputs` with central differences; the element that
/// misses the tolerance by most, if any.
fn compare(
    analytic: &[Array2<f64>],
    s_at: impl Fn(&[Array2<f64>]) -> f64,
    inputs: &[Array2<f64>],
    tol: Tolerance,
) -> Result<(), Mismatch> {
    let mut worst: Option<(f64, Mismatch)> = None;
    let mut x = inputs.to_vec();
    for k in 0..inputs.len() {
        for (index, &x0) in inputs[k].indexed_iter() {
            x[k][index] = x0 + tol.eps;
            let up = s_at(&x);
            x[k][index] = x0 - tol.eps;
            let down = s_at(&x);
            x[k][index] = x0;
            let numeric = (up - down) / (2.0 * tol.eps);
            let a = analytic[k][index];
            let excess = (a - numeric).abs() - (tol.atol + tol.rtol * numeric.abs());
            if excess > 0.0 && worst.as_ref().is_none_or(|(e, _)| excess > *e) {
                let m = Mismatch {
                    input: k,
                    index,
                    analytic: a,
                    numeric,
                };
                worst = Some((excess, m));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((_, m)) => Err(m),
    }
}

/// Checks second derivatives: gradcheck of (xs, r) ↦ grad(Σ_k ⟨f(xs)_k, r_k⟩, xs, create_graph)
/// with random upstream vectors r, so both the dependence on xs and on the upstream gradient
/// are checked. Inputs the function's r_k are appended after `inputs` (a mismatch there has
/// `input ≥ inputs.len()`).
pub fn gradgradcheck<F>(f: F, inputs: &[Array2<f64>], seed: u64) -> Result<(), Mismatch>
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>>,
{
    gradgradcheck_with(f, inputs, seed, Tolerance::default())
}

/// [`gradgradcheck`] with a chosen step and tolerances.
pub fn gradgradcheck_with<F>(
    f: F,
    inputs: &[Array2<f64>],
    seed: u64,
    tol: Tolerance,
) -> Result<(), Mismatch>
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>>,
{
    let n = inputs.len();
    let mut rng = Rng::seed(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut all = inputs.to_vec();
    all.extend(
        output_shapes(&f, inputs)
            .into_iter()
            .map(|s| randn(s, &mut rng)),
    );
    gradcheck_with(
        move |tape, v| {
            let (xs, r) = v.split_at(n);
            let outs = f(tape, xs);
            let mut s = tape.scalar(0.0);
            for (out, &rk) in outs.into_iter().zip(r) {
                s = s + (out * rk).sum();
            }
            grad(s, xs, true)
        },
        &all,
        seed,
        tol,
    )
}
