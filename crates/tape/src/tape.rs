//! The tape: a `Vec` of nodes in the order they were recorded, which is a topological order.
//!
//! Every op computes its value eagerly and appends one node holding that value and the ids of
//! its operands (the ops and their backward rules are in [`crate::ops`]). A [`Var`] is a `Copy`
//! handle: the tape and an index into it. The reverse sweep lives in [`crate::grad`].

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use ndarray::{Array2, ArrayView2};

use crate::kernels::PackedB;
use crate::ops::Op;
use crate::scalar::Scalar;

/// A matrix that many tapes read and none changes, such as a model's weights during a
/// reconstruction: shared without copies, and packed for the matrix product the first time a
/// product takes it as its right-hand operand (plain or transposed), then kept packed.
pub struct Constant<T> {
    value: Arc<Array2<T>>,
    /// The packed forms as a right-hand operand: [as is, transposed]. `None` inside when the
    /// selected GEMM packs nothing.
    packed: [OnceLock<Option<PackedB<T>>>; 2],
    /// ‖value‖², once asked for.
    squared_norm: OnceLock<T>,
}

impl<T: Scalar> Constant<T> {
    /// Wraps a matrix (nothing is packed until a product needs it).
    pub fn new(value: impl Into<Arc<Array2<T>>>) -> Self {
        Constant {
            value: value.into(),
            packed: [OnceLock::new(), OnceLock::new()],
            squared_norm: OnceLock::new(),
        }
    }

    /// ‖value‖² = Σ v², computed once.
    pub fn squared_norm(&self) -> T {
        *self.squared_norm.get_or_init(|| {
            // ndarray's dot sums with several accumulators, which vectorises where a fold cannot.
            let flat = self.value.as_standard_layout();
            let flat = ndarray::ArrayView1::from(flat.as_slice().expect("standard layout"));
            flat.dot(&flat)
        })
    }

    /// The matrix.
    pub fn value(&self) -> &Arc<Array2<T>> {
        &self.value
    }

    /// The packed form of the matrix (`transposed`: of its transpose), made on first use.
    pub(crate) fn packed(&self, transposed: bool) -> Option<&PackedB<T>> {
        self.packed[transposed as usize]
            .get_or_init(|| {
                let v = if transposed {
                    self.value.t()
                } else {
                    self.value.view()
                };
                PackedB::new(v)
            })
            .as_ref()
    }
}

impl<T> std::fmt::Debug for Constant<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Constant{:?}", self.value.dim())
    }
}

/// A recorded value and the op that produced it.
pub(crate) struct Node<T: Scalar> {
    pub(crate) op: Op<T>,
    pub(crate) value: Arc<Array2<T>>,
    /// Set for leaves recorded from a [`Constant`]: where their packed forms are kept.
    pub(crate) constant: Option<Arc<Constant<T>>>,
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
        self.push_node(Op::Leaf, value.into(), None)
    }

    /// Records a constant. It is a leaf like [`Tape::var`]; the name says no gradient is wanted.
    pub fn constant(&self, value: impl Into<Arc<Array2<T>>>) -> Var<'_, T> {
        self.var(value)
    }

    /// Records a shared [`Constant`]: a leaf whose packed forms are kept in `c` for later tapes.
    pub fn shared(&self, c: &Arc<Constant<T>>) -> Var<'_, T> {
        self.push_node(Op::Leaf, Arc::clone(&c.value), Some(Arc::clone(c)))
    }

    /// Records a 1×1 constant.
    pub fn scalar(&self, value: T) -> Var<'_, T> {
        self.var(Array2::from_elem((1, 1), value))
    }

    pub(crate) fn push(&self, op: Op<T>, value: Array2<T>) -> Var<'_, T> {
        self.push_node(op, Arc::new(value), None)
    }

    fn push_node(
        &self,
        op: Op<T>,
        value: Arc<Array2<T>>,
        constant: Option<Arc<Constant<T>>>,
    ) -> Var<'_, T> {
        crate::kernels::count::recorded(value.len() * std::mem::size_of::<T>());
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            op,
            value,
            constant,
        });
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

    /// The [`Constant`] this leaf was recorded from, if any.
    pub fn constant(&self) -> Option<Arc<Constant<T>>> {
        self.tape.nodes.borrow()[self.id].constant.clone()
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

    pub(crate) fn same_tape(&self, other: &Var<'t, T>) {
        assert!(
            std::ptr::eq(self.tape, other.tape),
            "operands live on different tapes"
        );
    }

    /// The value, transposed when `t` is set (a view with swapped strides, not a copy).
    pub(crate) fn view_t(value: &Array2<T>, t: bool) -> ArrayView2<'_, T> {
        if t {
            value.t()
        } else {
            value.view()
        }
    }
}

impl<T: Scalar> std::fmt::Debug for Var<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var#{}{:?}", self.id, self.shape())
    }
}
