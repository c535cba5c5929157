//! Safetensors files (models, candidates) and atomic writes.
//!
//! Tensors are stored in the precision they were computed in (F32 or F64) and read back into
//! either precision. Every check on read names the file and what is wrong.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array2;
use reveal_tape::Scalar;
use safetensors::tensor::{Dtype, SafeTensors};

use crate::mlp::Mlp;

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// folder, so a reader (or a Ctrl-C, or a crash) never sees half a file.
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
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the folder is synced.
        fs::File::open(dir).and_then(|d| d.sync_all()).or(Ok(()))
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow!("{}: cannot write: {e}", path.display())
    })
}

/// Where the wall time of the job that wrote `path` is kept: `X.timing.json` beside
/// `X.safetensors`. Products carry no clock readings, so the same command with the same seed
/// writes byte-identical products; only these side files differ between runs.
pub fn timing_path(path: &Path) -> PathBuf {
    path.with_extension("timing.json")
}

/// Writes the wall time of the job that wrote `path` (see [`timing_path`]).
pub fn write_timing(path: &Path, seconds: f64) -> Result<()> {
    let text = format!("{{\"wall_seconds\": {seconds:.3}}}\n");
    write_atomic(&timing_path(path), text.as_bytes())
}

/// The wall time recorded beside `path`, NaN when there is none.
pub fn read_timing(path: &Path) -> f64 {
    fs::read_to_string(timing_path(path))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["wall_seconds"].as_f64())
        .unwrap_or(f64::NAN)
}

/// The previous checkpoint, kept while the next one is written: `X` → `X.prev`.
pub fn previous_checkpoint(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".prev");
    PathBuf::from(name)
}

/// Writes a checkpoint with `write`, first moving the one it replaces to `X.prev`, so a
/// checkpoint that turns out corrupt never costs more than one interval of work.
pub fn rotate_checkpoint(path: &Path, write: impl FnOnce() -> Result<()>) -> Result<()> {
    if path.exists() {
        fs::rename(path, previous_checkpoint(path)).with_context(|| {
            format!("{}: cannot keep as the previous checkpoint", path.display())
        })?;
    }
    write()
}

/// Loads the newest readable checkpoint: `path`, or, when it is missing or corrupt (said on
/// stderr), the previous one. `None` when neither exists.
pub fn load_checkpoint<R>(path: &Path, load: impl Fn(&Path) -> Result<R>) -> Result<Option<R>> {
    let prev = previous_checkpoint(path);
    let newest = match path.exists() {
        true => Some(load(path)),
        false => None,
    };
    match newest {
        Some(Ok(r)) => Ok(Some(r)),
        _ if !prev.exists() => newest.transpose(),
        Some(Err(e)) => {
            eprintln!(
                "warning: {e:#}; resuming from the previous checkpoint {}",
                prev.display()
            );
            load(&prev).map(Some)
        }
        None => load(&prev).map(Some),
    }
}

/// Removes a checkpoint and its predecessor once the result they lead to is written.
pub fn remove_checkpoints(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(previous_checkpoint(path));
}

/// Cuts a JSONL log back to the checkpoint a run resumes from: keeps the lines whose integer
/// field `key` is at most `upto`, so the resumed run's log equals an uninterrupted run's.
pub fn truncate_log(path: &Path, key: &str, upto: usize) -> Result<()> {
    match fs::read(path) {
        Ok(bytes) => write_atomic(path, kept_log(&bytes, path, key, upto)?.as_bytes()),
        Err(_) => Ok(()), // no log yet
    }
}

/// The lines of a JSONL log whose integer field `key` is at most `upto`. A last line cut short
/// by a crash is dropped; any other unreadable line is an error naming it.
pub fn kept_log(bytes: &[u8], path: &Path, key: &str, upto: usize) -> Result<String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| anyhow!("{}: the log is not UTF-8 text", path.display()))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut kept = String::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.ends_with('\n') && i + 1 == lines.len() {
            break; // cut short by a crash
        }
        let at = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v[key].as_u64())
            .ok_or_else(|| {
                anyhow!(
                    "{}: line {} is not a log record with an integer {key:?}; delete the log to resume without it",
                    path.display(),
                    i + 1
                )
            })?;
        if at <= upto as u64 {
            kept.push_str(line);
        }
    }
    Ok(kept)
}

/// One tensor to write: a name, a shape and its elements in row-major order.
pub struct TensorOut<'a, T> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [T],
}

/// Little-endian bytes of the elements, and their safetensors dtype.
fn to_bytes<T: Scalar>(data: &[T]) -> (&'static str, Vec<u8>) {
    if T::NAME == "f32" {
        let bytes = data
            .iter()
            .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
            .collect();
        ("F32", bytes)
    } else {
        (
            "F64",
            data.iter().flat_map(|v| v.as_f64().to_le_bytes()).collect(),
        )
    }
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

/// Reads a whole file, with the path in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
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
    if let Some(extra) = file.tensors.keys().next() {
        bail!("{}: unexpected tensor {extra} (a bias on a layer after the first? the model must be homogeneous)", path.display());
    }
    Ok(ModelFile {
        mlp: Mlp { weights, bias },
        mean,
        metadata: file.metadata,
    })
}
