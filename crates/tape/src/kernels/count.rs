//! What the kernels did, counted: the floating-point operations of the matrix products and the
//! values the tape recorded. `reveal bench` reads them around one step, to set the work a step
//! does beside the model's FLOP count (what it recomputes, what it writes).
//!
//! The counters are process-wide and only ever grow; read them before and after the work, on a
//! process that does nothing else meanwhile.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static PRODUCT_FLOPS: AtomicU64 = AtomicU64::new(0);
static RECORDED_BYTES: AtomicU64 = AtomicU64::new(0);
static RECORDED_NODES: AtomicU64 = AtomicU64::new(0);

/// Totals since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// 2·m·k·n for every product C [m×n] = A [m×k]·B [k×n] (matrix-vector products included).
    pub product_flops: u64,
    /// Bytes of the values recorded on tapes (each written once by its op).
    pub recorded_bytes: u64,
    /// Nodes recorded on tapes.
    pub recorded_nodes: u64,
}

impl std::ops::Sub for Work {
    type Output = Work;
    /// The work done between two readings.
    fn sub(self, before: Work) -> Work {
        Work {
            product_flops: self.product_flops - before.product_flops,
            recorded_bytes: self.recorded_bytes - before.recorded_bytes,
            recorded_nodes: self.recorded_nodes - before.recorded_nodes,
        }
    }
}

/// The totals now.
pub fn work() -> Work {
    Work {
        product_flops: PRODUCT_FLOPS.load(Relaxed),
        recorded_bytes: RECORDED_BYTES.load(Relaxed),
        recorded_nodes: RECORDED_NODES.load(Relaxed),
    }
}

/// Counts a product of (m, k, n).
pub(crate) fn product((m, k, n): (usize, usize, usize)) {
    PRODUCT_FLOPS.fetch_add(2 * (m * k * n) as u64, Relaxed);
}

/// Counts a recorded value of `bytes`.
pub(crate) fn recorded(bytes: usize) {
    RECORDED_BYTES.fetch_add(bytes as u64, Relaxed);
    RECORDED_NODES.fetch_add(1, Relaxed);
}
