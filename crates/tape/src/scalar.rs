//! The one scalar trait the tape is generic over: `f32` for runs, `f64` for checks.

use std::fmt::{Debug, Display};

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::Float;

use crate::kernels::Element;

/// A floating-point element type the tape can work in (`f32` or `f64`).
pub trait Scalar:
    Float + LinalgScalar + ScalarOperand + Element + Debug + Display + Default + Send + Sync + 'static
{
    /// Converts from `f64` (rounding for `f32`).
    fn from_f64(v: f64) -> Self;
    /// Widens to `f64`.
    fn as_f64(self) -> f64;
    /// Short name for messages and file metadata: `"f32"` or `"f64"`.
    const NAME: &'static str;
}

impl Scalar for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    const NAME: &'static str = "f32";
}

impl Scalar for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    const NAME: &'static str = "f64";
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
