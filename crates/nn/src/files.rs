//! Model files: safetensors with PyTorch's parameter names (`layers.i.weight`,
//! `layers.0.bias`), the training mean `data.mean`, and metadata.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use ndarray::Array2;
use reveal_io::{parse_tensors, read_file, write_tensors, TensorOut};
use reveal_tape::Scalar;

use crate::mlp::Mlp;

/// A model file: the MLP, the training mean if known, and the metadata.
pub struct ModelFile<T> {
    pub mlp: Mlp<T>,
    /// The per-pixel training mean [1, d] (`data.mean`), to map candidates back to pixels.
    pub mean: Option<Array2<T>>,
    pub metadata: BTreeMap<String, String>,
}

/// Saves a model with PyTorch's names (`layers.i.weight`, `layers.0.bias`) and `data.mean`.
pub fn save_model<T: Scalar>(
    path: &Path,
    mlp: &Mlp<T>,
    mean: Option<&Array2<T>>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let names: Vec<String> = (0..mlp.weights.len())
        .map(|i| format!("layers.{i}.weight"))
        .collect();
    let std = |a: &Array2<T>| a.as_standard_layout().into_owned();
    let owned: Vec<Array2<T>> = mlp.weights.iter().map(std).collect();
    let bias = std(&mlp.bias);
    let mut tensors: Vec<TensorOut<T>> = names
        .iter()
        .zip(&owned)
        .map(|(n, w)| TensorOut {
            name: n,
            shape: w.shape().to_vec(),
            data: w.as_slice().expect("standard layout"),
        })
        .collect();
    tensors.push(TensorOut {
        name: "layers.0.bias",
        shape: vec![bias.len()],
        data: bias.as_slice().expect("standard layout"),
    });
    let mean = mean.map(std);
    if let Some(m) = &mean {
        tensors.push(TensorOut {
            name: "data.mean",
            shape: vec![m.len()],
            data: m.as_slice().expect("standard layout"),
        });
    }
    write_tensors(path, &tensors, metadata)
}

/// Loads a model saved by [`save_model`] or a PyTorch `state_dict` saved with safetensors.
pub fn load_model<T: Scalar>(path: &Path) -> Result<ModelFile<T>> {
    parse_model(&read_file(path)?, path)
}

/// Parses the bytes of a model file (`path` only names it in errors).
pub fn parse_model<T: Scalar>(bytes: &[u8], path: &Path) -> Result<ModelFile<T>> {
    let mut file = parse_tensors::<T>(bytes, path)?;
    let w1 = file.take_matrix(path, "layers.0.weight", &[None, None])?;
    let (h1, d) = w1.dim();
    let bias = file.take_matrix(path, "layers.0.bias", &[Some(h1)])?;
    let mut weights = vec![w1];
    let mut fan_in = h1;
    for i in 1.. {
        let name = format!("layers.{i}.weight");
        if !file.tensors.contains_key(&name) {
            break;
        }
        let w = file.take_matrix(path, &name, &[None, Some(fan_in)])?;
        fan_in = w.nrows();
        weights.push(w);
    }
    if weights.len() < 2 || fan_in != 1 {
        bail!(
            "{}: the last layer must have one output; layers are {:?}",
            path.display(),
            weights.iter().map(|w| w.dim()).collect::<Vec<_>>()
        );
    }
    let mean = match file.tensors.contains_key("data.mean") {
        true => Some(file.take_matrix(path, "data.mean", &[Some(d)])?),
        false => None,
    };
    for (i, w) in weights.iter().enumerate() {
        finite(path, &format!("layers.{i}.weight"), w)?;
    }
    finite(path, "layers.0.bias", &bias)?;
    if let Some(extra) = file.tensors.keys().next() {
        bail!("{}: unexpected tensor {extra} (a bias on a layer after the first? the model must be homogeneous)", path.display());
    }
    Ok(ModelFile {
        mlp: Mlp { weights, bias },
        mean,
        metadata: file.metadata,
    })
}

/// Fails, naming the tensor and the element, when a value is NaN or infinite: such a model
/// would only "diverge at iteration 0" later.
fn finite<T: Scalar>(path: &Path, name: &str, a: &Array2<T>) -> Result<()> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((r, c), v)) => {
            let at = if a.nrows() == 1 {
                format!("[{c}]")
            } else {
                format!("[{r}, {c}]")
            };
            bail!(
                "{}: tensor {name} holds {v} at {at}; the model is not usable",
                path.display()
            )
        }
        None => Ok(()),
    }
}
