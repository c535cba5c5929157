//! Candidate files: safetensors `x` [m, d], `lambda` [m] (or [m, C] for the pairs and signed
//! multipliers), `y` [m] (±1, or class indices), hyperparameters in the metadata. A checkpoint is
//! the same file plus the optimiser's state — first moments (or momentum) `vx`, `vlambda`, Adam's
//! second moments `sx` [1], `slambda` (λ's shape) — and the iteration count, so a run continues
//! exactly where it stopped.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use ndarray::Array2;
use reveal_io::{parse_tensors, read_file, write_tensors, TensorOut};
use reveal_tape::Scalar;

use crate::objective::Evaluation;
use crate::optim::RunState;

/// Candidates as read from a file.
pub struct CandidateFile<T> {
    pub x: Array2<T>,
    /// [m, 1], or [m, C] for the pairs and signed multipliers.
    pub lambda: Array2<T>,
    /// [m, 1]
    pub y: Array2<T>,
    /// The optimiser's state, present in checkpoints.
    pub resume: Option<Resume<T>>,
    pub metadata: BTreeMap<String, String>,
}

/// The optimiser's state in a checkpoint (see [`RunState`]).
pub struct Resume<T> {
    pub vx: Array2<T>,
    pub vlambda: Array2<T>,
    pub sx: Array2<T>,
    pub slambda: Array2<T>,
    /// The stopping rule's reference candidates (`xref`), when the run has one.
    pub anchor: Option<Array2<T>>,
    pub iter: usize,
}

/// Writes candidates (and, with `checkpoint`, the optimiser state) atomically.
pub fn save_candidates<T: Scalar>(
    path: &Path,
    state: &RunState<T>,
    checkpoint: bool,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let (m, d) = state.x.dim();
    // λ and its moments: [m] for one multiplier per candidate, [m, K] for K.
    let multipliers = match state.lambda.ncols() {
        1 => vec![m],
        k => vec![m, k],
    };
    // name, shape, array: the candidates always, the optimiser state in a checkpoint.
    let mut arrays: Vec<(&str, Vec<usize>, &Array2<T>)> = vec![
        ("x", vec![m, d], &state.x),
        ("lambda", multipliers.clone(), &state.lambda),
        ("y", vec![m], &state.y),
    ];
    let mut meta = metadata.clone();
    meta.insert("reveal.kind".into(), "candidates".into());
    if checkpoint {
        arrays.extend([
            ("vx", vec![m, d], &state.vx),
            ("vlambda", multipliers.clone(), &state.vlambda),
            ("sx", vec![1], &state.sx),
            ("slambda", multipliers, &state.slambda),
        ]);
        if let Some(a) = &state.anchor {
            arrays.push(("xref", vec![m, d], a));
        }
        meta.insert("iter".into(), state.iter.to_string());
    }
    // Copied only when not already in standard layout.
    let standard: Vec<_> = arrays
        .iter()
        .map(|(_, _, a)| a.as_standard_layout())
        .collect();
    let tensors: Vec<TensorOut<T>> = arrays
        .iter()
        .zip(&standard)
        .map(|((name, shape, _), a)| TensorOut {
            name,
            shape: shape.clone(),
            data: a.as_slice().expect("standard layout"),
        })
        .collect();
    write_tensors(path, &tensors, &meta)
}

/// Reads a candidate file or checkpoint, checking names, shapes and labels.
pub fn load_candidates<T: Scalar>(path: &Path) -> Result<CandidateFile<T>> {
    parse_candidates(&read_file(path)?, path)
}

/// Parses the bytes of a candidate file or checkpoint (`path` only names it in errors).
pub fn parse_candidates<T: Scalar>(bytes: &[u8], path: &Path) -> Result<CandidateFile<T>> {
    let mut f = parse_tensors::<T>(bytes, path)?;
    let x = f.take_matrix(path, "x", &[None, None])?;
    let m = x.nrows();
    let col = |a: Array2<T>| a.into_shape_with_order((m, 1)).expect("length checked");
    // λ-shaped tensors: [m] (one multiplier per candidate) or [m, K].
    let multipliers = |f: &mut reveal_io::TensorFile<T>, name: &str| -> Result<Array2<T>> {
        match f.tensors.get(name).map(|t| t.shape.len()) {
            Some(2) => f.take_matrix(path, name, &[Some(m), None]),
            _ => Ok(col(f.take_matrix(path, name, &[Some(m)])?)),
        }
    };
    let lambda = multipliers(&mut f, "lambda")?;
    let y = col(f.take_matrix(path, "y", &[Some(m)])?);
    let label = |v: &T| v.abs() == T::one() || (*v >= T::zero() && v.fract() == T::zero());
    if let Some(bad) = y.iter().find(|v| !label(v)) {
        bail!(
            "{}: labels y must be ±1 (binary) or class indices 0, 1, …, found {bad}",
            path.display()
        );
    }
    if let Some(bad) = x.iter().chain(lambda.iter()).find(|v| !v.is_finite()) {
        bail!(
            "{}: candidates hold a non-finite value ({bad})",
            path.display()
        );
    }
    let resume = if f.tensors.contains_key("vx") {
        let vx = f.take_matrix(path, "vx", &[Some(m), Some(x.ncols())])?;
        let vlambda = multipliers(&mut f, "vlambda")?;
        // Checkpoints of SGD runs from before Adam carry no second moments: they are zero.
        let (sx, slambda) = match f.tensors.contains_key("sx") {
            true => (
                f.take_matrix(path, "sx", &[Some(1)])?,
                multipliers(&mut f, "slambda")?,
            ),
            false => (Array2::zeros((1, 1)), Array2::zeros(lambda.dim())),
        };
        let anchor = match f.tensors.contains_key("xref") {
            true => Some(f.take_matrix(path, "xref", &[Some(m), Some(x.ncols())])?),
            false => None,
        };
        let iter = f.metadata.get("iter").and_then(|s| s.parse().ok());
        let Some(iter) = iter else {
            bail!(
                "{}: a checkpoint without a readable iteration count",
                path.display()
            );
        };
        Some(Resume {
            vx,
            vlambda,
            sx,
            slambda,
            anchor,
            iter,
        })
    } else {
        None
    };
    if let Some(extra) = f.tensors.keys().next() {
        bail!(
            "{}: unexpected tensor {extra} in a candidate file",
            path.display()
        );
    }
    Ok(CandidateFile {
        x,
        lambda,
        y,
        resume,
        metadata: f.metadata,
    })
}

/// Checks that a file's labels fit a model with `outputs` outputs: ±1 for one output, class
/// indices 0…C−1 for C.
pub fn check_labels<T: Scalar>(y: &Array2<T>, outputs: usize, path: &Path) -> Result<()> {
    let fits = |v: &T| match outputs {
        1 => v.abs() == T::one(),
        c => *v >= T::zero() && v.fract() == T::zero() && v.as_f64() < c as f64,
    };
    match y.iter().find(|v| !fits(v)) {
        Some(bad) if outputs == 1 => bail!(
            "{}: label {bad} for a binary model (one output): labels must be ±1",
            path.display()
        ),
        Some(bad) => bail!(
            "{}: label {bad} for a model with {outputs} outputs: labels must be class indices 0–{}",
            path.display(),
            outputs - 1
        ),
        None => Ok(()),
    }
}

/// Parses a run's checkpoint: candidates with momentum, iteration and elapsed seconds.
pub fn parse_run_checkpoint<T: Scalar>(
    bytes: &[u8],
    path: &Path,
) -> Result<(CandidateFile<T>, f64)> {
    let f = parse_candidates::<T>(bytes, path)?;
    let elapsed = f
        .metadata
        .get("elapsed")
        .and_then(|e| e.parse::<f64>().ok());
    match (f.resume.is_some(), elapsed) {
        (true, Some(elapsed)) => Ok((f, elapsed)),
        _ => bail!(
            "{}: not a checkpoint (no momentum, iteration or elapsed time)",
            path.display()
        ),
    }
}

impl<T: Scalar> CandidateFile<T> {
    /// The run settings in the file's metadata (`config`), when it has them: the objective's
    /// α, λ_min and form of the multipliers.
    pub fn run_config(&self) -> Option<crate::optim::RunConfig> {
        serde_json::from_str(self.metadata.get("config")?).ok()
    }

    /// The run state these candidates describe (fresh momentum unless a checkpoint).
    pub fn into_state(self) -> RunState<T> {
        let state = RunState::fresh(self.x, self.lambda, self.y);
        match self.resume {
            None => state,
            Some(r) => RunState {
                vx: r.vx,
                vlambda: r.vlambda,
                sx: r.sx,
                slambda: r.slambda,
                anchor: r.anchor,
                iter: r.iter,
                ..state
            },
        }
    }
}

/// Writes an evaluation of L as `reveal kkt --out` does: the terms (`loss`, `loss.kkt`,
/// `loss.prior_x`, `loss.prior_lambda`, each [1]), `grad.x` [m, d] and `grad.lambda` (λ's shape), with
/// α and λ_min in the metadata.
pub fn write_evaluation<T: Scalar>(
    path: &Path,
    e: &Evaluation<T>,
    alpha: f64,
    lambda_min: f64,
) -> Result<()> {
    let named = e.terms.named();
    let scalars: Vec<[T; 1]> = named.iter().map(|(_, v)| [*v]).collect();
    let mut tensors: Vec<TensorOut<T>> = named
        .iter()
        .zip(&scalars)
        .map(|((n, _), v)| TensorOut {
            name: n,
            shape: vec![1],
            data: v,
        })
        .collect();
    let (gx, gl) = (
        e.grad_x.as_standard_layout(),
        e.grad_lambda.as_standard_layout(),
    );
    tensors.push(TensorOut {
        name: "grad.x",
        shape: vec![gx.nrows(), gx.ncols()],
        data: gx.as_slice().expect("standard layout"),
    });
    tensors.push(TensorOut {
        name: "grad.lambda",
        shape: match gl.ncols() {
            1 => vec![gl.len()],
            k => vec![gl.nrows(), k],
        },
        data: gl.as_slice().expect("standard layout"),
    });
    let mut meta = BTreeMap::new();
    meta.insert("alpha".into(), alpha.to_string());
    meta.insert("lambda_min".into(), lambda_min.to_string());
    write_tensors(path, &tensors, &meta)
}
