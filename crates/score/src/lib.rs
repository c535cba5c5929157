//! # reveal-score
//!
//! How much of the training set comes back: the score S of the paper and its calibration,
//! image grids, plots and reports.

pub mod grid;
pub mod score;

pub use score::{score, to_pixels, Pair, Score, ScoreInput, Summary};
