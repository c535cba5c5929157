//! The one scalar trait the tape is generic over: `f32` for runs, `f64` for checks.

use std::fmt::{Debug, Display};

use ndarray::{ArrayView2, LinalgScalar, ScalarOperand};
use num_traits::Float;

/// A floating-point element type the tape can work in (`f32` or `f64`).
pub trait Scalar:
    Float + LinalgScalar + ScalarOperand + Debug + Display + Default + Send + Sync + 'static
{
    /// Converts from `f64` (rounding for `f32`).
    fn from_f64(v: f64) -> Self;
    /// Widens to `f64`.
    fn as_f64(self) -> f64;
    /// Short name for messages and file metadata: `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// C = A·B with matrixmultiply, where C is `dim` = (rows, cols) elements at `c` with
    /// `strides` (in elements). β = 0: C is written, never read, so it may be uninitialised.
    ///
    /// # Safety
    /// `c` must be valid for writes of every element the dimensions and strides address.
    unsafe fn gemm(
        a: ArrayView2<Self>,
        b: ArrayView2<Self>,
        c: *mut Self,
        dim: (usize, usize),
        strides: (isize, isize),
    );
}

/// Checks the shapes of C = A·B for [`Scalar::gemm`] and returns (m, k, n).
fn gemm_dims<T>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    dim: (usize, usize),
) -> (usize, usize, usize) {
    assert!(
        a.ncols() == b.nrows() && dim == (a.nrows(), b.ncols()),
        "gemm: {:?} · {:?} does not give {dim:?}",
        a.dim(),
        b.dim()
    );
    (a.nrows(), a.ncols(), b.ncols())
}

impl Scalar for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    const NAME: &'static str = "f32";
    unsafe fn gemm(
        a: ArrayView2<Self>,
        b: ArrayView2<Self>,
        c: *mut Self,
        dim: (usize, usize),
        strides: (isize, isize),
    ) {
        let (m, k, n) = gemm_dims(&a, &b, dim);
        let (sa, sb) = (a.strides(), b.strides());
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            sa[0],
            sa[1],
            b.as_ptr(),
            sb[0],
            sb[1],
            0.0,
            c,
            strides.0,
            strides.1,
        );
    }
}

impl Scalar for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    const NAME: &'static str = "f64";
    unsafe fn gemm(
        a: ArrayView2<Self>,
        b: ArrayView2<Self>,
        c: *mut Self,
        dim: (usize, usize),
        strides: (isize, isize),
    ) {
        let (m, k, n) = gemm_dims(&a, &b, dim);
        let (sa, sb) = (a.strides(), b.strides());
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            sa[0],
            sa[1],
            b.as_ptr(),
            sb[0],
            sb[1],
            0.0,
            c,
            strides.0,
            strides.1,
        );
    }
}

/// σ(t) = 1 / (1 + e^−t), computed without overflow for large |t|.
pub fn sigmoid<T: Scalar>(t: T) -> T {
    if t >= T::zero() {
        T::one() / (T::one() + (-t).exp())
    } else {
        let e = t.exp();
        e / (T::one() + e)
    }
}

/// softplus(t) = ln(1 + e^t) in the stable form max(t, 0) + ln(1 + e^−|t|).
pub fn softplus<T: Scalar>(t: T) -> T {
    t.max(T::zero()) + (-t.abs()).exp().ln_1p()
}
