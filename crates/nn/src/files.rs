//! Safetensors files (models, candidates) and atomic writes.
//!
//! Tensors are stored in the precision they were computed in (F32 or F64) and read back into
//! either precision. Every check on read names the file and what is wrong.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use reveal_tape::Scalar;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::mlp::Mlp;

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, then rename, so a
/// reader (or a Ctrl-C) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow!("{}: cannot write: {e}", path.display())
    })
}

/// One tensor to write: a name, a shape and its elements in row-major order.
pub struct TensorOut<'a, T> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [T],
}

/// Little-endian bytes of the elements, and their safetensors dtype.
fn to_bytes<T: Scalar>(data: &[T]) -> (Dtype, Vec<u8>) {
    if T::NAME == "f32" {
        let bytes = data
            .iter()
            .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
            .collect();
        (Dtype::F32, bytes)
    } else {
        (
            Dtype::F64,
            data.iter().flat_map(|v| v.as_f64().to_le_bytes()).collect(),
        )
    }
}

/// Writes tensors and string metadata as one safetensors file, atomically.
pub fn write_tensors<T: Scalar>(
    path: &Path,
    tensors: &[TensorOut<'_, T>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(Dtype, Vec<u8>)> = tensors.iter().map(|t| to_bytes(t.data)).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, (dtype, b))| {
            let view = TensorView::new(*dtype, t.shape.clone(), b)
                .map_err(|e| anyhow!("{}: tensor {}: {e:?}", path.display(), t.name))?;
            Ok((t.name.to_string(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let out = safetensors::serialize(views, &Some(meta))
        .map_err(|e| anyhow!("{}: cannot serialise: {e:?}", path.display()))?;
    write_atomic(path, &out)
}

/// A tensor read from a file, converted to the caller's precision.
#[derive(Clone, Debug)]
pub struct TensorIn<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// All tensors and the metadata of a safetensors file.
pub struct TensorFile<T> {
    pub tensors: BTreeMap<String, TensorIn<T>>,
    pub metadata: BTreeMap<String, String>,
}

/// Reads a safetensors file whose tensors are all F32 or F64.
pub fn read_tensors<T: Scalar>(path: &Path) -> Result<TensorFile<T>> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let bad = |what: String| anyhow!("{}: {what}", path.display());
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e:?})")))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("bad header ({e:?})")))?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<T> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| T::from_f64(f32::from_le_bytes(c.try_into().unwrap()) as f64))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            other => bail!(
                "{}: tensor {name} has dtype {other:?}; only F32 and F64 are read",
                path.display()
            ),
        };
        tensors.insert(
            name,
            TensorIn {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(TensorFile { tensors, metadata })
}

impl<T: Scalar> TensorFile<T> {
    /// Removes and returns a tensor, checking its shape; `None` in `expected` matches any size.
    pub fn take(
        &mut self,
        path: &Path,
        name: &str,
        expected: &[Option<usize>],
    ) -> Result<TensorIn<T>> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| anyhow!("{}: missing tensor {name}", path.display()))?;
        let fits = t.shape.len() == expected.len()
            && t.shape
                .iter()
                .zip(expected)
                .all(|(s, e)| e.is_none_or(|e| e == *s));
        if !fits {
            let want: Vec<String> = expected
                .iter()
                .map(|e| e.map_or("*".into(), |v| v.to_string()))
                .collect();
            bail!(
                "{}: tensor {name} has shape {:?}, expected [{}]",
                path.display(),
                t.shape,
                want.join(", ")
            );
        }
        Ok(t)
    }

    /// A tensor as a matrix [rows, cols] (a 1-D tensor becomes one row).
    pub fn take_matrix(
        &mut self,
        path: &Path,
        name: &str,
        expected: &[Option<usize>],
    ) -> Result<Array2<T>> {
        let t = self.take(path, name, expected)?;
        let (r, c) = match t.shape[..] {
            [n] => (1, n),
            [r, c] => (r, c),
            _ => bail!(
                "{}: tensor {name} must be 1-D or 2-D, has shape {:?}",
                path.display(),
                t.shape
            ),
        };
        Ok(Array2::from_shape_vec((r, c), t.data).expect("length checked by safetensors"))
    }
}

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
    let mut file = read_tensors::<T>(path)?;
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
    if let Some(extra) = file.tensors.keys().next() {
        bail!("{}: unexpected tensor {extra} (a bias on a layer after the first? the model must be homogeneous)", path.display());
    }
    Ok(ModelFile {
        mlp: Mlp { weights, bias },
        mean,
        metadata: file.metadata,
    })
}
