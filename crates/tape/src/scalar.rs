//! The one scalar trait the tape is generic over: `f32` for runs, `f64` for checks.

use std::fmt::{Debug, Display};

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::Float;

use crate::kernels::Element;

/// The two precisions the tape works in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// `f32`
    F32,
    /// `f64`
    F64,
}

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
    /// Which of the two it is.
    const PRECISION: Precision;
    /// e^x for x ≤ 0, branch-free so that loops over it vectorise (see [`exp_nonpositive`]).
    #[doc(hidden)]
    fn exp_nonpositive(x: Self) -> Self;
}

impl Scalar for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    const NAME: &'static str = "f32";
    const PRECISION: Precision = Precision::F32;
    #[inline(always)]
    fn exp_nonpositive(x: f32) -> f32 {
        // Cephes' expf: e^x = 2^n · e^r, n = round(x·log₂e), |r| ≤ ln2/2, e^r by a degree-7
        // polynomial (≤ 2 ulp).
        const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
        let x = x.max(-87.0);
        let shifted = x * std::f32::consts::LOG2_E + MAGIC;
        let n = shifted - MAGIC;
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
        let er = p * r * r + r + 1.0;
        let k = shifted.to_bits().wrapping_sub(MAGIC.to_bits()) as i32; // n as an integer
        er * f32::from_bits(((k + 127) as u32) << 23)
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
    const PRECISION: Precision = Precision::F64;
    #[inline(always)]
    fn exp_nonpositive(x: f64) -> f64 {
        // e^x = 2^n · e^r, n = round(x·log₂e), |r| ≤ ln2/2, e^r by its Taylor series to r¹³
        // (truncation below 1e-17 relative).
        const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2⁵²
        let x = x.max(-708.0);
        let shifted = x * std::f64::consts::LOG2_E + MAGIC;
        let n = shifted - MAGIC;
        let r = x - n * 6.931_457_519_531_25e-1 - n * 1.428_606_820_309_417_2e-6;
        const INV_FACTORIAL: [f64; 14] = [
            1.0,
            1.0,
            1.0 / 2.0,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
            1.0 / 5_040.0,
            1.0 / 40_320.0,
            1.0 / 362_880.0,
            1.0 / 3_628_800.0,
            1.0 / 39_916_800.0,
            1.0 / 479_001_600.0,
            1.0 / 6_227_020_800.0,
        ];
        let mut er = INV_FACTORIAL[13];
        for c in INV_FACTORIAL[..13].iter().rev() {
            er = er * r + c;
        }
        let k = shifted.to_bits().wrapping_sub(MAGIC.to_bits()) as i64;
        er * f64::from_bits(((k + 1023) as u64) << 52)
    }
}

/// σ(t) = 1 / (1 + e^−t), computed without overflow for large |t|: with e = e^−|t|,
/// σ = 1/(1 + e) for t ≥ 0 and e/(1 + e) for t < 0. Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn sigmoid<T: Scalar>(t: T) -> T {
    let e = T::exp_nonpositive(-t.abs());
    let numerator = if t >= T::zero() { T::one() } else { e };
    numerator / (T::one() + e)
}

/// softplus(t) = ln(1 + e^t) in the stable form max(t, 0) + ln(1 + e^−|t|).
pub fn softplus<T: Scalar>(t: T) -> T {
    t.max(T::zero()) + (-t.abs()).exp().ln_1p()
}
