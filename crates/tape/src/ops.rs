//! The ops, each forward pass next to its backward rule.
//!
//! A forward method computes the value eagerly (with [`crate::kernels`]) and records one node.
//! Its rule, right below it, says what the node hands each operand given the upstream gradient
//! g, and is written with these same ops — so with `create_graph` a gradient is itself recorded
//! and can be differentiated again. Non-differentiable masks (the ReLU step) enter as constants.
//! [`backward`] at the end is the one `match` from a recorded op to its rule.
//!
//! Shapes are noted `[rows, cols]`; g has the output's shape.

use std::ops::{Add, Mul, Neg, Sub};

use ndarray::{Array2, Axis};

use crate::kernels;
use crate::kernels::patches::{self, Patches};
use crate::scalar::{self, Scalar};
use crate::tape::{Tape, Var};

/// One recorded operation: what it was and which node ids it read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op<T> {
    /// An input or a constant: nothing to propagate to.
    Leaf,
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    Scale(usize, T),
    Offset(usize, T),
    MatMul {
        a: usize,
        b: usize,
        ta: bool,
        tb: bool,
    },
    Transpose(usize),
    BroadcastRows(usize),
    BroadcastCols(usize),
    BroadcastScalar(usize),
    SumAll(usize),
    SumRows(usize),
    SumCols(usize),
    AddRow(usize, usize),
    MulRow(usize, usize),
    MulCol(usize, usize),
    Relu(usize),
    Sigmoid(usize),
    Softplus(usize),
    Exp(usize),
    LogSumExp(usize),
    MRelu(usize, T),
    Excess(usize, T, T),
    Mask {
        x: usize,
        z: usize,
        lo: T,
        hi: T,
    },
    SigmoidScale {
        x: usize,
        z: usize,
        alpha: T,
    },
    SigmoidPrimeScale {
        x: usize,
        z: usize,
        alpha: T,
    },
    Reshape(usize),
    ChannelsLast(usize, usize),
    ChannelsFirst(usize, usize),
    Unfold(usize, Patches),
    Fold(usize, Patches),
    AvgPool(usize, Patches),
    AvgPoolT(usize, Patches),
}

impl<T> Op<T> {
    /// The operand ids of this op (at most two).
    pub(crate) fn operands(&self) -> [Option<usize>; 2] {
        use Op::*;
        match *self {
            Leaf => [None, None],
            Add(a, b)
            | Sub(a, b)
            | Mul(a, b)
            | MatMul { a, b, .. }
            | AddRow(a, b)
            | MulRow(a, b)
            | MulCol(a, b) => [Some(a), Some(b)],
            // The mask's z is read for its value only: no gradient flows to it.
            Mask { x, .. } => [Some(x), None],
            SigmoidScale { x, z, .. } | SigmoidPrimeScale { x, z, .. } => [Some(x), Some(z)],
            Scale(a, _)
            | Offset(a, _)
            | Transpose(a)
            | BroadcastRows(a)
            | BroadcastCols(a)
            | BroadcastScalar(a)
            | SumAll(a)
            | SumRows(a)
            | SumCols(a)
            | Relu(a)
            | Sigmoid(a)
            | Softplus(a)
            | Exp(a)
            | LogSumExp(a)
            | MRelu(a, _)
            | Excess(a, _, _)
            | Reshape(a)
            | ChannelsLast(a, _)
            | ChannelsFirst(a, _)
            | Unfold(a, _)
            | Fold(a, _)
            | AvgPool(a, _)
            | AvgPoolT(a, _) => [Some(a), None],
        }
    }
}

/// What a rule works with: the node's upstream gradient g, its own output y, and where each
/// operand's contribution goes (only operands on a path to the inputs are asked for).
pub(crate) struct Rule<'a, 't, T: Scalar> {
    pub(crate) g: Var<'t, T>,
    pub(crate) y: Var<'t, T>,
    pub(crate) wanted: &'a dyn Fn(usize) -> bool,
    pub(crate) out: &'a mut Vec<(usize, Var<'t, T>)>,
}

impl<'t, T: Scalar> Rule<'_, 't, T> {
    /// ∂operand += make(), if the operand is wanted.
    fn give(&mut self, operand: Var<'t, T>, make: impl FnOnce() -> Var<'t, T>) {
        if (self.wanted)(operand.id) {
            self.out.push((operand.id, make()));
        }
    }
}

impl<'t, T: Scalar> Var<'t, T> {
    /// Records an elementwise op of two equally shaped operands.
    fn zip_op(self, b: Var<'t, T>, op: Op<T>, f: impl Fn(T, T) -> T + Sync + Send) -> Var<'t, T> {
        self.same_tape(&b);
        let (x, y) = (self.value(), b.value());
        assert_eq!(
            x.dim(),
            y.dim(),
            "{op:?}: shapes {:?} and {:?} differ",
            x.dim(),
            y.dim()
        );
        self.tape.push(op, kernels::zip(&x, &y, f))
    }

    /// Records an elementwise op of one operand.
    fn map_op(self, op: Op<T>, f: impl Fn(T) -> T + Sync + Send) -> Var<'t, T> {
        let value = kernels::map(&self.value(), f);
        self.tape.push(op, value)
    }
}

// ── y = a + b ──────────────────────────────────────────────────────────────────────────────

impl<'t, T: Scalar> Add for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = a + b (equal shapes)
    fn add(self, b: Self) -> Self {
        self.zip_op(b, Op::Add(self.id, b.id), |x, y| x + y)
    }
}

/// ∂a = g, ∂b = g
fn add_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, b: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g);
    r.give(b, || g);
}

// ── y = a − b ──────────────────────────────────────────────────────────────────────────────

impl<'t, T: Scalar> Sub for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = a − b (equal shapes)
    fn sub(self, b: Self) -> Self {
        self.zip_op(b, Op::Sub(self.id, b.id), |x, y| x - y)
    }
}

/// ∂a = g, ∂b = −g
fn sub_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, b: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g);
    r.give(b, || -g);
}

// ── y = a ⊙ b ──────────────────────────────────────────────────────────────────────────────

impl<'t, T: Scalar> Mul for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = a ⊙ b (elementwise, equal shapes)
    fn mul(self, b: Self) -> Self {
        self.zip_op(b, Op::Mul(self.id, b.id), |x, y| x * y)
    }
}

/// ∂a = g ⊙ b, ∂b = g ⊙ a
fn mul_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, b: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g * b);
    r.give(b, || g * a);
}

// ── y = c·a, y = a + c, y = −a (c a constant) ──────────────────────────────────────────────

impl<'t, T: Scalar> Var<'t, T> {
    /// y = c·a
    pub fn scale(self, c: T) -> Var<'t, T> {
        self.map_op(Op::Scale(self.id, c), |x| c * x)
    }

    /// y = a + c
    pub fn offset(self, c: T) -> Var<'t, T> {
        self.map_op(Op::Offset(self.id, c), |x| x + c)
    }

    /// y = a ⊙ a
    pub fn square(self) -> Var<'t, T> {
        self * self
    }
}

impl<'t, T: Scalar> Neg for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = −a
    fn neg(self) -> Self {
        self.scale(-T::one())
    }
}

/// y = c·a;  ∂a = c·g
fn scale_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, c: T) {
    let g = r.g;
    r.give(a, || g.scale(c));
}

/// y = a + c;  ∂a = g
fn offset_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g);
}

// ── y = op(a)·op(b) ────────────────────────────────────────────────────────────────────────

impl<'t, T: Scalar> Var<'t, T> {
    /// y = a·b
    pub fn matmul(self, b: Var<'t, T>) -> Var<'t, T> {
        self.matmul_t(b, false, false)
    }

    /// y = op(a)·op(b), where `ta`/`tb` transpose the operand (a strided view, not a copy).
    /// When b was recorded from a [`crate::Constant`], its packed form is used (and made once).
    pub fn matmul_t(self, b: Var<'t, T>, ta: bool, tb: bool) -> Var<'t, T> {
        self.same_tape(&b);
        let (x, y) = (self.value(), b.value());
        let constant = b.constant();
        let packed = constant.as_ref().and_then(|c| c.packed(tb));
        let value = kernels::gemm::matmul(Self::view_t(&x, ta), Self::view_t(&y, tb), packed);
        let op = Op::MatMul {
            a: self.id,
            b: b.id,
            ta,
            tb,
        };
        self.tape.push(op, value)
    }
}

fn matmul_rule<'t, T: Scalar>(
    r: &mut Rule<'_, 't, T>,
    a: Var<'t, T>,
    b: Var<'t, T>,
    ta: bool,
    tb: bool,
) {
    let g = r.g;
    match (ta, tb) {
        // y = a·b;  ∂a = g·bᵀ, ∂b = aᵀ·g
        (false, false) => {
            r.give(a, || g.matmul_t(b, false, true));
            r.give(b, || a.matmul_t(g, true, false));
        }
        // y = aᵀ·b;  ∂a = b·gᵀ, ∂b = a·g
        (true, false) => {
            r.give(a, || b.matmul_t(g, false, true));
            r.give(b, || a.matmul(g));
        }
        // y = a·bᵀ;  ∂a = g·b, ∂b = gᵀ·a
        (false, true) => {
            r.give(a, || g.matmul(b));
            r.give(b, || g.matmul_t(a, true, false));
        }
        // y = aᵀ·bᵀ;  ∂a = bᵀ·gᵀ, ∂b = gᵀ·aᵀ
        (true, true) => {
            r.give(a, || b.matmul_t(g, true, true));
            r.give(b, || g.matmul_t(a, true, true));
        }
    }
}

// ── y = aᵀ ─────────────────────────────────────────────────────────────────────────────────

impl<'t, T: Scalar> Var<'t, T> {
    /// y = aᵀ
    pub fn t(self) -> Var<'t, T> {
        let value = self.value().t().as_standard_layout().into_owned();
        self.tape.push(Op::Transpose(self.id), value)
    }
}

/// ∂a = gᵀ
fn transpose_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.t());
}

// ── broadcasts and sums: each the other's rule ────────────────────────────────────────────

impl<'t, T: Scalar> Var<'t, T> {
    /// `[1, c]` → `[n, c]`: the row repeated n times
    pub fn broadcast_rows(self, n: usize) -> Var<'t, T> {
        let a = self.value();
        assert_eq!(
            a.nrows(),
            1,
            "broadcast_rows: shape {:?} is not [1, c]",
            a.dim()
        );
        let value = a.broadcast((n, a.ncols())).expect("checked").to_owned();
        self.tape.push(Op::BroadcastRows(self.id), value)
    }

    /// `[r, 1]` → `[r, n]`: the column repeated n times
    pub fn broadcast_cols(self, n: usize) -> Var<'t, T> {
        let a = self.value();
        assert_eq!(
            a.ncols(),
            1,
            "broadcast_cols: shape {:?} is not [r, 1]",
            a.dim()
        );
        let value = a.broadcast((a.nrows(), n)).expect("checked").to_owned();
        self.tape.push(Op::BroadcastCols(self.id), value)
    }

    /// `[1, 1]` → `[r, c]`
    pub fn broadcast_scalar(self, r: usize, c: usize) -> Var<'t, T> {
        let value = Array2::from_elem((r, c), self.item());
        self.tape.push(Op::BroadcastScalar(self.id), value)
    }

    /// y = Σ a, a 1×1 value
    pub fn sum(self) -> Var<'t, T> {
        let value = Array2::from_elem((1, 1), self.value().sum());
        self.tape.push(Op::SumAll(self.id), value)
    }

    /// `[r, c]` → `[1, c]`: the sum of the rows
    pub fn sum_rows(self) -> Var<'t, T> {
        let value = self.value().sum_axis(Axis(0)).insert_axis(Axis(0));
        self.tape.push(Op::SumRows(self.id), value)
    }

    /// `[r, c]` → `[r, 1]`: the sum of the columns
    pub fn sum_cols(self) -> Var<'t, T> {
        let value = self.value().sum_axis(Axis(1)).insert_axis(Axis(1));
        self.tape.push(Op::SumCols(self.id), value)
    }
}

/// y = 1·a (rows repeated);  ∂a = Σ_rows g
fn broadcast_rows_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.sum_rows());
}

/// y = a·1ᵀ (columns repeated);  ∂a = Σ_cols g
fn broadcast_cols_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.sum_cols());
}

/// y = a·11ᵀ;  ∂a = Σ g
fn broadcast_scalar_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.sum());
}

/// y = Σ a;  ∂a = g broadcast to a's shape
fn sum_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || {
        let (rows, cols) = a.shape();
        g.broadcast_scalar(rows, cols)
    });
}

/// y = Σ_rows a;  ∂a = g repeated over the rows
fn sum_rows_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.broadcast_rows(a.shape().0));
}

/// y = Σ_cols a;  ∂a = g repeated over the columns
fn sum_cols_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.broadcast_cols(a.shape().1));
}

// ── fused broadcasts: a row or a column applied to every row or column, never materialised ──

impl<'t, T: Scalar> Var<'t, T> {
    /// Checks that `v` is a [1, c] row (or, with `column`, an [r, 1] column) fitting a.
    fn fits(&self, v: &Var<'t, T>, column: bool, what: &str) {
        self.same_tape(v);
        let (a, b) = (self.shape(), v.shape());
        let ok = if column { b == (a.0, 1) } else { b == (1, a.1) };
        assert!(ok, "{what}: shapes {a:?} and {b:?} do not fit");
    }

    /// y = a + 1·row: adds a `[1, c]` row to every row of a.
    pub fn add_row(self, row: Var<'t, T>) -> Var<'t, T> {
        self.fits(&row, false, "add_row");
        let value = &*self.value() + &*row.value();
        self.tape.push(Op::AddRow(self.id, row.id), value)
    }

    /// y = a·diag(row): multiplies column j of a by row\[j\] for a `[1, c]` row.
    pub fn mul_row(self, row: Var<'t, T>) -> Var<'t, T> {
        self.fits(&row, false, "mul_row");
        let value = &*self.value() * &*row.value();
        self.tape.push(Op::MulRow(self.id, row.id), value)
    }

    /// y = diag(col)·a: multiplies row i of a by col\[i\] for an `[r, 1]` column.
    pub fn mul_col(self, col: Var<'t, T>) -> Var<'t, T> {
        self.fits(&col, true, "mul_col");
        let value = &*self.value() * &*col.value();
        self.tape.push(Op::MulCol(self.id, col.id), value)
    }
}

/// y = a + 1·row;  ∂a = g, ∂row = Σ_rows g
fn add_row_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, row: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g);
    r.give(row, || g.sum_rows());
}

/// y = a·diag(row);  ∂a = g·diag(row), ∂row = Σ_rows (g ⊙ a)
fn mul_row_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, row: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.mul_row(row));
    r.give(row, || (g * a).sum_rows());
}

/// y = diag(col)·a;  ∂a = diag(col)·g, ∂col = Σ_cols (g ⊙ a)
fn mul_col_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, col: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.mul_col(col));
    r.give(col, || (g * a).sum_cols());
}

// ── activations ───────────────────────────────────────────────────────────────────────────

impl<'t, T: Scalar> Var<'t, T> {
    /// y = max(a, 0)
    pub fn relu(self) -> Var<'t, T> {
        self.map_op(Op::Relu(self.id), |x| x.max(T::zero()))
    }

    /// y = σ(a) = 1 / (1 + e^−a)
    pub fn sigmoid(self) -> Var<'t, T> {
        self.map_op(Op::Sigmoid(self.id), scalar::sigmoid)
    }

    /// y = ln(1 + e^a), as max(a, 0) + ln(1 + e^−|a|) so it never overflows
    pub fn softplus(self) -> Var<'t, T> {
        self.map_op(Op::Softplus(self.id), scalar::softplus)
    }

    /// y = eᵃ
    pub fn exp(self) -> Var<'t, T> {
        self.map_op(Op::Exp(self.id), |x| x.exp())
    }

    /// `[r, c]` → `[r, 1]`: y_i = ln Σ_j e^{a_ij}, computed as M_i + ln Σ_j e^{a_ij − M_i} with
    /// M_i = max_j a_ij so it never overflows (the log-partition of a softmax).
    pub fn logsumexp(self) -> Var<'t, T> {
        let a = self.value();
        let value = Array2::from_shape_fn((a.nrows(), 1), |(i, _)| {
            let row = a.row(i);
            let top = row.fold(T::neg_infinity(), |m, &v| m.max(v));
            top + row.fold(T::zero(), |s, &v| s + (v - top).exp()).ln()
        });
        self.tape.push(Op::LogSumExp(self.id), value)
    }

    /// The modified ReLU of the reconstruction: y = max(a, 0), derivative σ(α·a).
    pub fn mrelu(self, alpha: T) -> Var<'t, T> {
        self.map_op(Op::MRelu(self.id, alpha), |x| x.max(T::zero()))
    }

    /// y = a − clamp(a, lo, hi): zero inside [lo, hi], the distance beyond it outside, so
    /// Σ excess(x, −1, 1)² = Σ relu(x − 1)² + Σ relu(−1 − x)² in one op.
    pub fn excess(self, lo: T, hi: T) -> Var<'t, T> {
        assert!(lo <= hi, "excess: empty interval [{lo}, {hi}]");
        self.map_op(Op::Excess(self.id, lo, hi), |x| x - x.max(lo).min(hi))
    }
}

/// y = relu(a);  ∂a = g ⊙ 1[a > 0], the step a constant mask
fn relu_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.mask(a, T::neg_infinity(), T::zero()));
}

/// y = σ(a);  ∂a = g ⊙ (y − y⊙y)
fn sigmoid_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let (g, y) = (r.g, r.y);
    r.give(a, || g * (y - y * y));
}

/// y = softplus(a);  ∂a = g ⊙ σ(a)
fn softplus_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || g.sigmoid_scale(a, T::one()));
}

/// y = eᵃ;  ∂a = g ⊙ y
fn exp_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let (g, y) = (r.g, r.y);
    r.give(a, || g * y);
}

/// y = ln Σ_cols eᵃ;  ∂a = diag(g)·softmax(a), softmax(a) = exp(a − y·1ᵀ)
fn logsumexp_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let (g, y) = (r.g, r.y);
    r.give(a, || (a - y.broadcast_cols(a.shape().1)).exp().mul_col(g));
}

/// y = relu(a) with the surrogate derivative;  ∂a = g ⊙ σ(α·a), itself differentiable
fn mrelu_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, alpha: T) {
    let g = r.g;
    r.give(a, || g.sigmoid_scale(a, alpha));
}

/// y = a − clamp(a, lo, hi);  ∂a = g ⊙ 1[a ∉ [lo, hi]], the mask a constant
fn excess_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, lo: T, hi: T) {
    let g = r.g;
    r.give(a, || g.mask(a, lo, hi));
}

// ── fused products with an activation's derivative (the backward passes are made of these) ─

impl<'t, T: Scalar> Var<'t, T> {
    /// y = x ⊙ 1[z ∉ [lo, hi]]: x where z lies outside [lo, hi], zero inside. The mask is a
    /// constant: no gradient flows to z.
    pub fn mask(self, z: Var<'t, T>, lo: T, hi: T) -> Var<'t, T> {
        let op = Op::Mask {
            x: self.id,
            z: z.id,
            lo,
            hi,
        };
        let outside = move |x: T, z: T| if z < lo || z > hi { x } else { T::zero() };
        self.zip_op(z, op, outside)
    }

    /// y = x ⊙ σ(α·z): the modified ReLU's backward (and softplus's, with α = 1) in one pass.
    pub fn sigmoid_scale(self, z: Var<'t, T>, alpha: T) -> Var<'t, T> {
        let op = Op::SigmoidScale {
            x: self.id,
            z: z.id,
            alpha,
        };
        self.zip_op(z, op, move |x, z| x * scalar::sigmoid(alpha * z))
    }

    /// y = x ⊙ α·σ'(α·z), with σ' = σ(1 − σ): the derivative of [`Var::sigmoid_scale`] in z.
    pub fn sigmoid_prime_scale(self, z: Var<'t, T>, alpha: T) -> Var<'t, T> {
        let op = Op::SigmoidPrimeScale {
            x: self.id,
            z: z.id,
            alpha,
        };
        self.zip_op(z, op, move |x, z| {
            let s = scalar::sigmoid(alpha * z);
            x * alpha * (s - s * s)
        })
    }
}

/// y = x ⊙ mask;  ∂x = g ⊙ mask (z gets nothing)
fn mask_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, x: Var<'t, T>, z: Var<'t, T>, lo: T, hi: T) {
    let g = r.g;
    r.give(x, || g.mask(z, lo, hi));
}

/// y = x ⊙ σ(αz);  ∂x = g ⊙ σ(αz), ∂z = (g ⊙ x) ⊙ α·σ'(αz)
fn sigmoid_scale_rule<'t, T: Scalar>(
    r: &mut Rule<'_, 't, T>,
    x: Var<'t, T>,
    z: Var<'t, T>,
    alpha: T,
) {
    let g = r.g;
    r.give(x, || g.sigmoid_scale(z, alpha));
    r.give(z, || (g * x).sigmoid_prime_scale(z, alpha));
}

/// y = x ⊙ α·s(1 − s), s = σ(αz);  ∂x = g ⊙ α·s(1 − s), ∂z = g ⊙ x ⊙ α²·s(1 − s)(1 − 2s)
fn sigmoid_prime_scale_rule<'t, T: Scalar>(
    r: &mut Rule<'_, 't, T>,
    x: Var<'t, T>,
    z: Var<'t, T>,
    alpha: T,
) {
    let g = r.g;
    r.give(x, || g.sigmoid_prime_scale(z, alpha));
    r.give(z, || {
        let s = z.scale(alpha).sigmoid();
        let one_minus_2s = s.scale(-T::from_f64(2.0)).offset(T::one());
        ((g * x).sigmoid_prime_scale(z, alpha) * one_minus_2s).scale(alpha)
    });
}

// ── images: convolution and pooling as pairs of linear maps, each the other's rule ─────────
//
// An image batch is a matrix [n·H·W, C]: one row per pixel, the channels in the columns. A
// convolution with weights w [O, C·k·k] (PyTorch's layout, flattened) is then
//
//     y = unfold(x) · channels_last(w)ᵀ + 1·b        [n·OH·OW, O]
//
// the output again one row per pixel, so layers chain with no reordering. unfold and fold are
// each other's transpose, as are avg_pool and avg_pool_t, channels_last and channels_first: each
// op's rule is its partner applied to g, so gradients of gradients need nothing new.

impl<'t, T: Scalar> Var<'t, T> {
    /// The same values in another shape (row-major order kept): [r, c] → [rows, cols].
    pub fn reshape(self, rows: usize, cols: usize) -> Var<'t, T> {
        let a = self.value();
        assert_eq!(
            a.len(),
            rows * cols,
            "reshape: shape {:?} does not hold [{rows}, {cols}]",
            a.dim()
        );
        let value = a
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((rows, cols))
            .expect("standard layout");
        self.tape.push(Op::Reshape(self.id), value)
    }

    /// Per row, channel-major [C, S] → channels last [S, C]: [r, C·S] → [r, S·C].
    pub fn channels_last(self, channels: usize) -> Var<'t, T> {
        let value = patches::channels_last(&self.value(), channels);
        self.tape.push(Op::ChannelsLast(self.id, channels), value)
    }

    /// Per row, channels last [S, C] → channel-major [C, S]: the inverse of `channels_last`.
    pub fn channels_first(self, channels: usize) -> Var<'t, T> {
        let value = patches::channels_first(&self.value(), channels);
        self.tape.push(Op::ChannelsFirst(self.id, channels), value)
    }

    /// im2col: [n·H·W, C] → [n·OH·OW, k·k·C], one row per window, its pixels in (ky, kx, c) order.
    pub fn unfold(self, geometry: Patches) -> Var<'t, T> {
        let value = patches::unfold(&self.value(), &geometry);
        self.tape.push(Op::Unfold(self.id, geometry), value)
    }

    /// col2im: [n·OH·OW, k·k·C] → [n·H·W, C], each window added back to its pixels (unfoldᵀ).
    pub fn fold(self, geometry: Patches) -> Var<'t, T> {
        let value = patches::fold(&self.value(), &geometry);
        self.tape.push(Op::Fold(self.id, geometry), value)
    }

    /// Average pooling: [n·H·W, C] → [n·OH·OW, C], each window's mean (padding counts as 0).
    pub fn avg_pool(self, geometry: Patches) -> Var<'t, T> {
        let value = patches::avg_pool(&self.value(), &geometry);
        self.tape.push(Op::AvgPool(self.id, geometry), value)
    }

    /// avg_poolᵀ: [n·OH·OW, C] → [n·H·W, C], each window's value spread over it, divided by k².
    pub fn avg_pool_t(self, geometry: Patches) -> Var<'t, T> {
        let value = patches::avg_pool_t(&self.value(), &geometry);
        self.tape.push(Op::AvgPoolT(self.id, geometry), value)
    }
}

/// y = reshape(a);  ∂a = g reshaped back to a's shape
fn reshape_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>) {
    let g = r.g;
    r.give(a, || {
        let (rows, cols) = a.shape();
        g.reshape(rows, cols)
    });
}

/// y = channels_last(a), a permutation;  ∂a = channels_first(g), its inverse
fn channels_last_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, c: usize) {
    let g = r.g;
    r.give(a, || g.channels_first(c));
}

/// y = channels_first(a);  ∂a = channels_last(g)
fn channels_first_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, c: usize) {
    let g = r.g;
    r.give(a, || g.channels_last(c));
}

/// y = U·a (unfold is linear);  ∂a = Uᵀ·g = fold(g)
fn unfold_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, geometry: Patches) {
    let g = r.g;
    r.give(a, || g.fold(geometry));
}

/// y = Uᵀ·a;  ∂a = U·g = unfold(g)
fn fold_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, geometry: Patches) {
    let g = r.g;
    r.give(a, || g.unfold(geometry));
}

/// y = P·a (pooling is linear);  ∂a = Pᵀ·g = avg_pool_t(g)
fn avg_pool_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, geometry: Patches) {
    let g = r.g;
    r.give(a, || g.avg_pool_t(geometry));
}

/// y = Pᵀ·a;  ∂a = P·g = avg_pool(g)
fn avg_pool_t_rule<'t, T: Scalar>(r: &mut Rule<'_, 't, T>, a: Var<'t, T>, geometry: Patches) {
    let g = r.g;
    r.give(a, || g.avg_pool(geometry));
}

// ── the one match ─────────────────────────────────────────────────────────────────────────

/// The backward rule of node `id`: given its upstream gradient `g`, the contribution to each
/// operand for which `wanted(operand)` holds, as `(operand, ∂operand)`.
pub(crate) fn backward<'t, T: Scalar>(
    tape: &'t Tape<T>,
    id: usize,
    g: Var<'t, T>,
    wanted: &dyn Fn(usize) -> bool,
    out: &mut Vec<(usize, Var<'t, T>)>,
) {
    let v = |i: usize| tape.handle(i);
    let r = &mut Rule {
        g,
        y: v(id),
        wanted,
        out,
    };
    match tape.op(id) {
        Op::Leaf => {}
        Op::Add(a, b) => add_rule(r, v(a), v(b)),
        Op::Sub(a, b) => sub_rule(r, v(a), v(b)),
        Op::Mul(a, b) => mul_rule(r, v(a), v(b)),
        Op::Scale(a, c) => scale_rule(r, v(a), c),
        Op::Offset(a, _) => offset_rule(r, v(a)),
        Op::MatMul { a, b, ta, tb } => matmul_rule(r, v(a), v(b), ta, tb),
        Op::Transpose(a) => transpose_rule(r, v(a)),
        Op::BroadcastRows(a) => broadcast_rows_rule(r, v(a)),
        Op::BroadcastCols(a) => broadcast_cols_rule(r, v(a)),
        Op::BroadcastScalar(a) => broadcast_scalar_rule(r, v(a)),
        Op::SumAll(a) => sum_rule(r, v(a)),
        Op::SumRows(a) => sum_rows_rule(r, v(a)),
        Op::SumCols(a) => sum_cols_rule(r, v(a)),
        Op::AddRow(a, row) => add_row_rule(r, v(a), v(row)),
        Op::MulRow(a, row) => mul_row_rule(r, v(a), v(row)),
        Op::MulCol(a, col) => mul_col_rule(r, v(a), v(col)),
        Op::Relu(a) => relu_rule(r, v(a)),
        Op::Sigmoid(a) => sigmoid_rule(r, v(a)),
        Op::Softplus(a) => softplus_rule(r, v(a)),
        Op::Exp(a) => exp_rule(r, v(a)),
        Op::LogSumExp(a) => logsumexp_rule(r, v(a)),
        Op::MRelu(a, alpha) => mrelu_rule(r, v(a), alpha),
        Op::Excess(a, lo, hi) => excess_rule(r, v(a), lo, hi),
        Op::Mask { x, z, lo, hi } => mask_rule(r, v(x), v(z), lo, hi),
        Op::SigmoidScale { x, z, alpha } => sigmoid_scale_rule(r, v(x), v(z), alpha),
        Op::SigmoidPrimeScale { x, z, alpha } => sigmoid_prime_scale_rule(r, v(x), v(z), alpha),
        Op::Reshape(a) => reshape_rule(r, v(a)),
        Op::ChannelsLast(a, c) => channels_last_rule(r, v(a), c),
        Op::ChannelsFirst(a, c) => channels_first_rule(r, v(a), c),
        Op::Unfold(a, geometry) => unfold_rule(r, v(a), geometry),
        Op::Fold(a, geometry) => fold_rule(r, v(a), geometry),
        Op::AvgPool(a, geometry) => avg_pool_rule(r, v(a), geometry),
        Op::AvgPoolT(a, geometry) => avg_pool_t_rule(r, v(a), geometry),
    }
}
