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
mod scalar;
mod tape;

pub use grad::grad;
pub use scalar::{sigmoid, softplus, Scalar};
pub use tape::{zip_values, Tape, Var, PARALLEL_ELEMENTWISE};

/// Asks glibc's allocator to keep freed memory instead of returning it to the system.
///
/// A tape allocates fresh arrays for every op and drops them all after the step; by default
/// glibc serves large arrays with `mmap` and unmaps them on free, so every step pays page faults
/// on memory it just gave back. Raising the mmap and trim thresholds keeps that memory in the
/// heap for the next step. A no-op on other platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called with valid options.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum: larger values are ignored
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
