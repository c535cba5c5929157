//! The tape: a `Vec` of nodes in the order they were recorded, which is a topological order.
//!
//! Every op computes its value eagerly and appends one [`Node`] holding that value and the ids of
//! its operands. A [`Var`] is a `Copy` handle: the tape and an index into it.
//! The reverse sweep lives in [`crate::grad`]; every op's backward rule is in [`Tape::backward_rule`],
//! written with these same ops, so the gradient of a gradient needs nothing extra.

use std::cell::RefCell;
use std::sync::Arc;

use ndarray::{Array2, ArrayView2, Axis, Zip};
use rayon::prelude::*;

use crate::scalar::{self, Scalar};

/// One recorded operation: what it was and which node ids it read.
///
/// Shapes noted as `[rows, cols]`; `g` is the upstream gradient, the same shape as the output.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op<T> {
    /// An input or a constant: nothing to propagate to.
    Leaf,
    /// y = a + b
    Add(usize, usize),
    /// y = a − b
    Sub(usize, usize),
    /// y = a ⊙ b (elementwise)
    Mul(usize, usize),
    /// y = c·a for a constant c
    Scale(usize, T),
    /// y = a + c for a constant c
    Offset(usize, T),
    /// y = op(a)·op(b) where op transposes when the flag is set (no copy is made)
    MatMul {
        a: usize,
        b: usize,
        ta: bool,
        tb: bool,
    },
    /// y = aᵀ
    Transpose(usize),
    /// [1,c] → [n,c]: the row repeated n times
    BroadcastRows(usize),
    /// [r,1] → [r,n]: the column repeated n times
    BroadcastCols(usize),
    /// [1,1] → [r,c]
    BroadcastScalar(usize),
    /// [r,c] → [1,1]: y = Σ a
    SumAll(usize),
    /// [r,c] → [1,c]: sum over rows
    SumRows(usize),
    /// [r,c] → [r,1]: sum over columns
    SumCols(usize),
    /// y = max(a, 0)
    Relu(usize),
    /// y = σ(a)
    Sigmoid(usize),
    /// y = ln(1 + e^a)
    Softplus(usize),
    /// modified ReLU: y = max(a, 0), but its derivative is σ(α·a)
    MRelu(usize, T),
    /// y = a − clamp(a, lo, hi): how far a lies outside [lo, hi]
    Excess(usize, T, T),
}

impl<T> Op<T> {
    /// The operand ids of this op (at most two).
    pub(crate) fn operands(&self) -> [Option<usize>; 2] {
        use Op::*;
        match *self {
            Leaf => [None, None],
            Add(a, b) | Sub(a, b) | Mul(a, b) | MatMul { a, b, .. } => [Some(a), Some(b)],
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
            | MRelu(a, _)
            | Excess(a, _, _) => [Some(a), None],
        }
    }
}

/// A recorded value and the op that produced it.
pub(crate) struct Node<T> {
    pub(crate) op: Op<T>,
    pub(crate) value: Arc<Array2<T>>,
}

/// A reverse-mode tape of whole-matrix ops.
#[derive(Default)]
pub struct Tape<T: Scalar> {
    pub(crate) nodes: RefCell<Vec<Node<T>>>,
}

/// A handle to one node of a [`Tape`]: cheap to copy, used like a value.
#[derive(Clone, Copy)]
pub struct Var<'t, T: Scalar> {
    pub(crate) tape: &'t Tape<T>,
    pub(crate) id: usize,
}

impl<T: Scalar> Tape<T> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            nodes: RefCell::new(Vec::new()),
        }
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records an input (a leaf that gradients may be asked for).
    pub fn var(&self, value: impl Into<Arc<Array2<T>>>) -> Var<'_, T> {
        self.push_shared(Op::Leaf, value.into())
    }

    /// Records a constant. It is a leaf like [`Tape::var`]; the name says no gradient is wanted.
    pub fn constant(&self, value: impl Into<Arc<Array2<T>>>) -> Var<'_, T> {
        self.var(value)
    }

    /// Records a 1×1 constant.
    pub fn scalar(&self, value: T) -> Var<'_, T> {
        self.var(Array2::from_elem((1, 1), value))
    }

    pub(crate) fn push(&self, op: Op<T>, value: Array2<T>) -> Var<'_, T> {
        self.push_shared(op, Arc::new(value))
    }

    fn push_shared(&self, op: Op<T>, value: Arc<Array2<T>>) -> Var<'_, T> {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node { op, value });
        Var {
            tape: self,
            id: nodes.len() - 1,
        }
    }

    pub(crate) fn op(&self, id: usize) -> Op<T> {
        self.nodes.borrow()[id].op
    }

    pub(crate) fn handle(&self, id: usize) -> Var<'_, T> {
        Var { tape: self, id }
    }

    /// Drops every node from `len` on. Only for handles nobody holds (used by `grad`).
    pub(crate) fn truncate(&self, len: usize) {
        self.nodes.borrow_mut().truncate(len);
    }

    /// The backward rule of node `id`: given its upstream gradient `g`, the contribution to each
    /// operand for which `wanted(operand)` holds, as `(operand, ∂operand)`.
    ///
    /// Every rule is written with the tape's own ops, so with `create_graph` the gradients are
    /// themselves recorded and can be differentiated again. Non-differentiable masks (the ReLU
    /// step) enter as constants.
    pub(crate) fn backward_rule<'t>(
        &'t self,
        id: usize,
        g: Var<'t, T>,
        wanted: impl Fn(usize) -> bool,
        out: &mut Vec<(usize, Var<'t, T>)>,
    ) {
        let v = |i: usize| self.handle(i);
        let mut give = |i: usize, make: &dyn Fn() -> Var<'t, T>| {
            if wanted(i) {
                out.push((i, make()));
            }
        };
        match self.op(id) {
            Op::Leaf => {}
            // y = a + b;  ∂a = g, ∂b = g
            Op::Add(a, b) => {
                give(a, &|| g);
                give(b, &|| g);
            }
            // y = a − b;  ∂a = g, ∂b = −g
            Op::Sub(a, b) => {
                give(a, &|| g);
                give(b, &|| g.scale(-T::one()));
            }
            // y = a ⊙ b;  ∂a = g ⊙ b, ∂b = g ⊙ a
            Op::Mul(a, b) => {
                give(a, &|| g * v(b));
                give(b, &|| g * v(a));
            }
            // y = c·a;  ∂a = c·g
            Op::Scale(a, c) => give(a, &|| g.scale(c)),
            // y = a + c;  ∂a = g
            Op::Offset(a, _) => give(a, &|| g),
            Op::MatMul { a, b, ta, tb } => match (ta, tb) {
                // y = a·b;  ∂a = g·bᵀ, ∂b = aᵀ·g
                (false, false) => {
                    give(a, &|| g.matmul_t(v(b), false, true));
                    give(b, &|| v(a).matmul_t(g, true, false));
                }
                // y = aᵀ·b;  ∂a = b·gᵀ, ∂b = a·g
                (true, false) => {
                    give(a, &|| v(b).matmul_t(g, false, true));
                    give(b, &|| v(a).matmul(g));
                }
                // y = a·bᵀ;  ∂a = g·b, ∂b = gᵀ·a
                (false, true) => {
                    give(a, &|| g.matmul(v(b)));
                    give(b, &|| g.matmul_t(v(a), true, false));
                }
                // y = aᵀ·bᵀ;  ∂a = bᵀ·gᵀ, ∂b = gᵀ·aᵀ
                (true, true) => {
                    give(a, &|| v(b).matmul_t(g, true, true));
                    give(b, &|| g.matmul_t(v(a), true, true));
                }
            },
            // y = aᵀ;  ∂a = gᵀ
            Op::Transpose(a) => give(a, &|| g.t()),
            // y = 1·a (rows repeated);  ∂a = Σ_rows g
            Op::BroadcastRows(a) => give(a, &|| g.sum_rows()),
            // y = a·1ᵀ (columns repeated);  ∂a = Σ_cols g
            Op::BroadcastCols(a) => give(a, &|| g.sum_cols()),
            // y = a·11ᵀ;  ∂a = Σ g
            Op::BroadcastScalar(a) => give(a, &|| g.sum()),
            // y = Σ a;  ∂a = g broadcast to a's shape
            Op::SumAll(a) => give(a, &|| {
                let (r, c) = v(a).shape();
                g.broadcast_scalar(r, c)
            }),
            // y = Σ_rows a;  ∂a = g repeated over the rows
            Op::SumRows(a) => give(a, &|| g.broadcast_rows(v(a).shape().0)),
            // y = Σ_cols a;  ∂a = g repeated over the columns
            Op::SumCols(a) => give(a, &|| g.broadcast_cols(v(a).shape().1)),
            // y = relu(a);  ∂a = g ⊙ 1[a>0], the step entering as a constant
            Op::Relu(a) => give(a, &|| {
                let step = map_values(&v(a).value(), |t| {
                    if t > T::zero() {
                        T::one()
                    } else {
                        T::zero()
                    }
                });
                g * self.constant(step)
            }),
            // y = σ(a);  ∂a = g ⊙ (y − y⊙y)
            Op::Sigmoid(a) => give(a, &|| {
                let y = v(id);
                g * (y - y * y)
            }),
            // y = softplus(a);  ∂a = g ⊙ σ(a)
            Op::Softplus(a) => give(a, &|| g * v(a).sigmoid()),
            // y = relu(a) with the surrogate derivative;  ∂a = g ⊙ σ(α·a), itself differentiable
            Op::MRelu(a, alpha) => give(a, &|| g * v(a).scale(alpha).sigmoid()),
            // y = a − clamp(a, lo, hi);  ∂a = g ⊙ 1[a ∉ [lo, hi]], the mask entering as a constant
            Op::Excess(a, lo, hi) => give(a, &|| {
                let outside = map_values(&v(a).value(), |t| {
                    if t < lo || t > hi {
                        T::one()
                    } else {
                        T::zero()
                    }
                });
                g * self.constant(outside)
            }),
        }
    }
}

/// GEMMs with at least this many multiply-adds are split across threads.
const PARALLEL_GEMM: usize = 1 << 20;

/// Elementwise ops on at least this many elements are split across rayon threads (elementwise,
/// so the result does not depend on the thread count).
pub const PARALLEL_ELEMENTWISE: usize = 1 << 15;

/// f applied to every element, split across threads when the array is large.
fn map_values<T: Scalar>(a: &Array2<T>, f: impl Fn(T) -> T + Sync + Send) -> Array2<T> {
    if a.len() >= PARALLEL_ELEMENTWISE {
        Zip::from(a).par_map_collect(|&x| f(x))
    } else {
        a.mapv(f)
    }
}

/// f applied to every pair of elements of two equally shaped arrays, split across threads when
/// they are large.
pub fn zip_values<T: Scalar>(
    a: &Array2<T>,
    b: &Array2<T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Array2<T> {
    assert_eq!(
        a.dim(),
        b.dim(),
        "zip_values: shapes {:?} and {:?} differ",
        a.dim(),
        b.dim()
    );
    let zip = Zip::from(a).and(b);
    if a.len() >= PARALLEL_ELEMENTWISE {
        zip.par_map_collect(|&x, &y| f(x, y))
    } else {
        zip.map_collect(|&x, &y| f(x, y))
    }
}

/// C = op(a)·op(b) with matrixmultiply (transposed views are strides, not copies): small
/// products through ndarray's `dot`, large ones split into column blocks of C, one per rayon
/// thread, each a single-threaded call of [`Scalar::GEMM`]: at these shapes that runs at 1.7–2× matrixmultiply's own threading
/// (e.g. 200×3072×1000: 197 against 107 GFLOP/s on 2 cores). Each element is still computed by
/// one thread in a fixed order, so results do not depend on the thread count.
fn matmul_values<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    assert_eq!(
        a.ncols(),
        b.nrows(),
        "matmul: inner dimensions differ: {:?} · {:?}",
        a.dim(),
        b.dim()
    );
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let threads = rayon::current_num_threads();
    if m * k * n < PARALLEL_GEMM || threads < 2 || n < 2 * threads {
        return a.dot(&b);
    }
    // Every element is written by one block's GEMM with β = 0, which does not read C, so the
    // output needs no zeroing first.
    let mut c = Array2::<T>::uninit((m, n));
    let width = n.div_ceil(threads);
    c.axis_chunks_iter_mut(Axis(1), width)
        .into_par_iter()
        .zip(b.axis_chunks_iter(Axis(1), width).into_par_iter())
        .for_each(|(mut c_block, b_block)| {
            let (sa, sb, sc) = (a.strides(), b_block.strides(), c_block.strides());
            let (rs, cs) = (sc[0], sc[1]);
            let out = c_block.as_mut_ptr() as *mut T;
            // SAFETY: A (m×k), this B block (k×cols) and this C block (m×cols) are addressed
            // with their own strides; gemm writes every element of the C block and, with β = 0,
            // reads none.
            unsafe {
                (T::GEMM)(
                    m,
                    k,
                    b_block.ncols(),
                    T::one(),
                    a.as_ptr(),
                    sa[0],
                    sa[1],
                    b_block.as_ptr(),
                    sb[0],
                    sb[1],
                    T::zero(),
                    out,
                    rs,
                    cs,
                )
            };
        });
    // SAFETY: the blocks cover every column, so every element was written above.
    unsafe { c.assume_init() }
}

impl<'t, T: Scalar> Var<'t, T> {
    /// The tape this variable lives on.
    pub fn tape(&self) -> &'t Tape<T> {
        self.tape
    }

    /// Index of this node on its tape.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The node's value (shared, not copied).
    pub fn value(&self) -> Arc<Array2<T>> {
        Arc::clone(&self.tape.nodes.borrow()[self.id].value)
    }

    /// `[rows, cols]` of the value.
    pub fn shape(&self) -> (usize, usize) {
        self.value().dim()
    }

    /// The single element of a 1×1 value.
    pub fn item(&self) -> T {
        let v = self.value();
        assert_eq!(
            v.dim(),
            (1, 1),
            "item: value has shape {:?}, not [1, 1]",
            v.dim()
        );
        v[[0, 0]]
    }

    fn same_tape(&self, other: &Var<'t, T>) {
        assert!(
            std::ptr::eq(self.tape, other.tape),
            "operands live on different tapes"
        );
    }

    /// Elementwise binary op on equal shapes.
    fn zip(self, other: Var<'t, T>, op: Op<T>, f: impl Fn(T, T) -> T + Sync + Send) -> Var<'t, T> {
        self.same_tape(&other);
        let (a, b) = (self.value(), other.value());
        assert_eq!(
            a.dim(),
            b.dim(),
            "{op:?}: shapes {:?} and {:?} differ",
            a.dim(),
            b.dim()
        );
        let value = zip_values(&a, &b, f);
        self.tape.push(op, value)
    }

    /// Elementwise unary op.
    fn map(self, op: Op<T>, f: impl Fn(T) -> T + Sync + Send) -> Var<'t, T> {
        let value = map_values(&self.value(), f);
        self.tape.push(op, value)
    }

    /// y = c·a
    pub fn scale(self, c: T) -> Var<'t, T> {
        self.map(Op::Scale(self.id, c), |x| c * x)
    }

    /// y = a + c
    pub fn offset(self, c: T) -> Var<'t, T> {
        self.map(Op::Offset(self.id, c), |x| x + c)
    }

    /// y = a ⊙ a
    pub fn square(self) -> Var<'t, T> {
        self * self
    }

    /// y = a·b
    pub fn matmul(self, b: Var<'t, T>) -> Var<'t, T> {
        self.matmul_t(b, false, false)
    }

    /// y = op(a)·op(b), where `ta`/`tb` transpose the operand (a strided view, not a copy).
    pub fn matmul_t(self, b: Var<'t, T>, ta: bool, tb: bool) -> Var<'t, T> {
        self.same_tape(&b);
        let (x, y) = (self.value(), b.value());
        let x = if ta { x.t() } else { x.view() };
        let y = if tb { y.t() } else { y.view() };
        let value = matmul_values(x, y);
        let op = Op::MatMul {
            a: self.id,
            b: b.id,
            ta,
            tb,
        };
        self.tape.push(op, value)
    }

    /// y = aᵀ
    pub fn t(self) -> Var<'t, T> {
        let value = self.value().t().as_standard_layout().into_owned();
        self.tape.push(Op::Transpose(self.id), value)
    }

    /// [1,c] → [n,c]
    pub fn broadcast_rows(self, n: usize) -> Var<'t, T> {
        let value = {
            let a = self.value();
            assert_eq!(
                a.nrows(),
                1,
                "broadcast_rows: shape {:?} is not [1, c]",
                a.dim()
            );
            a.broadcast((n, a.ncols())).expect("checked").to_owned()
        };
        self.tape.push(Op::BroadcastRows(self.id), value)
    }

    /// [r,1] → [r,n]
    pub fn broadcast_cols(self, n: usize) -> Var<'t, T> {
        let value = {
            let a = self.value();
            assert_eq!(
                a.ncols(),
                1,
                "broadcast_cols: shape {:?} is not [r, 1]",
                a.dim()
            );
            a.broadcast((a.nrows(), n)).expect("checked").to_owned()
        };
        self.tape.push(Op::BroadcastCols(self.id), value)
    }

    /// [1,1] → [r,c]
    pub fn broadcast_scalar(self, r: usize, c: usize) -> Var<'t, T> {
        let value = Array2::from_elem((r, c), self.item());
        self.tape.push(Op::BroadcastScalar(self.id), value)
    }

    /// y = Σ a, a 1×1 value
    pub fn sum(self) -> Var<'t, T> {
        let value = Array2::from_elem((1, 1), self.value().sum());
        self.tape.push(Op::SumAll(self.id), value)
    }

    /// [r,c] → [1,c]: the sum of the rows
    pub fn sum_rows(self) -> Var<'t, T> {
        let value = self.value().sum_axis(Axis(0)).insert_axis(Axis(0));
        self.tape.push(Op::SumRows(self.id), value)
    }

    /// [r,c] → [r,1]: the sum of the columns
    pub fn sum_cols(self) -> Var<'t, T> {
        let value = self.value().sum_axis(Axis(1)).insert_axis(Axis(1));
        self.tape.push(Op::SumCols(self.id), value)
    }

    /// y = max(a, 0)
    pub fn relu(self) -> Var<'t, T> {
        self.map(Op::Relu(self.id), |x| x.max(T::zero()))
    }

    /// y = σ(a) = 1 / (1 + e^−a)
    pub fn sigmoid(self) -> Var<'t, T> {
        self.map(Op::Sigmoid(self.id), scalar::sigmoid)
    }

    /// y = ln(1 + e^a), as max(a, 0) + ln(1 + e^−|a|) so it never overflows
    pub fn softplus(self) -> Var<'t, T> {
        self.map(Op::Softplus(self.id), scalar::softplus)
    }

    /// The modified ReLU of the reconstruction: y = max(a, 0), derivative σ(α·a).
    pub fn mrelu(self, alpha: T) -> Var<'t, T> {
        self.map(Op::MRelu(self.id, alpha), |x| x.max(T::zero()))
    }

    /// y = a − clamp(a, lo, hi): zero inside [lo, hi], the distance beyond it outside, so
    /// Σ excess(x, −1, 1)² = Σ relu(x − 1)² + Σ relu(−1 − x)² in one op.
    pub fn excess(self, lo: T, hi: T) -> Var<'t, T> {
        assert!(lo <= hi, "excess: empty interval [{lo}, {hi}]");
        self.map(Op::Excess(self.id, lo, hi), |x| x - x.max(lo).min(hi))
    }

    /// y = a + 1·rowᵀ: adds a [1,c] row to every row of a.
    pub fn add_row(self, row: Var<'t, T>) -> Var<'t, T> {
        self + row.broadcast_rows(self.shape().0)
    }

    /// y = diag(col)·a: multiplies row i of a by col[i] for a [r,1] column.
    pub fn mul_col(self, col: Var<'t, T>) -> Var<'t, T> {
        self * col.broadcast_cols(self.shape().1)
    }
}

impl<'t, T: Scalar> std::ops::Add for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = a + b (equal shapes)
    fn add(self, b: Self) -> Self {
        self.zip(b, Op::Add(self.id, b.id), |x, y| x + y)
    }
}

impl<'t, T: Scalar> std::ops::Sub for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = a − b (equal shapes)
    fn sub(self, b: Self) -> Self {
        self.zip(b, Op::Sub(self.id, b.id), |x, y| x - y)
    }
}

impl<'t, T: Scalar> std::ops::Mul for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = a ⊙ b (elementwise, equal shapes)
    fn mul(self, b: Self) -> Self {
        self.zip(b, Op::Mul(self.id, b.id), |x, y| x * y)
    }
}

impl<'t, T: Scalar> std::ops::Neg for Var<'t, T> {
    type Output = Var<'t, T>;
    /// y = −a
    fn neg(self) -> Self {
        self.scale(-T::one())
    }
}

impl<T: Scalar> std::fmt::Debug for Var<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var#{}{:?}", self.id, self.shape())
    }
}
