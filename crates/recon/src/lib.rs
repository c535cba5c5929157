//! # reveal-recon
//!
//! Reconstructs training samples from the weights of a homogeneous network trained to a
//! max-margin solution, by minimising the violation of the KKT stationarity condition
//! θ = Σ_i λ_i y_i ∇θ f(x_i) over candidates x_i and multipliers λ_i ≥ λ_min (or, after the loss
//! the model was trained with, one multiplier per wrong class, or signed ones: [`Multipliers`]).
//!
//! - [`terms`]: the objective's settings, terms, priors, multiplier forms and labels;
//! - [`objective`]: L through grad-of-grad (the readable reference) and the entry points;
//!   [`gram`]: the same L_kkt with its norms expanded into m×m Gram matrices (faster for m < h);
//!   [`closed_form`]: L and its gradients written out by hand, to check both;
//! - [`optim`]: one run (candidates, the optimiser, divergence);
//! - [`plan`]: which runs a search makes; [`search`]: running, resuming and pooling them;
//!   [`stats`]: ranking them; [`files`]: candidate files and checkpoints;
//! - [`stationarity`]: the best multipliers at a model's own training set, and the residual
//!   they leave (is the model at a stationary point of the form the objective fits?).

pub mod closed_form;
pub mod files;
pub mod gram;
pub mod objective;
pub mod optim;
pub mod plan;
pub mod search;
pub mod stationarity;
pub mod stats;
pub mod terms;

pub use objective::{evaluate, evaluate_shared, evaluate_with, record, Evaluation, Method};
pub use optim::{Hyper, RunConfig, RunState, Stop};
pub use plan::{preset, Plan, PRESETS};
pub use terms::{candidate_labels, candidate_labels_for, Multipliers, ObjectiveConfig, Terms};
