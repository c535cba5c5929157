//! The parts of the reconstruction objective that every way of computing it shares: its
//! settings, its terms, the two priors and the candidates' labels.
//!
//! ```text
//! L_x   = Σ relu(x − 1)² + Σ relu(−1 − x)²        (candidates stay in the data's range)
//! L_λ   = 5 · Σ relu(λ_min − λ_i)²                (multipliers stay above λ_min)
//! ```
//!
//! Labels: ±1 for a binary model (one output), class indices 0…C−1 for C outputs.

use ndarray::Array2;
use reveal_nn::Activation;
use reveal_tape::{Scalar, Var};

/// The hyperparameters of the objective itself (not of the optimiser).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectiveConfig<T> {
    /// The hidden activation; [`Activation::ModifiedRelu`]`(α)` in a real reconstruction.
    pub activation: Activation<T>,
    /// λ_min of the prior L_λ.
    pub lambda_min: T,
}

/// The terms of L: L_kkt, L_x, L_λ and their sum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms<V> {
    pub kkt: V,
    /// ‖W1 − ∇_{W1} Φ‖², the first layer's share of L_kkt (a label-free ranking signal).
    pub kkt_w1: V,
    pub prior_x: V,
    pub prior_lambda: V,
    pub total: V,
}

impl<'t, T: Scalar> Terms<Var<'t, T>> {
    /// The terms of L from L_kkt (and its W1 part), with the two priors of the candidates x and
    /// multipliers λ: L = L_kkt + L_x + L_λ.
    pub fn with_priors(
        kkt: Var<'t, T>,
        kkt_w1: Var<'t, T>,
        x: Var<'t, T>,
        lambda: Var<'t, T>,
        cfg: ObjectiveConfig<T>,
    ) -> Self {
        let (prior_x, prior_lambda) = (prior_x(x), lambda_prior(lambda, cfg.lambda_min));
        Terms {
            kkt,
            kkt_w1,
            prior_x,
            prior_lambda,
            total: kkt + prior_x + prior_lambda,
        }
    }
}

impl<V: Copy> Terms<V> {
    /// Every term passed through `f` (e.g. a recorded term's value, a precision change).
    pub fn map<U>(&self, f: impl Fn(V) -> U) -> Terms<U> {
        Terms {
            kkt: f(self.kkt),
            kkt_w1: f(self.kkt_w1),
            prior_x: f(self.prior_x),
            prior_lambda: f(self.prior_lambda),
            total: f(self.total),
        }
    }

    /// The terms under the names `reveal kkt` writes: `loss`, `loss.kkt`, `loss.prior_x`,
    /// `loss.prior_lambda`.
    pub fn named(&self) -> [(&'static str, V); 4] {
        [
            ("loss", self.total),
            ("loss.kkt", self.kkt),
            ("loss.prior_x", self.prior_x),
            ("loss.prior_lambda", self.prior_lambda),
        ]
    }
}

/// The weight of the λ prior in L_λ.
pub const LAMBDA_PRIOR_WEIGHT: f64 = 5.0;

/// L_x = Σ relu(x − 1)² + Σ relu(−1 − x)², recorded as Σ (x − clamp(x, −1, 1))² (the same
/// function and derivative, in one op instead of eight).
pub fn prior_x<'t, T: Scalar>(x: Var<'t, T>) -> Var<'t, T> {
    x.excess(-T::one(), T::one()).square().sum()
}

/// L_λ = 5 · Σ relu(λ_min − λ)²
pub fn lambda_prior<'t, T: Scalar>(lambda: Var<'t, T>, lambda_min: T) -> Var<'t, T> {
    (-lambda)
        .offset(lambda_min)
        .relu()
        .square()
        .sum()
        .scale(T::from_f64(LAMBDA_PRIOR_WEIGHT))
}

/// Candidate labels: −1 for the first m/2, +1 for the rest, as a column [m, 1].
pub fn candidate_labels<T: Scalar>(m: usize) -> Array2<T> {
    Array2::from_shape_fn(
        (m, 1),
        |(i, _)| if i < m / 2 { -T::one() } else { T::one() },
    )
}

/// Candidate labels for a model with `outputs` outputs: [`candidate_labels`] for one output,
/// else equal contiguous blocks of class indices, candidate i of class ⌊i·C/m⌋.
pub fn candidate_labels_for<T: Scalar>(m: usize, outputs: usize) -> Array2<T> {
    match outputs {
        1 => candidate_labels(m),
        c => Array2::from_shape_fn((m, 1), |(i, _)| T::from_f64((i * c / m) as f64)),
    }
}
