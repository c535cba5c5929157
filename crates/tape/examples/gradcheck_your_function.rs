//! Checking a gradient you wrote by hand, in your own tests, with reveal-tape's checker.
//!
//! Your function need not be written with the tape: give `check_gradient` the function (inputs
//! → a number) and your gradient (inputs → one matrix per input). It compares them with central
//! differences in f64, with PyTorch's gradcheck tolerances by default (ε 1e-6, atol 1e-5,
//! rtol 1e-3), and reports the worst element: which input, which element, yours against the
//! finite difference.
//!
//! `cargo run -p reveal-tape --example gradcheck_your_function`

use ndarray::{array, Array2};
use reveal_tape::check::{check_gradient, Tolerance};

/// The function under test: the logistic loss of a linear model, L(w) = Σ ln(1 + e^(−y·xw)),
/// for data x [n, d], labels y [n, 1] and weights w [d, 1].
fn loss(x: &Array2<f64>, y: &Array2<f64>, w: &Array2<f64>) -> f64 {
    (x.dot(w) * y).mapv(|m| (-m).exp().ln_1p()).sum()
}

/// Its gradient, by hand: ∂L/∂w = −xᵀ (y ⊙ σ(−y·xw)).
fn gradient(x: &Array2<f64>, y: &Array2<f64>, w: &Array2<f64>) -> Array2<f64> {
    let s = (x.dot(w) * y).mapv(|m| 1.0 / (1.0 + m.exp()));
    -x.t().dot(&(y * &s))
}

/// The same with a mistake a hand derivation easily makes: the sign of the margin in σ.
fn wrong_gradient(x: &Array2<f64>, y: &Array2<f64>, w: &Array2<f64>) -> Array2<f64> {
    let s = (x.dot(w) * y).mapv(|m| 1.0 / (1.0 + (-m).exp()));
    -x.t().dot(&(y * &s))
}

fn main() {
    let x = array![
        [0.5, -1.0, 2.0],
        [1.5, 0.3, -0.7],
        [-0.2, 0.8, 0.1],
        [1.0, 1.0, -1.0]
    ];
    let y = array![[1.0], [-1.0], [1.0], [-1.0]];
    let w = array![[0.3], [-0.2], [0.6]];
    // The inputs are a slice of matrices; here only w varies (x and y are captured).
    let f = |v: &[Array2<f64>]| loss(&x, &y, &v[0]);

    match check_gradient(
        f,
        |v| vec![gradient(&x, &y, &v[0])],
        std::slice::from_ref(&w),
        Tolerance::default(),
    ) {
        Ok(()) => println!("the hand-written gradient passes"),
        Err(m) => panic!("it should pass: {m}"),
    }
    match check_gradient(
        f,
        |v| vec![wrong_gradient(&x, &y, &v[0])],
        &[w],
        Tolerance::default(),
    ) {
        Ok(()) => panic!("the wrong gradient must be caught"),
        Err(m) => println!("the wrong one is caught: {m}"),
    }
    // Tighter or looser tolerances for a function with large values or rough derivatives:
    let strict = Tolerance {
        atol: 1e-8,
        ..Tolerance::default()
    };
    println!(
        "tolerances: default {:?}, strict {strict:?}",
        Tolerance::default()
    );
}
