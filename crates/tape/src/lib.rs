#![warn(missing_docs)]
//! # reveal-tape
//!
//! A small reverse-mode automatic differentiation tape of whole-matrix ops, with gradients of
//! gradients. Values are `ndarray` 2-D arrays of `f32` or `f64`.
//!
//! - A [`Tape`] is a `Vec` of nodes in recording order (a topological order).
//! - A [`Var`] is a `Copy` handle to one node; ops on it compute eagerly and record themselves.
//! - [`grad`] runs the reverse sweep. All backward rules are in one `match` and are written with the
//!   same ops as the forward pass, so with `create_graph = true` the gradient is itself on the tape
//!   and can be differentiated again.
//! - [`check`] holds `gradcheck` and `gradgradcheck` (central differences in f64).
//!
//! A second derivative in a few lines: for y = Σ x³, ∂y/∂x = 3x² and ∂/∂x Σ 3x² = 6x.
//!
//! ```
//! use ndarray::array;
//! use reveal_tape::{grad, Tape};
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.var(array![[1.0, 2.0]]);
//! let y = (x * x * x).sum();                   // y = Σ x³
//! let dx = grad(y, &[x], true)[0];             // 3x², recorded on the tape
//! assert_eq!(*dx.value(), array![[3.0, 12.0]]);
//! let ddx = grad(dx.sum(), &[x], false)[0];    // 6x
//! assert_eq!(*ddx.value(), array![[6.0, 12.0]]);
//! ```

pub mod check;
mod grad;
pub mod kernels;
mod ops;
pub mod scalar;
mod tape;

pub use grad::grad;
pub use kernels::patches::Patches;
pub use scalar::Scalar;
pub use tape::{Constant, Tape, Var};
