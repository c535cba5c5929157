//! # 01 — the tape
//!
//! `cargo run -p reveal-tape --example 01_tape`
//!
//! A tape records every operation as it is computed. Each record (a node) keeps its value and the
//! ids of its operands; because a node can only read nodes recorded before it, the order of the
//! `Vec` is already a topological order. Reverse mode walks that `Vec` backwards once.

use ndarray::array;
use reveal_tape::{grad, Tape};

fn main() {
    let tape = Tape::<f64>::new();

    // Inputs are leaves: node 0 and node 1.
    let w = tape.var(array![[1.0, -2.0], [0.5, 3.0]]); // [2, 2]
    let x = tape.var(array![[1.0], [2.0]]); // [2, 1]

    // Forward: every op appends one node and computes its value right away.
    let z = w.matmul(x); //            node 2: z = W·x         = [[-3], [6.5]]
    let a = z.relu(); //               node 3: a = relu(z)     = [[0], [6.5]]
    let y = a.square().sum(); //       node 4: a⊙a, node 5: y = Σ a² = 42.25
    println!("y = {}   ({} nodes on the tape)", y.item(), tape.len());

    // Reverse sweep. It seeds ∂y/∂y = 1 and visits nodes 5, 4, 3, 2 in that order. Each node
    // hands its gradient to its operands with the op's rule, and operands add up what they get:
    //   y = Σ s          → ∂s = 1 broadcast to s's shape
    //   s = a ⊙ a        → ∂a += ∂s ⊙ a  (twice: a is both operands, so ∂a = 2a)
    //   a = relu(z)      → ∂z = ∂a ⊙ 1[z > 0]   (the step is a constant)
    //   z = W·x          → ∂W = ∂z·xᵀ,  ∂x = Wᵀ·∂z
    let g = grad(y, &[w, x], false);
    println!("∂y/∂W =\n{}", g[0].value()); // [[0, 0], [13, 26]]
    println!("∂y/∂x =\n{}", g[1].value()); // [[6.5], [39]]

    // Only nodes on a path from the inputs we asked about to y are visited: asking for ∂y/∂x
    // alone does not compute ∂y/∂W.
    assert_eq!(*g[0].value(), array![[0.0, 0.0], [13.0, 26.0]]);
    assert_eq!(*g[1].value(), array![[6.5], [39.0]]);
}
