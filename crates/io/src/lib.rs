//! # reveal-io
//!
//! How reveal keeps its files safe and repeatable:
//!
//! - [`atomic`]: every output is written to a temporary file, fsynced and renamed, so nothing
//!   half-written is ever seen; an output path that is a device or FIFO is refused.
//! - [`checkpoint`]: checkpoints are kept one back (`X.prev`), and resuming falls back to it.
//! - [`log`]: JSONL curves, cut back to the checkpoint's step on resume.
//! - [`tensors`]: safetensors written by hand with sorted keys, so the same tensors always give
//!   the same bytes; readers check every size against the file before allocating.
//! - [`timing`]: wall times live in `X.timing.json` beside a product, never inside it.
//!
//! Libraries here print nothing: problems come back as errors, warnings as values.

pub mod atomic;
pub mod checkpoint;
pub mod log;
pub mod tensors;
pub mod timing;

pub use atomic::{check_replaceable, read_file, write_atomic};
pub use checkpoint::{
    load_checkpoint, previous_checkpoint, remove_checkpoints, rotate_checkpoint, Loaded,
};
pub use log::{kept_log, truncate_log};
pub use tensors::{
    parse_tensors, write_owned_tensors, write_tensors, TensorFile, TensorIn, TensorOut,
};
pub use timing::{read_timing, timing_path, write_timing};
