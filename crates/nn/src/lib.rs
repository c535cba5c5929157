//! # reveal-nn
//!
//! The ReLU MLP that `reveal` trains and reconstructs from:
//! f(x) = w3 · relu(W2 · relu(W1 x + b1)) by default (bias only in the first layer, so
//! homogeneous), or with a bias in every layer, optionally behind convolutions and average
//! pooling (`--arch conv:32k3,conv:64k3s2,fc:1000`); its initialisations (the papers' small one and
//! PyTorch's default), its forward pass on the tape and without it, and its safetensors files
//! with PyTorch's parameter names.

pub mod arch;
pub mod files;
pub mod mlp;

pub use arch::{Arch, Features, Grid, Stage};
pub use files::{load_model, load_model_with, parse_model, save_model, LayerNames, ModelFile};
pub use mlp::{
    class_index, forward, margin_signs, margins, Activation, Biases, Init, Layout, Mlp, Theta,
};
