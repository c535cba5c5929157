//! Safetensors files written byte for byte the same for the same tensors, and read back into
//! f32 or f64 with every check naming the file.
//!
//! Tensors are stored in the precision they were computed in (F32 or F64) and read back into
//! either precision.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use ndarray::Array2;
use reveal_tape::scalar::Precision;
use reveal_tape::Scalar;
use safetensors::tensor::{Dtype, SafeTensors};

use crate::atomic::write_atomic;

/// One tensor to write: a name, a shape and its elements in row-major order.
pub struct TensorOut<'a, T> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [T],
}

/// Little-endian bytes of the elements, and their safetensors dtype.
fn to_bytes<T: Scalar>(data: &[T]) -> (&'static str, Vec<u8>) {
    match T::PRECISION {
        Precision::F32 => {
            let bytes = data
                .iter()
                .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
                .collect();
            ("F32", bytes)
        }
        Precision::F64 => (
            "F64",
            data.iter().flat_map(|v| v.as_f64().to_le_bytes()).collect(),
        ),
    }
}

/// [`write_tensors`] of owned (name, shape, row-major elements) triples, as model files and
/// tests assemble them.
pub fn write_owned_tensors<T: Scalar, N: AsRef<str>>(
    path: &Path,
    tensors: &[(N, Vec<usize>, Vec<T>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let views: Vec<TensorOut<'_, T>> = tensors
        .iter()
        .map(|(name, shape, data)| TensorOut {
            name: name.as_ref(),
            shape: shape.clone(),
            data,
        })
        .collect();
    write_tensors(path, &views, metadata)
}

/// Writes tensors and string metadata as one safetensors file, atomically.
///
/// The layout is written here rather than by the `safetensors` crate, whose metadata map comes
/// out in a random order: an 8-byte little-endian header length, a JSON header (keys sorted)
/// giving each tensor's dtype, shape and byte range, padded with spaces to 8 bytes, then the
/// tensors' bytes. The same tensors and metadata always give the same file.
pub fn write_tensors<T: Scalar>(
    path: &Path,
    tensors: &[TensorOut<'_, T>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut body = Vec::new();
    for t in tensors {
        assert_eq!(
            t.shape.iter().product::<usize>(),
            t.data.len(),
            "write_tensors: tensor {} has shape {:?} but {} elements",
            t.name,
            t.shape,
            t.data.len()
        );
        let (dtype, bytes) = to_bytes(t.data);
        let range = [body.len(), body.len() + bytes.len()];
        body.extend_from_slice(&bytes);
        header.insert(
            t.name.into(),
            serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": range}),
        );
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + head.len() + body.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body);
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

/// Parses the bytes of a safetensors file (`path` only names it in errors). Every tensor must
/// be F32 or F64 with no zero-sized dimension.
pub fn parse_tensors<T: Scalar>(bytes: &[u8], path: &Path) -> Result<TensorFile<T>> {
    let bad = |what: String| anyhow!("{}: {what}", path.display());
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e:?})")))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("bad header ({e:?})")))?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.shape().contains(&0) {
            bail!(
                "{}: tensor {name} has an empty dimension {:?}",
                path.display(),
                view.shape()
            );
        }
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

    /// A tensor as a matrix [rows, cols] (a 1-D tensor becomes one row; a 4-D convolution weight
    /// [out, in, kh, kw] becomes [out, in·kh·kw], PyTorch's flattening).
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
            [r, c, kh, kw] => (r, c * kh * kw),
            _ => bail!(
                "{}: tensor {name} must be 1-D, 2-D or 4-D, has shape {:?}",
                path.display(),
                t.shape
            ),
        };
        Ok(Array2::from_shape_vec((r, c), t.data).expect("length checked by safetensors"))
    }
}
