//! Model files: safetensors with PyTorch's parameter names (`layers.i.weight`, `layers.i.bias`),
//! the training mean `data.mean`, and metadata.

use std::collections::BTreeMap;
use std::path::Path;

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use ndarray::Array2;
use reveal_io::{parse_tensors, read_file, write_owned_tensors, TensorFile};
use reveal_tape::Scalar;

use crate::arch::{Arch, Features, Grid};
use crate::mlp::Mlp;

/// A model file: the MLP, the training mean if known, and the metadata.
pub struct ModelFile<T> {
    pub mlp: Mlp<T>,
    /// The per-pixel training mean [1, d] (`data.mean`), to map candidates back to pixels.
    pub mean: Option<Array2<T>>,
    pub metadata: BTreeMap<String, String>,
}

/// Saves a model with PyTorch's names (`layers.i.weight`, `layers.i.bias`) and `data.mean`.
pub fn save_model<T: Scalar>(
    path: &Path,
    mlp: &Mlp<T>,
    mean: Option<&Array2<T>>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_model_with_extra(path, mlp, mean, &[], metadata)
}

/// [`save_model`] with more named tensors beside the model's (a training checkpoint's optimiser
/// moments); a reader takes them out with [`parse_tensors`] before [`model_from_tensors`].
pub fn save_model_with_extra<T: Scalar>(
    path: &Path,
    mlp: &Mlp<T>,
    mean: Option<&Array2<T>>,
    extra: &[(String, &Array2<T>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let std = |a: &Array2<T>| a.iter().copied().collect::<Vec<T>>();
    let mut owned: Vec<(String, Vec<usize>, Vec<T>)> = Vec::new();
    // A convolution's weight in PyTorch's [out, in, k, k].
    let conv_shapes = mlp
        .features
        .as_ref()
        .map_or(Vec::new(), |f| f.conv_weight_shapes());
    for (k, w) in mlp.weights.iter().enumerate() {
        let shape = conv_shapes
            .get(k)
            .map_or(w.shape().to_vec(), |s| s.to_vec());
        owned.push((format!("layers.{k}.weight"), shape, std(w)));
        if let Some(b) = mlp.biases.get(k) {
            owned.push((format!("layers.{k}.bias"), vec![b.len()], std(b)));
        }
    }
    if let Some(m) = mean {
        owned.push(("data.mean".into(), vec![m.len()], std(m)));
    }
    for (name, a) in extra {
        owned.push((name.clone(), a.shape().to_vec(), std(a)));
    }
    let mut metadata = metadata.clone();
    if let Some(f) = &mlp.features {
        metadata.insert("arch".into(), mlp.arch().to_string());
        metadata.insert("input".into(), f.input().to_string());
    }
    write_owned_tensors(path, &owned, &metadata)
}

/// Which tensors hold the layers of a model file.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerNames {
    /// reveal's names when the file has them (`layers.0.weight`, `layers.0.bias`, …), else
    /// the `NAME.weight` tensors in natural order of NAME (`fc1` < `fc2` < `fc10`, `0` < `2`),
    /// as a PyTorch `state_dict` of Linear layers has them, convolutions (4-D weights) first.
    Auto,
    /// The Linear layers' names in order, e.g. `fc1, fc2, fc3`: tensors `fc1.weight`,
    /// `fc1.bias`, `fc2.weight`, …
    Given(Vec<String>),
}

/// Loads a model saved by [`save_model`] or a PyTorch `state_dict` saved with safetensors.
pub fn load_model<T: Scalar>(path: &Path) -> Result<ModelFile<T>> {
    load_model_with(path, &LayerNames::Auto, None)
}

/// [`load_model`] with the layers' tensor names given, and the convolutional front for a file
/// that does not name its own (a PyTorch `state_dict` holds no strides or paddings).
pub fn load_model_with<T: Scalar>(
    path: &Path,
    names: &LayerNames,
    given: Option<&Features>,
) -> Result<ModelFile<T>> {
    parse_model_with(&read_file(path)?, path, names, given)
}

/// Parses the bytes of a model file (`path` only names it in errors).
pub fn parse_model<T: Scalar>(bytes: &[u8], path: &Path) -> Result<ModelFile<T>> {
    parse_model_with(bytes, path, &LayerNames::Auto, None)
}

/// Compares names with their digit runs as numbers: `fc2` < `fc10`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(d);
                chars.next();
            }
            key.push((std::mem::take(&mut text), n.parse().unwrap_or(u64::MAX)));
        } else {
            text.push(c);
            chars.next();
        }
    }
    key.push((text, 0));
    key
}

/// A model file whose network could not be read from the layer names found: what was wrong. The
/// answer is to name the Linear layers, in the network's order ([`LayerNames::Given`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}; name the Linear layers in the network's order (e.g. fc1,fc2,fc3)")]
pub struct NameTheLayers(pub String);

/// The layer names of a file: given, reveal's, or every `NAME.weight` in natural order.
fn layer_names<T>(file: &TensorFile<T>, path: &Path, names: &LayerNames) -> Result<Vec<String>> {
    let found = match names {
        LayerNames::Given(n) => n.clone(),
        LayerNames::Auto if file.tensors.contains_key("layers.0.weight") => (0..)
            .map(|i| format!("layers.{i}"))
            .take_while(|n| file.tensors.contains_key(&format!("{n}.weight")))
            .collect(),
        LayerNames::Auto => {
            let mut n: Vec<String> = file
                .tensors
                .keys()
                .filter_map(|k| k.strip_suffix(".weight"))
                .map(str::to_string)
                .collect();
            // Convolutions (4-D weights) before fc layers, each in natural order.
            let fc = |n: &String| file.tensors[&format!("{n}.weight")].shape.len() != 4;
            n.sort_by_key(|a| (fc(a), natural_key(a)));
            n
        }
    };
    if found.is_empty() {
        let have: Vec<&str> = file.tensors.keys().map(String::as_str).collect();
        return Err(NameTheLayers(format!(
            "{}: no layer weights found (tensors: {})",
            path.display(),
            have.join(", ")
        ))
        .into());
    }
    Ok(found)
}

/// The weights of `model` (read from `model_path`) before training, read from `path` with the
/// same layer names: refused when its layers or shapes differ.
pub fn load_init<T: Scalar>(
    path: &Path,
    names: &LayerNames,
    model: &Mlp<T>,
    model_path: &Path,
) -> Result<Mlp<T>> {
    let given = model.features.as_deref();
    let init = load_model_with::<T>(path, names, given)?.mlp;
    if !init.same_shape(model) {
        bail!(
            "{}: not the weights of {} before training (other layers or shapes)",
            path.display(),
            model_path.display()
        );
    }
    Ok(init)
}

/// Parses a model file with the layers' tensor names as `names` says (and a convolutional
/// front `given`, for a file that does not say its own).
pub fn parse_model_with<T: Scalar>(
    bytes: &[u8],
    path: &Path,
    names: &LayerNames,
    given: Option<&Features>,
) -> Result<ModelFile<T>> {
    model_from_tensors(parse_tensors::<T>(bytes, path)?, path, names, given)
}

/// The convolutional front a model file names in its metadata (`arch`, `input`), if any.
fn features_in_metadata(
    metadata: &BTreeMap<String, String>,
    path: &Path,
) -> Result<Option<Features>> {
    let Some(arch) = metadata.get("arch") else {
        return Ok(None);
    };
    let bad = |e: String| anyhow!("{}: metadata arch {arch:?}: {e}", path.display());
    let input: Grid = metadata
        .get("input")
        .ok_or_else(|| bad("no input image shape beside it".into()))?
        .parse()
        .map_err(bad)?;
    arch.parse::<Arch>()
        .and_then(|a| a.features(input))
        .map_err(bad)
}

/// The model held by the tensors of a parsed file (every tensor must belong to it). A network
/// with convolutions needs its front: `given`, or the `arch` and `input` metadata that
/// [`save_model`] writes.
pub fn model_from_tensors<T: Scalar>(
    mut file: TensorFile<T>,
    path: &Path,
    names: &LayerNames,
    given: Option<&Features>,
) -> Result<ModelFile<T>> {
    let layers = layer_names(&file, path, names)?;
    let shapes: Vec<String> = layers
        .iter()
        .map(|n| {
            let w = format!("{n}.weight");
            file.tensors
                .get(&w)
                .map_or(format!("{w} missing"), |t| format!("{w} {:?}", t.shape))
        })
        .collect();
    let order_hint = || format!("layers in the order read: {}", shapes.join(", "));
    let features = match given {
        Some(f) => Some(f.clone()),
        None => features_in_metadata(&file.metadata, path)?,
    };
    let convs = features.as_ref().map_or(0, Features::convs);
    if features.is_none() {
        let conv = layers.iter().find_map(|n| {
            let t = file.tensors.get(&format!("{n}.weight"))?;
            (t.shape.len() == 4).then(|| format!("{n}.weight {:?}", t.shape))
        });
        if let Some(conv) = conv {
            bail!(
                "{}: {conv} is a convolution; pass --arch with its kernels, strides and paddings (e.g. --arch conv:32k3,conv:64k3s2,fc:1000)",
                path.display()
            );
        }
    }
    if convs > 0 && layers.len() < convs + 2 {
        return Err(NameTheLayers(format!(
            "{}: the architecture has {convs} convolutions and at least one fc layer and a head, the file {} layers ({})",
            path.display(),
            layers.len(),
            order_hint()
        ))
        .into());
    }
    // What each layer's weight must be: a convolution's [out, in, k, k] exactly, an fc layer's
    // [*, fan_in] with fan_in what the previous layer gives (any for an MLP's first layer).
    let conv_weights = features
        .as_ref()
        .map_or(Vec::new(), Features::conv_weight_shapes);
    let mut fan_in = features.as_ref().map(|f| f.output().len());
    let b1_name = format!("{}.bias", layers[0]);
    if !file.tensors.contains_key(&b1_name) {
        return Err(NameTheLayers(format!(
            "{}: missing tensor {b1_name}, the first layer's bias ({})",
            path.display(),
            order_hint()
        ))
        .into());
    }
    // Later biases: on every layer (PyTorch's default nn.Linear) or on none (homogeneous).
    let later: Vec<bool> = layers[1..]
        .iter()
        .map(|n| file.tensors.contains_key(&format!("{n}.bias")))
        .collect();
    if later.iter().any(|&b| b) && !later.iter().all(|&b| b) {
        let with: Vec<String> = layers[1..]
            .iter()
            .zip(&later)
            .filter(|(_, &b)| b)
            .map(|(n, _)| format!("{n}.bias"))
            .collect();
        bail!(
            "{}: biases on some later layers only ({}); reveal takes a bias on the first layer only, or on every layer",
            path.display(),
            with.join(", ")
        );
    }
    let (mut weights, mut biases) = (Vec::new(), Vec::new());
    for (k, n) in layers.iter().enumerate() {
        let name = format!("{n}.weight");
        let expected: Vec<Option<usize>> = match conv_weights.get(k) {
            Some(shape) => shape.iter().copied().map(Some).collect(),
            None => vec![None, fan_in],
        };
        let fits = file.tensors.get(&name).is_some_and(|t| {
            t.shape.len() == expected.len()
                && t.shape
                    .iter()
                    .zip(&expected)
                    .all(|(s, e)| e.is_none_or(|e| e == *s))
        });
        if !fits {
            let wanted = match conv_weights.get(k) {
                Some(shape) => format!("the architecture's convolution {} wants {shape:?}", k + 1),
                None => match fan_in {
                    Some(f) => format!("it does not take the previous layer's {f} outputs"),
                    None => "not a matrix".into(),
                },
            };
            return Err(NameTheLayers(format!(
                "{}: {name}: {wanted} ({})",
                path.display(),
                order_hint()
            ))
            .into());
        }
        let w = file.take_matrix(path, &name, &expected)?;
        let out = w.nrows();
        weights.push(w);
        let bias = format!("{n}.bias");
        if file.tensors.contains_key(&bias) {
            biases.push(file.take_matrix(path, &bias, &[Some(out)])?);
        }
        // The first fc layer takes the flattened image the convolutions leave.
        fan_in = match (k + 1 == convs, &features) {
            (true, Some(f)) => Some(f.output().len()),
            _ => Some(out),
        };
    }
    let fan_in = fan_in.expect("at least two layers read");
    let d = features
        .as_ref()
        .map_or(weights[0].ncols(), |f| f.input().len());
    // The head: one output (binary) or C outputs (C classes). A last layer with as many outputs
    // as inputs is taken for a hidden layer whose head is missing.
    let head_inputs = weights.last().map_or(0, |w| w.ncols());
    if weights.len() < 2 || (fan_in > 1 && fan_in >= head_inputs) {
        return Err(NameTheLayers(format!(
            "{}: the last layer must be the classifier head, with one output (binary) or fewer outputs than inputs (one per class); {}",
            path.display(),
            order_hint()
        ))
        .into());
    }
    let mean = match file.tensors.contains_key("data.mean") {
        true => Some(file.take_matrix(path, "data.mean", &[Some(d)])?),
        false => None,
    };
    for (n, w) in layers.iter().zip(&weights) {
        finite(path, &format!("{n}.weight"), w)?;
    }
    for (n, b) in layers.iter().zip(&biases) {
        finite(path, &format!("{n}.bias"), b)?;
    }
    if let Some(extra) = file.tensors.keys().next() {
        return Err(NameTheLayers(format!(
            "{}: unexpected tensor {extra} (not a layer of the network read: {})",
            path.display(),
            layers.join(", ")
        ))
        .into());
    }
    Ok(ModelFile {
        mlp: Mlp {
            weights,
            biases,
            features: features.map(Arc::new),
        },
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

/// Checks that rows of `values` numbers (`what`, from `path`: "candidates", "the images of
/// mnist") fit a model of `d` inputs.
pub fn check_input_width(d: usize, values: usize, path: &Path, what: &str) -> Result<()> {
    if values != d {
        bail!(
            "{}: the model takes {d} inputs but {what} have {values} values",
            path.display()
        );
    }
    Ok(())
}
