//! # reveal-score
//!
//! How much of the training set comes back: the score S of the paper and its calibration
//! (ρ10, the recovered count, the mean-image and held-out baselines), from images alone.

pub mod score;

pub use score::{score, to_pixels, ClassScore, Pair, Score, ScoreInput, Summary};
