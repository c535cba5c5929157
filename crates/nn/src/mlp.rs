//! The homogeneous ReLU MLP: f(x) = W_L · relu(W_{L−1} ··· relu(W1 x + b1)).
//!
//! Bias only in the first layer, so f is homogeneous in its parameters: f(cθ) = c^L f(θ)
//! for L weight layers (c³ for the default d-h-h-1 net).
//!
//! One output is the binary classifier (labels y = ±1, margin y·f(x)); C ≥ 2 outputs
//! Φ_1…Φ_C classify C classes (labels y = class index, margin Φ_y(x) − max_{j≠y} Φ_j(x)).

use std::sync::Arc;

use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_tape::{Constant, Scalar, Tape, Var};

/// The hidden activation, as the tape should record it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation<T> {
    /// relu(z), derivative the step 1[z>0] (training, evaluation).
    Relu,
    /// relu(z) forward, derivative σ(αz) in every pass (the reconstruction's modified ReLU).
    ModifiedRelu(T),
    /// softplus_α(z) = ln(1 + e^{αz})/α: a smooth function with the same derivative rules as the
    /// modified ReLU, for checking the whole objective against finite differences.
    Softplus(T),
}

impl<T: Scalar> Activation<T> {
    /// Records the activation of `z`.
    pub fn apply<'t>(self, z: Var<'t, T>) -> Var<'t, T> {
        match self {
            Activation::Relu => z.relu(),
            Activation::ModifiedRelu(alpha) => z.mrelu(alpha),
            Activation::Softplus(alpha) => z.scale(alpha).softplus().scale(T::one() / alpha),
        }
    }

    /// Records g ⊙ φ'(z) in one op, as the tape's backward pass does: g masked by the step
    /// 1[z>0] for ReLU, g ⊙ σ(αz) (differentiable in both) for the other two.
    pub fn backprop<'t>(self, g: Var<'t, T>, z: Var<'t, T>) -> Var<'t, T> {
        match self {
            Activation::Relu => g.mask(z, T::neg_infinity(), T::zero()),
            Activation::ModifiedRelu(alpha) | Activation::Softplus(alpha) => {
                g.sigmoid_scale(z, alpha)
            }
        }
    }

    /// Records the activation's derivative rule at `z`, as the tape's backward pass uses it:
    /// the step 1[z>0] as a constant for ReLU, σ(αz) (differentiable) for the other two.
    pub fn derivative<'t>(self, z: Var<'t, T>) -> Var<'t, T> {
        match self {
            Activation::Relu => {
                let step = z
                    .value()
                    .mapv(|t| if t > T::zero() { T::one() } else { T::zero() });
                z.tape().constant(step)
            }
            Activation::ModifiedRelu(alpha) | Activation::Softplus(alpha) => {
                z.scale(alpha).sigmoid()
            }
        }
    }
}

/// Parameters of the MLP, in PyTorch's layout: `weights[i]` is `layers.i.weight` [out, in],
/// `bias` is `layers.0.bias` stored as a row [1, h1].
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp<T> {
    /// `layers.i.weight`, shape [out_i, in_i]; the last one is [C, h] (C = 1: binary).
    pub weights: Vec<Array2<T>>,
    /// `layers.0.bias` as a row [1, h1].
    pub bias: Array2<T>,
}

impl<T: Scalar> Mlp<T> {
    /// The reference init for a d-h1-…-hk-1 net: W1, b1 ~ N(0,1)·1e-4; later layers
    /// ~ U(−1/√fan_in, 1/√fan_in) (PyTorch's default nn.Linear init).
    pub fn init(input: usize, hidden: &[usize], seed: u64) -> Self {
        Self::init_classes(input, hidden, 1, seed)
    }

    /// [`Mlp::init`] with `outputs` outputs (1: binary; C ≥ 2: C classes).
    pub fn init_classes(input: usize, hidden: &[usize], outputs: usize, seed: u64) -> Self {
        assert!(outputs >= 1, "init: at least one output is needed");
        assert!(
            !hidden.is_empty(),
            "init: at least one hidden layer is needed"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let small = |shape, rng: &mut ChaCha8Rng| {
            Array2::from_shape_simple_fn(shape, || {
                let z: f64 = StandardNormal.sample(rng);
                T::from_f64(1e-4 * z)
            })
        };
        let w1 = small((hidden[0], input), &mut rng);
        let bias = small((1, hidden[0]), &mut rng);
        let mut weights = vec![w1];
        let outs = hidden[1..].iter().copied().chain([outputs]);
        for (fan_in, out) in hidden.iter().copied().zip(outs) {
            let bound = 1.0 / (fan_in as f64).sqrt();
            weights.push(Array2::from_shape_simple_fn((out, fan_in), || {
                T::from_f64(rng.gen_range(-bound..bound))
            }));
        }
        Mlp { weights, bias }
    }

    /// Input size d.
    pub fn input_dim(&self) -> usize {
        self.weights[0].ncols()
    }

    /// Outputs C (1 for a binary classifier).
    pub fn outputs(&self) -> usize {
        self.weights.last().expect("at least two layers").nrows()
    }

    /// Hidden widths h1, …, hk.
    pub fn hidden(&self) -> Vec<usize> {
        self.weights[..self.weights.len() - 1]
            .iter()
            .map(|w| w.nrows())
            .collect()
    }

    /// All parameter tensors in order θ = (W1, b1, W2, …, w_out), as the KKT sum runs over them.
    pub fn params(&self) -> Vec<&Array2<T>> {
        let mut p = vec![&self.weights[0], &self.bias];
        p.extend(self.weights[1..].iter());
        p
    }

    /// Mutable parameters in the order of [`Mlp::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Array2<T>> {
        let (first, rest) = self.weights.split_at_mut(1);
        let mut p = vec![&mut first[0], &mut self.bias];
        p.extend(rest.iter_mut());
        p
    }

    /// Records the parameters on a tape, in the order of [`Mlp::params`] (a copy; see
    /// [`Mlp::theta`] to record them many times without copying).
    pub fn on_tape<'t>(&self, tape: &'t Tape<T>) -> Vec<Var<'t, T>> {
        self.theta().on_tape(tape)
    }

    /// The parameters in shared form, to record on many tapes without copying.
    pub fn theta(&self) -> Theta<T> {
        Theta::new(self.params().into_iter().cloned().collect())
    }

    /// A copy converted to another precision.
    pub fn cast<U: Scalar>(&self) -> Mlp<U> {
        let c = |a: &Array2<T>| a.mapv(|v| U::from_f64(v.as_f64()));
        Mlp {
            weights: self.weights.iter().map(c).collect(),
            bias: c(&self.bias),
        }
    }

    /// Plain forward pass, no tape: f(x) for each row of x [m, d], as [m, C].
    pub fn predict(&self, x: ArrayView2<T>) -> Array2<T> {
        assert_eq!(
            x.ncols(),
            self.input_dim(),
            "predict: input has {} columns, the model expects {}",
            x.ncols(),
            self.input_dim()
        );
        let relu = |v: T| v.max(T::zero());
        let mut a = (x.dot(&self.weights[0].t()) + &self.bias).mapv(relu);
        let last = self.weights.len() - 1;
        for w in &self.weights[1..last] {
            a = a.dot(&w.t()).mapv(relu);
        }
        a.dot(&self.weights[last].t())
    }
}

/// The parameters θ = (W1, b1, W2, …, w_out) shared with tapes: a [`Constant`] each, so they
/// are recorded without copies, and packed for the matrix products (and ‖W‖² computed) once
/// for every tape that records them.
#[derive(Clone, Debug)]
pub struct Theta<T>(pub Vec<Arc<Constant<T>>>);

impl<T: Scalar> Theta<T> {
    /// Wraps parameter matrices in the order of [`Mlp::params`].
    pub fn new(params: Vec<Array2<T>>) -> Self {
        Theta(
            params
                .into_iter()
                .map(|p| Arc::new(Constant::new(p)))
                .collect(),
        )
    }

    /// Parameter `i` in the order of [`Mlp::params`].
    pub fn get(&self, i: usize) -> &Arc<Array2<T>> {
        self.0[i].value()
    }

    /// Records θ on a tape as shared constants (no copies; packed forms are kept across tapes).
    pub fn on_tape<'t>(&self, tape: &'t Tape<T>) -> Vec<Var<'t, T>> {
        self.0.iter().map(|p| tape.shared(p)).collect()
    }

    /// Input size d.
    pub fn input_dim(&self) -> usize {
        self.get(0).ncols()
    }

    /// A plain copy of the model.
    pub fn to_mlp(&self) -> Mlp<T> {
        let n = self.0.len();
        let own = |i: usize| (**self.get(i)).clone();
        Mlp {
            weights: std::iter::once(0).chain(2..n).map(own).collect(),
            bias: own(1),
        }
    }

    /// The widest hidden layer.
    pub fn max_width(&self) -> usize {
        let n = self.0.len();
        std::iter::once(0)
            .chain(2..n - 1)
            .map(|i| self.get(i).nrows())
            .max()
            .unwrap_or(0)
    }
}

/// Records f(x) for x [m, d] given the parameters on the tape (order of [`Mlp::params`]): [m, C].
pub fn forward<'t, T: Scalar>(
    params: &[Var<'t, T>],
    x: Var<'t, T>,
    act: Activation<T>,
) -> Var<'t, T> {
    assert!(
        params.len() >= 3,
        "forward: expected W1, b1 and at least one more layer, got {} tensors",
        params.len()
    );
    let (w1, b1, rest) = (params[0], params[1], &params[2..]);
    // Z1 = X·W1ᵀ + b1
    let mut a = act.apply(x.matmul_t(w1, false, true).add_row(b1));
    let (last, hidden) = rest.split_last().expect("checked above");
    for &w in hidden {
        // Z_{l+1} = A_l·W_{l+1}ᵀ
        a = act.apply(a.matmul_t(w, false, true));
    }
    a.matmul_t(*last, false, true)
}

/// The margin as signs on the outputs, so that margin_i = Σ_j S_ij f_ij(x_i):
/// one output (labels ±1): S = y; C outputs (labels class indices): S_{i,yᵢ} = +1 and
/// S_{i,j*} = −1 at the runner-up j* = argmax_{j≠yᵢ} f_ij. S is piecewise constant in x (it
/// changes only where the runner-up does), so it enters the tape as a constant, like the ReLU
/// step. `f` [m, C], `y` [m, 1].
pub fn margin_signs<T: Scalar>(f: ArrayView2<T>, y: ArrayView2<T>) -> Array2<T> {
    let (m, classes) = f.dim();
    assert_eq!(
        y.dim(),
        (m, 1),
        "margin: labels have shape {:?}, outputs {:?}",
        y.dim(),
        f.dim()
    );
    if classes == 1 {
        return y.to_owned();
    }
    let mut s = Array2::zeros((m, classes));
    for i in 0..m {
        let label = class_index(y[(i, 0)], classes);
        let runner_up = (0..classes)
            .filter(|&j| j != label)
            .fold(None, |best: Option<usize>, j| match best {
                Some(b) if f[(i, b)] >= f[(i, j)] => Some(b),
                _ => Some(j),
            })
            .expect("at least two classes");
        s[(i, label)] = T::one();
        s[(i, runner_up)] = -T::one();
    }
    s
}

/// The margins Σ_j S_ij f_ij of [`margin_signs`], as a column [m, 1].
pub fn margins<T: Scalar>(f: ArrayView2<T>, y: ArrayView2<T>) -> Array2<T> {
    (&margin_signs(f, y) * &f)
        .sum_axis(ndarray::Axis(1))
        .insert_axis(ndarray::Axis(1))
}

/// A class label stored as a float (as candidate and training files do) → its index.
pub fn class_index<T: Scalar>(label: T, classes: usize) -> usize {
    let v = label.as_f64();
    assert!(
        v >= 0.0 && v.fract() == 0.0 && (v as usize) < classes,
        "margin: label {v} is not a class index below {classes}"
    );
    v as usize
}
