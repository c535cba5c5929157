//! Running a search: the planned runs (see [`crate::plan`]) one after another or several at
//! once, each resumable from its checkpoint, then ranked ([`crate::stats`]) and the candidates
//! of the best pooled into one file.
//!
//! Layout beside the output `OUT.safetensors`: a folder `OUT.runs/` holding, per run i,
//! `run-i.jsonl` (its curve), `run-i.ckpt.safetensors` (while running) and `run-i.safetensors`
//! (when done), and `summary.json` (every run's hyperparameters, final terms and rank).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use ndarray::{concatenate, Array2, Axis};
use rayon::prelude::*;
use reveal_io::{
    load_checkpoint, read_file, read_timing, remove_checkpoints, rotate_checkpoint, truncate_log,
    write_atomic, write_timing,
};
use reveal_nn::Theta;
use reveal_tape::kernels::gemm::product_precision;
use reveal_tape::Scalar;
use serde::{Deserialize, Serialize};

use crate::files::{load_candidates, parse_run_checkpoint, save_candidates};
use crate::optim::{layer1_residual, run, Finish, RunConfig, RunState, Stop};
use crate::plan::Shard;
use crate::stats::{rank, spearman, RankBy};
use crate::terms::Terms;

/// A search as the CLI describes it.
#[derive(Clone, Debug)]
pub struct SearchJob {
    pub runs: Vec<RunConfig>,
    /// How many of the best runs to pool.
    pub keep: usize,
    pub out: PathBuf,
    pub rank_by: RankBy,
    /// Checkpoint every N iterations (0: only on interrupt).
    pub checkpoint_every: usize,
    /// Log the curve every N iterations.
    pub log_every: usize,
    /// Run this many runs at once.
    pub parallel: usize,
    /// Metadata for every file written (model path, precision, …).
    pub metadata: BTreeMap<String, String>,
    /// Do only this shard's runs and write no pooled output (`reveal pool` does that).
    pub shard: Option<Shard>,
}

impl SearchJob {
    /// A search of `runs` pooling the best `keep` into `out`, with the defaults: ranked by the
    /// final L_kkt (no training set needed), a checkpoint every 1,000 and a log line every 100
    /// iterations, [`SearchJob::default_parallel`] runs at once, no metadata, no shard.
    pub fn new(runs: Vec<RunConfig>, keep: usize, out: PathBuf) -> Self {
        let parallel = Self::default_parallel(runs.len());
        SearchJob {
            runs,
            keep,
            out,
            rank_by: RankBy::Kkt,
            checkpoint_every: 1000,
            log_every: 100,
            parallel,
            metadata: BTreeMap::new(),
            shard: None,
        }
    }

    /// How many runs go at once unless told: two when there are several (each run's step is
    /// itself parallel, and two runs side by side use two cores best on the machines measured),
    /// else one.
    pub fn default_parallel(runs: usize) -> usize {
        if runs > 1 {
            2
        } else {
            1
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub index: usize,
    pub config: RunConfig,
    pub iters: usize,
    /// Final terms of L (at the last evaluated point).
    pub loss: f64,
    pub loss_kkt: f64,
    pub loss_prior_x: f64,
    pub loss_prior_lambda: f64,
    /// ‖W1 − G_W1‖² / ‖W1‖².
    pub layer1_residual: f64,
    /// S when ranked (or scored) against the training set.
    pub score: Option<f64>,
    /// How it ended, when it did not fail: all iterations, or settled early.
    #[serde(default)]
    pub finish: Option<Finish>,
    /// Why it stopped early, if it did.
    pub failure: Option<String>,
    /// Kept beside the run's file (`timing_path`), not in it: products carry no clock readings.
    #[serde(skip)]
    pub wall_seconds: f64,
    /// What the user should hear about (a corrupt checkpoint replaced by the previous one).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// What a search produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchSummary {
    pub runs: Vec<RunSummary>,
    /// Run indices, best first, by the chosen signal.
    pub ranking: Vec<usize>,
    pub rank_by: RankBy,
    /// The runs pooled into the output.
    pub pooled: Vec<usize>,
    /// Spearman correlation between the kkt and score rankings, when both are known.
    pub rank_agreement: Option<f64>,
}

/// The runs of a job whose result file is not written yet.
pub fn missing_runs(job: &SearchJob) -> Vec<usize> {
    (0..job.runs.len())
        .filter(|&i| !run_file(&job.out, i, "safetensors").exists())
        .collect()
}

/// The folder of per-run files for an output path.
pub fn runs_dir(out: &Path) -> PathBuf {
    out.with_extension("runs")
}

fn run_file(out: &Path, i: usize, what: &str) -> PathBuf {
    runs_dir(out).join(format!("run-{i}.{what}"))
}

/// Progress of one iteration of one run, for progress bars.
pub struct Tick<'a> {
    pub run: usize,
    pub iter: usize,
    pub terms: &'a Terms<f64>,
}

fn run_metadata<T: Scalar>(job: &SearchJob, i: usize, cfg: &RunConfig) -> BTreeMap<String, String> {
    let mut m = job.metadata.clone();
    m.insert("run".into(), i.to_string());
    m.insert(
        "config".into(),
        serde_json::to_string(cfg).expect("serialisable"),
    );
    m.insert(PRODUCTS.into(), product_precision::<T>().into());
    m
}

/// The metadata key of the precision a run's matrix products were computed in.
const PRODUCTS: &str = "products";

/// An error unless the run in `path` (metadata `meta`) was made with the products of this
/// process (files without the key were made in their element type's own precision).
fn same_products<T: Scalar>(meta: &BTreeMap<String, String>, path: &Path) -> Result<()> {
    let made = meta.get(PRODUCTS).map_or(T::NAME, String::as_str);
    if made != product_precision::<T>() {
        return Err(anyhow!(
            "{}: this run's products were {made}, this command's are {}; use another output folder or the same --precision",
            path.display(),
            product_precision::<T>()
        ));
    }
    Ok(())
}

/// Metadata plus the seconds a run has taken so far (kept across resumes).
fn with_elapsed(meta: &BTreeMap<String, String>, seconds: f64) -> BTreeMap<String, String> {
    let mut m = meta.clone();
    m.insert("elapsed".into(), format!("{seconds:.3}"));
    m
}

/// Runs (or resumes, or skips when finished) run `i` of the job.
fn one_run<T: Scalar>(
    theta: &Theta<T>,
    job: &SearchJob,
    i: usize,
    tick: &(dyn Fn(Tick) -> bool + Sync),
) -> Result<(RunSummary, RunState<T>)> {
    let cfg = job.runs[i];
    let (done, ckpt, log) = (
        run_file(&job.out, i, "safetensors"),
        run_file(&job.out, i, "ckpt.safetensors"),
        run_file(&job.out, i, "jsonl"),
    );
    let meta = run_metadata::<T>(job, i, &cfg);
    if done.exists() {
        let f = load_candidates::<T>(&done)?;
        same_products::<T>(&f.metadata, &done)?;
        let mut summary: RunSummary = f
            .metadata
            .get("summary")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                anyhow!(
                    "{}: no run summary in the metadata; delete it to rerun",
                    done.display()
                )
            })?;
        if summary.config != cfg {
            return Err(anyhow!(
                "{}: this run was made with other settings; use another output folder or delete {}",
                done.display(),
                runs_dir(&job.out).display()
            ));
        }
        summary.wall_seconds = read_timing(&done);
        return Ok((summary, f.into_state()));
    }
    let read = |p: &Path| parse_run_checkpoint::<T>(&read_file(p)?, p);
    let mut warnings = Vec::new();
    let (mut state, elapsed_before) = match load_checkpoint(&ckpt, read)? {
        Some(loaded) => {
            warnings.extend(loaded.warning);
            let (f, elapsed) = loaded.value;
            same_products::<T>(&f.metadata, &ckpt)?;
            if f.metadata.get("config") != meta.get("config") {
                return Err(anyhow!(
                    "{}: checkpoint of a run with other settings",
                    ckpt.display()
                ));
            }
            let state = f.into_state();
            truncate_log(&log, "iter", state.iter)?;
            (state, elapsed)
        }
        None => {
            let _ = std::fs::remove_file(&log);
            (
                RunState::init_for(theta.input_dim(), theta.outputs(), &cfg),
                0.0,
            )
        }
    };
    let mut log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("{}: cannot open", log.display()))?;
    let started = Instant::now();
    let save_checkpoint = |s: &RunState<T>| {
        let elapsed = elapsed_before + started.elapsed().as_secs_f64();
        rotate_checkpoint(&ckpt, || {
            save_candidates(&ckpt, s, true, &with_elapsed(&meta, elapsed))
        })
    };
    let mut io_error = None;
    let result = run(theta, &mut state, &cfg, |s, t| {
        let mut r: Result<()> = Ok(());
        if s.iter == 1 || s.iter.is_multiple_of(job.log_every.max(1)) || s.iter == cfg.iters {
            let line = format!(
                "{{\"iter\":{},\"loss\":{:e},\"kkt\":{:e},\"prior_x\":{:e},\"prior_lambda\":{:e},\"layer1_residual\":{:e}}}\n",
                s.iter, t.total, t.kkt, t.prior_x, t.prior_lambda, layer1_residual(theta, t)
            );
            r = log_file
                .write_all(line.as_bytes())
                .map_err(anyhow::Error::from);
        }
        if job.checkpoint_every > 0 && s.iter.is_multiple_of(job.checkpoint_every) {
            r = r.and_then(|_| save_checkpoint(s));
        }
        if let Err(e) = r {
            io_error = Some(e);
            return false;
        }
        tick(Tick {
            run: i,
            iter: s.iter,
            terms: t,
        })
    });
    if let Some(e) = io_error {
        return Err(e);
    }
    let (finish, failure) = match result {
        Ok(finish) => (Some(finish), None),
        Err(Stop::Interrupted) => {
            save_checkpoint(&state)?;
            return Err(anyhow!("interrupted at iteration {} of run {i}: checkpoint {} written; rerun the same command to resume", state.iter, ckpt.display()));
        }
        Err(e @ Stop::Diverged { .. }) => (None, Some(e.to_string())),
    };
    let t = state.last.unwrap_or(Terms {
        kkt: f64::NAN,
        kkt_w1: f64::NAN,
        prior_x: f64::NAN,
        prior_lambda: f64::NAN,
        total: f64::NAN,
    });
    let summary = RunSummary {
        index: i,
        config: cfg,
        iters: state.iter,
        loss: t.total,
        loss_kkt: t.kkt,
        loss_prior_x: t.prior_x,
        loss_prior_lambda: t.prior_lambda,
        layer1_residual: layer1_residual(theta, &t),
        score: None,
        finish,
        failure,
        wall_seconds: elapsed_before + started.elapsed().as_secs_f64(),
        warnings,
    };
    let mut m = meta;
    m.insert(
        "summary".into(),
        serde_json::to_string(&summary).expect("serialisable"),
    );
    save_candidates(&done, &state, false, &m)?;
    write_timing(&done, summary.wall_seconds)?;
    remove_checkpoints(&ckpt);
    Ok((summary, state))
}

/// Scores a run's candidates against the training set (higher is better).
pub type Scorer<'a, T> = dyn Fn(&RunState<T>) -> f64 + Sync + 'a;

/// Runs the search on θ (with its origin θ0 when known), ranks the runs and writes the pooled
/// candidates of the best `keep` to `job.out`. `score`, when given, scores a run's candidates against the training set.
pub fn run_search<T: Scalar>(
    theta: &Theta<T>,
    job: &SearchJob,
    score: Option<&Scorer<'_, T>>,
    tick: &(dyn Fn(Tick) -> bool + Sync),
) -> Result<SearchSummary> {
    std::fs::create_dir_all(runs_dir(&job.out))
        .with_context(|| format!("{}: cannot create", runs_dir(&job.out).display()))?;
    let mine: Vec<usize> = (0..job.runs.len())
        .filter(|&i| job.shard.is_none_or(|s| s.owns(i)))
        .collect();
    // One run at a time in the global rayon pool, so its GEMMs split across every core.
    let results: Vec<Result<(RunSummary, RunState<T>)>> = if job.parallel <= 1 {
        mine.iter().map(|&i| one_run(theta, job, i, tick)).collect()
    } else {
        // A pool of `parallel` threads: that many runs at once, their GEMMs split across it.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(job.parallel)
            .build()?;
        pool.install(|| {
            mine.par_iter()
                .map(|&i| one_run(theta, job, i, tick))
                .collect()
        })
    };
    let mut runs = Vec::with_capacity(results.len());
    let mut states = Vec::with_capacity(results.len());
    for r in results {
        let (s, st) = r?;
        runs.push(s);
        states.push(st);
    }
    if job.shard.is_some() {
        // A shard's runs are on disk; pooling waits for every shard.
        return Ok(SearchSummary {
            runs,
            ranking: Vec::new(),
            rank_by: job.rank_by,
            pooled: Vec::new(),
            rank_agreement: None,
        });
    }
    if let Some(score) = score {
        for (r, st) in runs.iter_mut().zip(&states) {
            r.score = Some(score(st));
        }
    }
    let usable: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].failure.is_none() && runs[i].loss.is_finite())
        .collect();
    let rank_by = if score.is_none() {
        RankBy::Kkt
    } else {
        job.rank_by
    };
    let ranking = rank(&runs, &usable, rank_by);
    let rank_agreement = score.map(|_| {
        spearman(
            &rank(&runs, &usable, RankBy::Kkt),
            &rank(&runs, &usable, RankBy::Score),
        )
    });
    if ranking.is_empty() {
        return Err(anyhow!(
            "every run diverged: {}",
            runs.iter()
                .filter_map(|r| r.failure.clone())
                .next()
                .unwrap_or_default()
        ));
    }
    let pooled: Vec<usize> = ranking.iter().copied().take(job.keep.max(1)).collect();
    let cat = |f: &dyn Fn(&RunState<T>) -> &Array2<T>| {
        let views: Vec<_> = pooled.iter().map(|&i| f(&states[i]).view()).collect();
        concatenate(Axis(0), &views).expect("same widths")
    };
    // A pooled file is no checkpoint: it holds the candidates, and no optimiser state.
    let merged = RunState::fresh(cat(&|s| &s.x), cat(&|s| &s.lambda), cat(&|s| &s.y));
    let summary = SearchSummary {
        runs,
        ranking,
        rank_by,
        pooled,
        rank_agreement,
    };
    let mut meta = job.metadata.clone();
    meta.insert(
        "search".into(),
        serde_json::to_string(&summary).expect("serialisable"),
    );
    // The best run's settings, which `reveal kkt` uses by default.
    let best = &summary.runs[summary.ranking[0]].config;
    meta.insert(
        "config".into(),
        serde_json::to_string(best).expect("serialisable"),
    );
    save_candidates(&job.out, &merged, false, &meta)?;
    write_timing(&job.out, summary.runs.iter().map(|r| r.wall_seconds).sum())?;
    write_atomic(
        &runs_dir(&job.out).join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}
