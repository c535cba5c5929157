//! The reverse sweep: `grad(y, xs, create_graph)`.

use std::sync::Arc;

use ndarray::Array2;

use crate::scalar::Scalar;
use crate::tape::Var;

/// ∂y/∂x for every x in `xs`, where `y` is a 1×1 variable.
///
/// The sweep visits, in reverse recording order, only the nodes that lie on a path from some x to
/// y, and accumulates each node's gradient with `+=` before it is passed on. With `create_graph`
/// the gradients are recorded on the tape as ordinary variables, so they can be differentiated
/// again; without it they come back as constants and the sweep's intermediate nodes are dropped.
/// An x that y does not depend on gets a zero gradient of its shape.
///
/// # Panics
/// If `y` is not 1×1 or the variables live on different tapes.
pub fn grad<'t, T: Scalar>(
    y: Var<'t, T>,
    xs: &[Var<'t, T>],
    create_graph: bool,
) -> Vec<Var<'t, T>> {
    let tape = y.tape();
    assert_eq!(
        y.shape(),
        (1, 1),
        "grad: y must be [1, 1], got {:?}",
        y.shape()
    );
    for x in xs {
        assert!(
            std::ptr::eq(x.tape(), tape),
            "grad: x and y live on different tapes"
        );
    }
    let mark = tape.len();
    let n = y.id() + 1;

    // Which nodes lie on a path x → y: depend on some x (forward pass) and feed y (backward pass).
    let mut is_x = vec![false; n];
    for x in xs.iter().filter(|x| x.id() < n) {
        is_x[x.id()] = true;
    }
    let mut from_x = is_x.clone();
    for i in 0..n {
        if tape.op(i).operands().iter().flatten().any(|&p| from_x[p]) {
            from_x[i] = true;
        }
    }
    let mut to_y = vec![false; n];
    to_y[y.id()] = true;
    for i in (0..n).rev() {
        if to_y[i] {
            for &p in tape.op(i).operands().iter().flatten() {
                to_y[p] = true;
            }
        }
    }
    let on_path: Vec<bool> = (0..n).map(|i| from_x[i] && to_y[i]).collect();

    // The sweep: seed ∂y/∂y = 1, then each node hands its gradient to its operands.
    let mut grads: Vec<Option<Var<'t, T>>> = vec![None; n];
    grads[y.id()] = Some(tape.scalar(T::one()));
    let mut found: Vec<Option<Var<'t, T>>> = vec![None; n];
    let mut contributions = Vec::with_capacity(2);
    for i in (0..n).rev() {
        let Some(g) = grads[i] else { continue };
        if !on_path[i] {
            continue;
        }
        if is_x[i] {
            found[i] = Some(g);
        }
        contributions.clear();
        crate::ops::backward(tape, i, g, &|p| on_path[p], &mut contributions);
        for &(p, dp) in &contributions {
            grads[p] = Some(match grads[p] {
                None => dp,
                Some(acc) => acc + dp, // ∂p += contribution
            });
        }
    }

    let found_for = |x: &Var<'t, T>| found.get(x.id()).copied().flatten();
    if create_graph {
        return xs
            .iter()
            .map(|x| found_for(x).unwrap_or_else(|| tape.constant(Array2::zeros(x.shape()))))
            .collect();
    }
    let values: Vec<Arc<Array2<T>>> = xs
        .iter()
        .map(|x| found_for(x).map_or_else(|| Arc::new(Array2::zeros(x.shape())), |g| g.value()))
        .collect();
    tape.truncate(mark);
    values.into_iter().map(|v| tape.constant(v)).collect()
}
