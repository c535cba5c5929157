//! The ReLU MLP: f(x) = W_L · relu(W_{L−1} ··· relu(W1 x + b1)) (+ b_L), optionally behind a
//! convolutional front ([`Features`]): then the first layers are convolutions (weights
//! [out, in·k·k], PyTorch's [out, in, k, k] flattened), each followed by ReLU, with average
//! pooling where the architecture says, and the image is flattened before the first fc layer.
//!
//! By default a bias in the first layer only, so f is homogeneous in its parameters:
//! f(cθ) = c^L f(θ) for L weight layers (c³ for the default d-h-h-1 net), the setting the KKT
//! theory of reconstruction assumes. A model may instead have a bias in every layer (PyTorch's
//! default `nn.Linear`): Z_k = A_{k−1}W_kᵀ + b_k for every k. It is no longer homogeneous, but
//! a stationary point of its training still puts θ, biases included, in the span of the margins'
//! gradients (docs/DESIGN.md §8).
//!
//! One output is the binary classifier (labels y = ±1, margin y·f(x)); C ≥ 2 outputs
//! Φ_1…Φ_C classify C classes (labels y = class index, margin Φ_y(x) − max_{j≠y} Φ_j(x)).

use std::sync::Arc;

use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reveal_tape::{Constant, Scalar, Tape, Var};
use serde::{Deserialize, Serialize};

use crate::arch::{Arch, Features, Stage};

/// Which layers have a bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Biases {
    /// The first layer only: the network is homogeneous (the papers' setting).
    #[default]
    First,
    /// Every layer, the output layer included (PyTorch's default `nn.Linear`).
    All,
}

/// How the parameters are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The papers': W1, b1 ~ N(0,1)·1e-4, later layers U(−1/√fan_in, 1/√fan_in).
    #[default]
    Small,
    /// PyTorch's `nn.Linear` default for every layer: weights and biases U(−1/√fan_in, 1/√fan_in)
    /// (Kaiming uniform with a = √5).
    Default,
}

/// Where each layer's tensors sit in θ = (W1, b1, W2, [b2], …, W_L, [b_L]): the bias of a layer
/// follows its weight, and only the first layer's is there unless every layer has one; and the
/// convolutional front the first layers belong to, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Weight layers L (convolutions, hidden fc layers and the output layer).
    pub layers: usize,
    pub biases: Biases,
    /// The convolutions and pooling before the fc layers (`None`: an MLP).
    pub features: Option<Arc<Features>>,
}

impl Layout {
    /// Tensors in θ: L + 1 (first-layer bias) or 2L (a bias in every layer).
    pub fn len(&self) -> usize {
        match self.biases {
            Biases::First => self.layers + 1,
            Biases::All => 2 * self.layers,
        }
    }

    /// Never empty: a model has at least two layers.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The index of W_{k+1} (layer k, from 0) in θ.
    pub fn weight(&self, k: usize) -> usize {
        match (self.biases, k) {
            (Biases::All, _) => 2 * k,
            (Biases::First, 0) => 0,
            (Biases::First, _) => k + 1,
        }
    }

    /// The first fully connected layer (0 for an MLP; after the convolutions otherwise): the
    /// layer whose KKT residual the reconstruction ranks its runs by and the audit trusts.
    /// A convolution's few weights (in·k·k per channel) are fitted by almost any candidates,
    /// so its residual says little.
    pub fn first_fc(&self) -> usize {
        self.features.as_ref().map_or(0, |f| f.convs())
    }

    /// The index of b_{k+1} in θ, if layer k has a bias.
    pub fn bias(&self, k: usize) -> Option<usize> {
        match (self.biases, k) {
            (Biases::All, _) => Some(2 * k + 1),
            (Biases::First, 0) => Some(1),
            (Biases::First, _) => None,
        }
    }

    /// The layout of `len` tensors of an L-layer MLP.
    pub fn of(layers: usize, len: usize) -> Layout {
        let biases = if len == layers + 1 {
            Biases::First
        } else {
            Biases::All
        };
        let layout = Layout {
            layers,
            biases,
            features: None,
        };
        assert_eq!(
            layout.len(),
            len,
            "layout: {len} tensors for {layers} layers (expected {} or {})",
            layers + 1,
            2 * layers
        );
        layout
    }
}

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

/// Parameters of the network, in PyTorch's layout: `weights[k]` is `layers.k.weight` [out, in]
/// (a convolution's [out, in, k, k] flattened to [out, in·k·k]), `biases[k]` is
/// `layers.k.bias` stored as a row [1, out].
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp<T> {
    /// `layers.k.weight`, shape [out_k, in_k]; the last one is [C, h] (C = 1: binary).
    pub weights: Vec<Array2<T>>,
    /// `layers.k.bias` as rows [1, out_k]: the first layer's only ([`Biases::First`]) or one
    /// per layer ([`Biases::All`]).
    pub biases: Vec<Array2<T>>,
    /// The convolutional front: the first `features.convs()` weights are its convolutions.
    pub features: Option<Arc<Features>>,
}

impl<T: Scalar> Mlp<T> {
    /// The reference init for a d-h1-…-hk-1 net: W1, b1 ~ N(0,1)·1e-4; later layers
    /// ~ U(−1/√fan_in, 1/√fan_in) (PyTorch's default nn.Linear init).
    pub fn init(input: usize, hidden: &[usize], seed: u64) -> Self {
        Self::init_classes(input, hidden, 1, seed)
    }

    /// [`Mlp::init`] with `outputs` outputs (1: binary; C ≥ 2: C classes).
    pub fn init_classes(input: usize, hidden: &[usize], outputs: usize, seed: u64) -> Self {
        Self::init_with(input, hidden, outputs, Init::Small, Biases::First, seed)
    }

    /// A model of `outputs` outputs drawn as `init` says, with the biases `biases`. The draws
    /// go layer by layer, weight then bias, from one seeded stream.
    pub fn init_with(
        input: usize,
        hidden: &[usize],
        outputs: usize,
        init: Init,
        biases: Biases,
        seed: u64,
    ) -> Self {
        let shapes = Self::fc_shapes(input, hidden, outputs);
        Self::init_shapes(&shapes, None, init, biases, seed)
    }

    /// A network with the convolutional front `features`, then fc layers of widths `hidden` and
    /// `outputs` outputs, drawn as [`Mlp::init_with`] draws an MLP (a convolution's fan-in is
    /// in·k·k, as PyTorch's `nn.Conv2d` init).
    pub fn init_features(
        features: Features,
        hidden: &[usize],
        outputs: usize,
        init: Init,
        biases: Biases,
        seed: u64,
    ) -> Self {
        let mut shapes = features.conv_shapes();
        shapes.extend(Self::fc_shapes(features.output().len(), hidden, outputs));
        Self::init_shapes(&shapes, Some(Arc::new(features)), init, biases, seed)
    }

    /// [out, in] of each fc layer from `input` inputs through `hidden` to `outputs`.
    fn fc_shapes(input: usize, hidden: &[usize], outputs: usize) -> Vec<(usize, usize)> {
        assert!(outputs >= 1, "init: at least one output is needed");
        assert!(
            !hidden.is_empty(),
            "init: at least one hidden layer is needed"
        );
        let ins = std::iter::once(input).chain(hidden.iter().copied());
        let outs = hidden.iter().copied().chain([outputs]);
        outs.zip(ins).collect()
    }

    /// Draws weights of the given [out, fan_in] shapes (and the biases `biases` says), layer by
    /// layer, weight then bias, from one seeded stream.
    fn init_shapes(
        shapes: &[(usize, usize)],
        features: Option<Arc<Features>>,
        init: Init,
        biases: Biases,
        seed: u64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let small = |shape, rng: &mut ChaCha8Rng| {
            Array2::from_shape_simple_fn(shape, || {
                let z: f64 = StandardNormal.sample(rng);
                T::from_f64(1e-4 * z)
            })
        };
        let uniform = |shape, fan_in: usize, rng: &mut ChaCha8Rng| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Array2::from_shape_simple_fn(shape, || T::from_f64(rng.gen_range(-bound..bound)))
        };
        let (mut weights, mut bs) = (Vec::new(), Vec::new());
        for (k, &(out, fan_in)) in shapes.iter().enumerate() {
            let (w, b) = match (init, k) {
                (Init::Small, 0) => (
                    small((out, fan_in), &mut rng),
                    Some(small((1, out), &mut rng)),
                ),
                _ => (
                    uniform((out, fan_in), fan_in, &mut rng),
                    (k == 0 || biases == Biases::All).then(|| uniform((1, out), fan_in, &mut rng)),
                ),
            };
            weights.push(w);
            if k == 0 || biases == Biases::All {
                bs.extend(b);
            }
        }
        Mlp {
            weights,
            biases: bs,
            features,
        }
    }

    /// Which layers have a bias.
    pub fn bias_layout(&self) -> Biases {
        if self.biases.len() > 1 {
            Biases::All
        } else {
            Biases::First
        }
    }

    /// Where each tensor sits in [`Mlp::params`].
    pub fn layout(&self) -> Layout {
        Layout {
            layers: self.weights.len(),
            biases: self.bias_layout(),
            features: self.features.clone(),
        }
    }

    /// Whether `other` has this model's layout and every tensor's shape.
    pub fn same_shape(&self, other: &Mlp<T>) -> bool {
        self.layout() == other.layout()
            && self
                .params()
                .iter()
                .zip(other.params())
                .all(|(a, b)| a.dim() == b.dim())
    }

    /// Input size d (C·H·W for a network with a convolutional front).
    pub fn input_dim(&self) -> usize {
        match &self.features {
            Some(f) => f.input().len(),
            None => self.weights[0].ncols(),
        }
    }

    /// Outputs C (1 for a binary classifier).
    pub fn outputs(&self) -> usize {
        self.weights.last().expect("at least two layers").nrows()
    }

    /// The architecture: the convolutional stages (none for an MLP), then the fc hidden widths.
    pub fn arch(&self) -> Arch {
        Arch {
            stages: self
                .features
                .as_ref()
                .map_or(Vec::new(), |f| f.stages().to_vec()),
            hidden: self.hidden(),
        }
    }

    /// Hidden widths h1, …, hk of the fc layers (after the convolutions, if any).
    pub fn hidden(&self) -> Vec<usize> {
        let convs = self.features.as_ref().map_or(0, |f| f.convs());
        self.weights[convs..self.weights.len() - 1]
            .iter()
            .map(|w| w.nrows())
            .collect()
    }

    /// All parameter tensors in order θ = (W1, b1, W2, [b2], …, W_L, [b_L]) (see [`Layout`]), as
    /// the KKT sum runs over them.
    pub fn params(&self) -> Vec<&Array2<T>> {
        let mut p = Vec::new();
        for (k, w) in self.weights.iter().enumerate() {
            p.push(w);
            p.extend(self.biases.get(k));
        }
        p
    }

    /// Mutable parameters in the order of [`Mlp::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Array2<T>> {
        let mut biases = self.biases.iter_mut();
        let mut p = Vec::new();
        for w in self.weights.iter_mut() {
            p.push(w);
            p.extend(biases.next());
        }
        p
    }

    /// Records the parameters on a tape, in the order of [`Mlp::params`] (a copy; see
    /// [`Mlp::theta`] to record them many times without copying).
    pub fn on_tape<'t>(&self, tape: &'t Tape<T>) -> Vec<Var<'t, T>> {
        self.theta().on_tape(tape)
    }

    /// The parameters in shared form, to record on many tapes without copying.
    pub fn theta(&self) -> Theta<T> {
        Theta::new(self.params().into_iter().cloned().collect(), self.layout())
    }

    /// A copy converted to another precision.
    pub fn cast<U: Scalar>(&self) -> Mlp<U> {
        let c = |a: &Array2<T>| a.mapv(|v| U::from_f64(v.as_f64()));
        Mlp {
            weights: self.weights.iter().map(c).collect(),
            biases: self.biases.iter().map(c).collect(),
            features: self.features.clone(),
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
        if self.features.is_some() {
            let tape = Tape::new();
            let params = self.on_tape(&tape);
            let f = forward(
                &params,
                &self.layout(),
                tape.var(x.to_owned()),
                Activation::Relu,
            );
            return f.value().as_ref().clone();
        }
        let relu = |v: T| v.max(T::zero());
        let last = self.weights.len() - 1;
        let mut a = x.to_owned();
        for (k, w) in self.weights.iter().enumerate() {
            let mut z = a.dot(&w.t());
            if let Some(b) = self.biases.get(k) {
                z = z + b;
            }
            a = if k == last { z } else { z.mapv(relu) };
        }
        a
    }
}

/// The parameters θ (order of [`Mlp::params`]) shared with tapes: a [`Constant`] each, so they
/// are recorded without copies, and packed for the matrix products (and ‖W‖² computed) once for
/// every tape that records them.
#[derive(Clone, Debug)]
pub struct Theta<T> {
    pub params: Vec<Arc<Constant<T>>>,
    pub layout: Layout,
    /// θ − θ0, the step training took from the weights before training θ0, when they are known:
    /// that is what the training points' gradients span, and what the reconstruction fits then.
    /// Shared like θ, so its ‖·‖² is computed once per run.
    pub step: Option<Vec<Arc<Constant<T>>>>,
}

impl<T: Scalar> Theta<T> {
    /// Wraps parameter matrices in the order of [`Mlp::params`].
    pub fn new(params: Vec<Array2<T>>, layout: Layout) -> Self {
        assert_eq!(
            params.len(),
            layout.len(),
            "theta: {} tensors for {layout:?}",
            params.len()
        );
        Theta {
            params: params
                .into_iter()
                .map(|p| Arc::new(Constant::new(p)))
                .collect(),
            layout,
            step: None,
        }
    }

    /// The same θ with its weights before training θ0 (`init`, of the same layout and shapes):
    /// the step θ − θ0 computed once.
    pub fn with_origin(mut self, init: &Mlp<T>) -> Self {
        assert!(
            init.layout() == self.layout
                && init
                    .params()
                    .iter()
                    .zip(&self.params)
                    .all(|(a, b)| a.dim() == b.value().dim()),
            "theta: an origin of layout {:?} for θ of layout {:?}, or of other shapes",
            init.layout(),
            self.layout
        );
        self.step = Some(
            init.params()
                .into_iter()
                .zip(&self.params)
                .map(|(p0, p)| Arc::new(Constant::new(&**p.value() - p0)))
                .collect(),
        );
        self
    }

    /// Tensor `i` of what the reconstruction fits: the step θ_i − θ0_i when θ0 is known, else θ_i.
    pub fn fitted(&self, i: usize) -> &Arc<Constant<T>> {
        match &self.step {
            Some(step) => &step[i],
            None => &self.params[i],
        }
    }

    /// Records the step θ − θ0 on a tape as shared constants, when θ0 is known.
    pub fn step_on_tape<'t>(&self, tape: &'t Tape<T>) -> Option<Vec<Var<'t, T>>> {
        self.step
            .as_ref()
            .map(|s| s.iter().map(|p| tape.shared(p)).collect())
    }

    /// Output size C (1 for a binary model).
    pub fn outputs(&self) -> usize {
        self.get(self.layout.weight(self.layout.layers - 1)).nrows()
    }

    /// Parameter `i` in the order of [`Mlp::params`].
    pub fn get(&self, i: usize) -> &Arc<Array2<T>> {
        self.params[i].value()
    }

    /// Records θ on a tape as shared constants (no copies; packed forms are kept across tapes).
    pub fn on_tape<'t>(&self, tape: &'t Tape<T>) -> Vec<Var<'t, T>> {
        self.params.iter().map(|p| tape.shared(p)).collect()
    }

    /// Input size d (C·H·W for a network with a convolutional front).
    pub fn input_dim(&self) -> usize {
        match &self.layout.features {
            Some(f) => f.input().len(),
            None => self.get(0).ncols(),
        }
    }

    /// A plain copy of the model.
    pub fn to_mlp(&self) -> Mlp<T> {
        let l = &self.layout;
        let own = |i: usize| (**self.get(i)).clone();
        Mlp {
            weights: (0..l.layers).map(|k| own(l.weight(k))).collect(),
            biases: (0..l.layers).filter_map(|k| l.bias(k)).map(own).collect(),
            features: l.features.clone(),
        }
    }

    /// The widest hidden layer.
    pub fn max_width(&self) -> usize {
        let l = &self.layout;
        (0..l.layers - 1)
            .map(|k| self.get(l.weight(k)).nrows())
            .max()
            .unwrap_or(0)
    }
}

/// Records f(x) for x [m, d] given the parameters on the tape (order of [`Mlp::params`], placed
/// as `layout` says): [m, C].
pub fn forward<'t, T: Scalar>(
    params: &[Var<'t, T>],
    layout: &Layout,
    x: Var<'t, T>,
    act: Activation<T>,
) -> Var<'t, T> {
    assert!(
        params.len() == layout.len() && layout.layers >= 2,
        "forward: {} tensors for {layout:?} (at least two layers)",
        params.len()
    );
    // Z_k = A_{k−1}·W_kᵀ (+ b_k), then the activation, except after the output layer.
    let layer = |k: usize, a: Var<'t, T>, w: Var<'t, T>| {
        let mut z = a.matmul_t(w, false, true);
        if let Some(b) = layout.bias(k) {
            z = z.add_row(params[b]);
        }
        match k + 1 == layout.layers {
            true => z,
            false => act.apply(z),
        }
    };
    let mut a = match &layout.features {
        Some(features) => convolutions(params, layout, features, x, &layer),
        None => x,
    };
    for k in layout.first_fc()..layout.layers {
        a = layer(k, a, params[layout.weight(k)]);
    }
    a
}

/// The convolutional front on the tape: images x [m, C·H·W] (channel-major rows) → one row per
/// pixel [m·H·W, C] → each convolution as unfold(A)·channels_last(W)ᵀ, or a pooling → flattened
/// back to channel-major rows [m, C'·H'·W'] for the fc layers.
fn convolutions<'t, T: Scalar>(
    params: &[Var<'t, T>],
    layout: &Layout,
    features: &Features,
    x: Var<'t, T>,
    layer: &impl Fn(usize, Var<'t, T>, Var<'t, T>) -> Var<'t, T>,
) -> Var<'t, T> {
    let (m, input) = (x.shape().0, features.input());
    assert_eq!(
        x.shape().1,
        input.len(),
        "forward: candidates of shape {:?}, the network takes {input} images",
        x.shape()
    );
    let mut a = x
        .channels_last(input.channels)
        .reshape(m * input.height * input.width, input.channels);
    let mut k = 0;
    for (stage, patches) in features.geometries() {
        a = match stage {
            // The weight [O, C·k·k] is channel-major per row, as PyTorch flattens it; its
            // columns reordered (ky, kx, c) meet unfold's.
            Stage::Conv { .. } => {
                let w = params[layout.weight(k)].channels_last(patches.channels);
                k += 1;
                layer(k - 1, a.unfold(patches), w)
            }
            Stage::AvgPool { .. } => a.avg_pool(patches),
        };
    }
    let out = features.output();
    a.reshape(m, out.len()).channels_first(out.channels)
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
