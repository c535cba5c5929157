//! A training run as the CLI and the experiment use it: build the data set, train with
//! checkpoints and a JSONL log of the loss curve, write the model file with its metadata.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::{Array2, Axis};
use reveal_data::Prepared;
use reveal_io::{
    load_checkpoint, parse_tensors, read_file, read_timing, remove_checkpoints, rotate_checkpoint,
    truncate_log, write_timing,
};
use reveal_nn::files::{
    model_from_tensors, save_model, save_model_with_extra, LayerNames, ModelFile,
};
use reveal_nn::{Arch, Grid, Mlp};
use reveal_tape::Scalar;
use serde::{Deserialize, Serialize};

use crate::{accuracy, train, Control, Outcome, TrainConfig, TrainState};

/// Why a training job stopped before its end; the checkpoint holds the state it stopped in.
#[derive(Debug, thiserror::Error)]
pub enum TrainStopped {
    #[error("interrupted at epoch {epoch}: checkpoint {} written; {}", checkpoint.display(), if *resume { "rerun the same job to resume" } else { "rerun the same job with resume on to continue" })]
    Interrupted {
        epoch: usize,
        checkpoint: PathBuf,
        /// Whether the job was already resuming (then rerunning it resumes again).
        resume: bool,
    },
    #[error("training diverged after epoch {epoch} (loss {loss:e}; the next step's loss was not finite): lower the learning rate or use the fast schedule; the last finite model is in {}", checkpoint.display())]
    Diverged {
        epoch: usize,
        loss: f64,
        checkpoint: PathBuf,
    },
    #[error("training stalled at epoch {epoch} (loss {loss:e}, training error {error}): no step lowers the loss any more; the net may be too small for the data (try wider hidden layers); the model so far is in {}", checkpoint.display())]
    Stalled {
        epoch: usize,
        loss: f64,
        error: f64,
        checkpoint: PathBuf,
    },
}

/// Everything a training run needs besides the data.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// The network: convolutions and pooling (none for an MLP), then the fc hidden widths.
    pub arch: Arch,
    pub config: TrainConfig,
    /// Seed of the initialisation.
    pub seed: u64,
    pub out: PathBuf,
    /// Write a checkpoint every this many epochs (0: never).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint beside `out` if there is one.
    pub resume: bool,
}

impl TrainJob {
    /// The model before training: the recipe's init of the data's shape, drawn from the seed;
    /// an error when a convolution or pooling does not fit the images.
    pub fn initial<T: Scalar>(&self, data: &Prepared) -> Result<Mlp<T>> {
        init_network(&self.config, &self.arch, data, self.seed)
    }
}

/// A fresh network of architecture `arch` for `data`'s images and classes, drawn as the recipe
/// `config` says from `seed`; an error when a convolution or pooling does not fit the images.
pub fn init_network<T: Scalar>(
    config: &TrainConfig,
    arch: &Arch,
    data: &Prepared,
    seed: u64,
) -> Result<Mlp<T>> {
    let (channels, height, width) = data.shape;
    let input = Grid {
        channels,
        height,
        width,
    };
    let (hidden, outputs) = (&arch.hidden, data.outputs());
    match arch.features(input) {
        Err(e) => bail!("--arch {arch}: {e}"),
        Ok(None) => Ok(config.init_model(input.len(), hidden, outputs, seed)),
        Ok(Some(f)) => Ok(Mlp::init_features(
            f,
            hidden,
            outputs,
            config.init,
            config.biases,
            seed,
        )),
    }
}

/// The result of a training run, stored in the model file's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub outcome: Outcome,
    pub epochs: usize,
    pub rejected_steps: usize,
    pub train_loss: f64,
    pub train_error: f64,
    pub test_accuracy: f64,
    pub test_size: usize,
    /// Kept beside the model file (`timing_path`), not in it: products carry no clock readings.
    #[serde(skip)]
    pub wall_seconds: f64,
    /// What the user should hear about (a corrupt checkpoint replaced by the previous one).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// What the products were computed in: `f32`, `f64`, or `bf16` (f32 sums of bf16 operands).
    pub precision: String,
    pub hidden: Vec<usize>,
    pub config: TrainConfig,
    pub seed: u64,
}

impl TrainSummary {
    /// The summary in a model file's metadata (`train`), when it has one (a model reveal trained).
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Option<TrainSummary> {
        serde_json::from_str(metadata.get("train")?).ok()
    }
}

/// The training summary in a model file's metadata, with the wall time kept beside the file.
pub fn read_summary(path: &Path, metadata: &BTreeMap<String, String>) -> Result<TrainSummary> {
    let mut summary = TrainSummary::from_metadata(metadata)
        .with_context(|| format!("{}: no training summary in the metadata", path.display()))?;
    summary.wall_seconds = read_timing(path);
    Ok(summary)
}

/// Checks hidden widths a user gave: at least one layer, none empty.
pub fn check_hidden(hidden: &[usize]) -> Result<()> {
    if hidden.is_empty() || hidden.contains(&0) {
        bail!("hidden widths must be positive, e.g. 1000,1000");
    }
    Ok(())
}

/// The checkpoint file of a model output: `out` with `.ckpt` before the extension.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.with_extension("ckpt.safetensors")
}

/// The JSONL loss-curve log of a model output.
pub fn log_path(out: &Path) -> PathBuf {
    out.with_extension("train.jsonl")
}

/// The matrix a model sees for a split, in precision T.
pub fn features<T: Scalar>(x: &Array2<f32>) -> Array2<T> {
    x.mapv(|v| T::from_f64(v as f64))
}

/// Labels as a column [n, 1].
pub fn label_column<T: Scalar>(y: &ndarray::Array1<f32>) -> Array2<T> {
    y.mapv(|v| T::from_f64(v as f64)).insert_axis(Axis(1))
}

/// Metadata describing the data set, shared by models and checkpoints.
pub fn data_metadata(data: &Prepared) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("reveal.kind".into(), "model".into());
    m.insert(
        "data".into(),
        serde_json::to_string(&data.spec).expect("serialisable"),
    );
    m.insert(
        "input_shape".into(),
        serde_json::to_string(&data.shape).expect("serialisable"),
    );
    m.insert(
        "triggers".into(),
        serde_json::to_string(&data.triggers).expect("serialisable"),
    );
    m
}

/// The schedule's state in a training checkpoint's metadata (`train.state`); a mini-batch
/// optimiser's moments are tensors `optim.0`, `optim.1`, … of the same file.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    pub epoch: usize,
    pub rejected: usize,
    pub c: f64,
    pub seed: u64,
    pub elapsed: f64,
    /// Mini-batch steps taken (Adam's t).
    #[serde(default)]
    pub steps: u64,
}

/// A parsed training checkpoint.
pub struct Checkpoint<T> {
    pub file: ModelFile<T>,
    pub state: CheckpointState,
    /// The optimiser's moments, in order (see [`TrainState::moments`]).
    pub moments: Vec<Array2<T>>,
}

/// Parses a training checkpoint: a model file whose metadata holds the schedule's state, and
/// the optimiser's moments beside the model's tensors.
pub fn parse_checkpoint<T: Scalar>(bytes: &[u8], path: &Path) -> Result<Checkpoint<T>> {
    let mut tensors = parse_tensors::<T>(bytes, path)?;
    let mut moments = Vec::new();
    while let Some(t) = tensors.tensors.remove(&format!("optim.{}", moments.len())) {
        let dim = match t.shape[..] {
            [r, c] => (r, c),
            [c] => (1, c),
            _ => bail!(
                "{}: optim.{} has shape {:?}",
                path.display(),
                moments.len(),
                t.shape
            ),
        };
        moments.push(Array2::from_shape_vec(dim, t.data)?);
    }
    let file = model_from_tensors(tensors, path, &LayerNames::Auto, None)?;
    let state: CheckpointState = file
        .metadata
        .get("train.state")
        .and_then(|s| serde_json::from_str(s).ok())
        .with_context(|| {
            format!(
                "{}: no readable train.state in the metadata",
                path.display()
            )
        })?;
    Ok(Checkpoint {
        file,
        state,
        moments,
    })
}

/// Trains a model on `data` as `job` says; `on_epoch` sees every accepted step (for progress
/// bars) and may stop the run, in which case a checkpoint is written and an error says how to
/// resume.
pub fn run<T: Scalar>(
    job: &TrainJob,
    data: &Prepared,
    mut on_epoch: impl FnMut(&TrainState<T>) -> Control,
) -> Result<TrainSummary> {
    let x: Array2<T> = features(&data.train.x);
    let y: Array2<T> = label_column(&data.train.y);
    let d = x.ncols();
    let ckpt = checkpoint_path(&job.out);
    let log = log_path(&job.out);
    let mean = data
        .mean
        .view()
        .insert_axis(Axis(0))
        .mapv(|v| T::from_f64(v as f64));
    let meta = data_metadata(data);

    let resumed = match job.resume {
        true => load_checkpoint(&ckpt, |p| parse_checkpoint::<T>(&read_file(p)?, p))?,
        false => None,
    };
    let mut warnings = Vec::new();
    let (mut state, elapsed_before) = if let Some(loaded) = resumed {
        warnings.extend(loaded.warning);
        let Checkpoint {
            file,
            state: st,
            moments,
        } = loaded.value;
        if file.mlp.input_dim() != d
            || file.mlp.arch() != job.arch
            || file.mlp.bias_layout() != job.config.biases
        {
            bail!(
                "{}: checkpoint is a {}-input {} model with biases {:?}, this run wants {d} inputs, {} with {:?}",
                ckpt.display(),
                file.mlp.input_dim(),
                file.mlp.arch(),
                file.mlp.bias_layout(),
                job.arch,
                job.config.biases
            );
        }
        if file.metadata.get("data") != meta.get("data") {
            bail!(
                "{}: checkpoint was trained on another data set",
                ckpt.display()
            );
        }
        let mut s = TrainState::new(file.mlp, job.config.schedule);
        (s.epoch, s.rejected, s.c) = (st.epoch, st.rejected, st.c);
        (s.moments, s.steps, s.shuffle_seed) = (moments, st.steps, job.seed);
        truncate_log(&log, "epoch", st.epoch)?;
        (s, st.elapsed)
    } else {
        let _ = std::fs::remove_file(&log);
        let mlp: Mlp<T> = job.initial(data)?;
        let mut s = TrainState::new(mlp, job.config.schedule);
        s.shuffle_seed = job.seed;
        (s, 0.0)
    };

    let started = Instant::now();
    let save_checkpoint = |s: &TrainState<T>| -> Result<()> {
        let mut m = meta.clone();
        let st = CheckpointState {
            epoch: s.epoch,
            rejected: s.rejected,
            c: s.c,
            seed: job.seed,
            elapsed: elapsed_before + started.elapsed().as_secs_f64(),
            steps: s.steps,
        };
        m.insert(
            "train.state".into(),
            serde_json::to_string(&st).expect("serialisable"),
        );
        let moments: Vec<(String, &Array2<T>)> = s
            .moments
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("optim.{i}"), a))
            .collect();
        rotate_checkpoint(&ckpt, || {
            save_model_with_extra(&ckpt, &s.mlp(), Some(&mean), &moments, &m)
        })
    };
    let mut log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("{}: cannot open the training log", log.display()))?;
    let mut io_error = None;
    let outcome = train(&mut state, &x, &y, &job.config, |s| {
        let line = format!(
            "{{\"epoch\":{},\"loss\":{:e},\"train_error\":{},\"c\":{:e}}}\n",
            s.epoch, s.loss, s.error, s.c
        );
        let mut result = log_file
            .write_all(line.as_bytes())
            .map_err(anyhow::Error::from);
        if job.checkpoint_every > 0 && s.epoch.is_multiple_of(job.checkpoint_every) {
            result = result.and_then(|_| save_checkpoint(s));
        }
        if let Err(e) = result {
            io_error = Some(e);
            return Control::Stop;
        }
        on_epoch(s)
    });
    if let Some(e) = io_error {
        return Err(e);
    }
    match outcome {
        Outcome::Stopped => {
            save_checkpoint(&state)?;
            return Err(TrainStopped::Interrupted {
                epoch: state.epoch,
                checkpoint: ckpt,
                resume: job.resume,
            }
            .into());
        }
        Outcome::Diverged => {
            save_checkpoint(&state)?;
            return Err(TrainStopped::Diverged {
                epoch: state.epoch,
                loss: state.loss,
                checkpoint: ckpt,
            }
            .into());
        }
        // With weight decay the loss has a floor: no step lowering it any more is the
        // stationary point training aims at, not a failure.
        Outcome::Stalled if job.config.weight_decay == 0.0 => {
            save_checkpoint(&state)?;
            return Err(TrainStopped::Stalled {
                epoch: state.epoch,
                loss: state.loss,
                error: state.error,
                checkpoint: ckpt,
            }
            .into());
        }
        Outcome::Converged | Outcome::EpochCap | Outcome::Stalled => {}
    }
    let test_x: Array2<T> = features(&data.test.x);
    let summary = TrainSummary {
        outcome,
        epochs: state.epoch,
        rejected_steps: state.rejected,
        train_loss: state.loss,
        train_error: state.error,
        test_accuracy: accuracy(
            &state.mlp(),
            &test_x,
            data.test.y.as_slice().expect("contiguous"),
        ),
        test_size: data.test.y.len(),
        wall_seconds: elapsed_before + started.elapsed().as_secs_f64(),
        warnings,
        precision: reveal_tape::kernels::gemm::product_precision::<T>().into(),
        hidden: job.arch.hidden.clone(),
        config: job.config,
        seed: job.seed,
    };
    let mut m = meta;
    m.insert(
        "train".into(),
        serde_json::to_string(&summary).expect("serialisable"),
    );
    save_model(&job.out, &state.mlp(), Some(&mean), &m)?;
    write_timing(&job.out, summary.wall_seconds)?;
    remove_checkpoints(&ckpt);
    Ok(summary)
}
