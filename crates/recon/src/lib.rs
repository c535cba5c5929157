//! # reveal-recon
//!
//! Reconstructs training samples from the weights of a homogeneous network trained to a
//! max-margin solution, by minimising the violation of the KKT stationarity condition
//! θ = Σ_i λ_i y_i ∇θ f(x_i) over candidates x_i and multipliers λ_i ≥ λ_min.

pub mod objective;

pub use objective::{
    candidate_labels, evaluate, evaluate_shared, evaluate_with, record, Evaluation, Method,
    ObjectiveConfig, Terms,
};
pub mod closed_form;
pub mod files;
pub mod gram;
pub mod optim;
pub mod search;

pub use optim::{preset, Hyper, RunConfig, RunState, Stop, PRESETS};
