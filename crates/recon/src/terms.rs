//! The parts of the reconstruction objective that every way of computing it shares: its
//! settings, its terms, the two priors and the candidates' labels.
//!
//! ```text
//! L_x   = Σ relu(x − 1)² + Σ relu(−1 − x)²        (candidates stay in the data's range)
//! L_λ   = 5 · Σ relu(λ_min − λ_i)²                (multipliers stay above λ_min)
//! ```
//!
//! Labels: ±1 for a binary model (one output), class indices 0…C−1 for C outputs.
//!
//! The multipliers ([`Multipliers`]) say how the candidates' output gradients combine into θ:
//! θ = (1/m) Σ_i Σ_j c_ij ∇θ Φ_j(x_i) with c = A(λ) [m, C], A one of three forms after the
//! loss the model was trained with (Buzaglo et al. 2023):
//!
//! ```text
//! margin:  A_ij = λ_i S_ij                      λ [m, 1] ≥ λ_min   (max-margin; S the margin signs)
//! pairs:   A_ij = −λ_ij (j ≠ y_i),
//!          A_{i,y_i} = Σ_{j≠y_i} λ_ij            λ [m, C] ≥ λ_min   (cross-entropy with weight decay)
//! signed:  A_ij = λ_ij                          λ [m, C], any sign (squared loss)
//! ```

use ndarray::Array2;
use reveal_nn::{class_index, margin_signs, Activation};
use reveal_tape::{Scalar, Var};
use serde::{Deserialize, Serialize};

/// The hyperparameters of the objective itself (not of the optimiser).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectiveConfig<T> {
    /// The hidden activation; [`Activation::ModifiedRelu`]`(α)` in a real reconstruction.
    pub activation: Activation<T>,
    /// λ_min of the prior L_λ.
    pub lambda_min: T,
    /// The form of the multipliers.
    pub multipliers: Multipliers,
}

/// How the multipliers λ weigh the candidates' output gradients (the KKT form of the loss the
/// model was trained with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Multipliers {
    /// One λ_i ≥ λ_min per candidate on its margin Σ_j S_ij Φ_j: exact for the logistic loss
    /// (with or without weight decay) and the max-margin limit of cross-entropy.
    #[default]
    Margin,
    /// λ_ij ≥ λ_min for every wrong class j of candidate i, on the pair margin Φ_{y_i} − Φ_j:
    /// cross-entropy with weight decay, wd·θ = (1/n) Σ_i Σ_{j≠y_i} p_ij ∇θ(Φ_{y_i} − Φ_j)(x_i).
    /// Stored [m, C]; the label's own column is unused (held at 0). With one output, as margin.
    Pairs,
    /// λ_ij of either sign for every output, no prior and no label: the squared loss with weight
    /// decay, wd·θ = −(2/n) Σ_i Σ_j (Φ_j(x_i) − t_ij) ∇θ Φ_j(x_i).
    Signed,
}

impl Multipliers {
    /// The form that is exact at a stationary point of the loss a model of `outputs` outputs was
    /// trained with: signed for the squared loss (`squared`), pairs for cross-entropy with
    /// weight decay, margin otherwise (the logistic loss, and cross-entropy's max-margin limit).
    pub fn of_training(squared: bool, weight_decay: f64, outputs: usize) -> Multipliers {
        match (squared, weight_decay > 0.0) {
            (true, _) => Multipliers::Signed,
            (false, true) => Multipliers::Pairs.for_outputs(outputs),
            (false, false) => Multipliers::Margin,
        }
    }

    /// The form a model of `outputs` outputs actually takes (pairs of one output are margins).
    pub fn for_outputs(self, outputs: usize) -> Multipliers {
        match (self, outputs) {
            (Multipliers::Pairs, 1) => Multipliers::Margin,
            (form, _) => form,
        }
    }

    /// Columns of λ for a model of `outputs` outputs.
    pub fn columns(self, outputs: usize) -> usize {
        match self.for_outputs(outputs) {
            Multipliers::Margin => 1,
            Multipliers::Pairs | Multipliers::Signed => outputs,
        }
    }

    /// A(λ) [m, C] on the tape, from the outputs' values f [m, C] (the runner-up of the margin
    /// form) and the labels y [m, 1].
    pub fn coefficients<'t, T: Scalar>(
        self,
        f: &Array2<T>,
        y: Var<'t, T>,
        lambda: Var<'t, T>,
    ) -> Var<'t, T> {
        let tape = y.tape();
        let (m, outputs) = f.dim();
        assert_eq!(
            lambda.shape(),
            (m, self.columns(outputs)),
            "multipliers {self:?}: λ has shape {:?}, the model has {outputs} outputs and {m} candidates",
            lambda.shape()
        );
        match self.for_outputs(outputs) {
            // A = diag(λ)·S
            Multipliers::Margin => tape
                .constant(margin_signs(f.view(), y.value().view()))
                .mul_col(lambda),
            // A = onehot(y)·diag(Σ_j λ_ij off_ij) − λ ⊙ off
            Multipliers::Pairs => {
                let (one_hot, off) = label_masks(&y.value(), outputs);
                let wrong = lambda * tape.constant(off);
                tape.constant(one_hot).mul_col(wrong.sum_cols()) - wrong
            }
            Multipliers::Signed => lambda,
        }
    }

    /// L_λ of this form: 5 · Σ relu(λ_min − λ)² over the multipliers in use (none for signed).
    pub fn prior<'t, T: Scalar>(
        self,
        lambda: Var<'t, T>,
        y: Var<'t, T>,
        lambda_min: T,
    ) -> Var<'t, T> {
        let outputs = lambda.shape().1;
        match self.for_outputs(outputs) {
            Multipliers::Margin => lambda_prior(lambda, lambda_min),
            // The label's column is set to λ_min, where the prior is 0.
            Multipliers::Pairs => {
                let (one_hot, off) = label_masks(&y.value(), outputs);
                let tape = y.tape();
                let used =
                    lambda * tape.constant(off) + tape.constant(one_hot.mapv(|v| v * lambda_min));
                lambda_prior(used, lambda_min)
            }
            Multipliers::Signed => y.tape().scalar(T::zero()),
        }
    }

    /// Each candidate's weight in the bias map, from its row of λ (label y): Σ_j max(λ_ij, 0)
    /// over the multipliers in use (margin, pairs), Σ_j |λ_ij| (signed).
    pub fn weights(self, lambda: &Array2<f32>, y: &[f32]) -> Vec<f64> {
        let outputs = lambda.ncols();
        lambda
            .rows()
            .into_iter()
            .zip(y)
            .map(|(row, &label)| {
                let own = (self == Multipliers::Pairs && outputs > 1)
                    .then(|| class_index(label, outputs));
                row.iter()
                    .enumerate()
                    .filter(|&(j, _)| Some(j) != own)
                    .map(|(_, &v)| match self {
                        Multipliers::Signed => (v as f64).abs(),
                        _ => (v as f64).max(0.0),
                    })
                    .sum()
            })
            .collect()
    }
}

/// The labels' one-hot matrix [m, C] and its complement (1 at the wrong classes).
fn label_masks<T: Scalar>(y: &Array2<T>, outputs: usize) -> (Array2<T>, Array2<T>) {
    let one_hot = Array2::from_shape_fn((y.nrows(), outputs), |(i, j)| {
        if class_index(y[(i, 0)], outputs) == j {
            T::one()
        } else {
            T::zero()
        }
    });
    let off = one_hot.mapv(|v| T::one() - v);
    (one_hot, off)
}

/// The terms of L: L_kkt, L_x, L_λ and their sum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms<V> {
    pub kkt: V,
    /// ‖W1 − ∇_{W1} Φ‖², the first layer's share of L_kkt (a label-free ranking signal); for a
    /// network with convolutions, the first fully connected layer's ([`reveal_nn::Layout::first_fc`]).
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
        y: Var<'t, T>,
        cfg: ObjectiveConfig<T>,
    ) -> Self {
        let prior_x = prior_x(x);
        let prior_lambda = cfg.multipliers.prior(lambda, y, cfg.lambda_min);
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
