//! The plan of an experiment and how long it will take, from a few timed steps, printed before
//! any long work starts.

use std::time::Instant;

use anyhow::Result;
use reveal_nn::Mlp;
use reveal_recon::optim::{step, RunState};
use reveal_recon::plan::default_candidates;
use reveal_train::job::{features, label_column};
use reveal_train::Schedule;
use serde::Serialize;

use crate::{data_for, models, ExperimentConfig};

/// What an experiment will do and roughly how long it takes.
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    /// Models to train and reconstruct (every bias level and the control, for every seed).
    pub models: usize,
    pub seeds: usize,
    pub runs_per_model: usize,
    pub iterations_per_run: usize,
    /// Candidates per run.
    pub candidates: usize,
    /// The training schedule's epoch cap, and the epochs it typically needs: under 1,000 for
    /// the fast schedule (measured 43–786 on MNIST and CIFAR-10), the cap for the reference
    /// schedule (it needs 4·10⁵–10⁶).
    pub max_epochs: usize,
    pub typical_epochs: usize,
    /// Median seconds of a training epoch and of a reconstruction iteration, timed here.
    pub epoch_seconds: f64,
    pub iteration_seconds: f64,
    /// Seconds for the whole experiment: reconstruction, training at the typical epochs and
    /// at the cap.
    pub reconstruction_seconds: f64,
    pub training_seconds: f64,
    pub training_seconds_at_cap: f64,
}

impl Estimate {
    /// Typical total seconds (training at its typical length plus reconstruction).
    pub fn total_seconds(&self) -> f64 {
        self.training_seconds + self.reconstruction_seconds
    }
}

/// Median seconds of `n` calls of `f` after one untimed call.
fn median_seconds(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

/// Plans `cfg` and times 3 training epochs and 3 reconstruction iterations of its first model
/// (with a fresh model of the configured size on the first data set).
pub fn estimate(cfg: &ExperimentConfig) -> Result<Estimate> {
    let data = data_for(cfg, cfg.biases[0], cfg.seeds[0])?;
    let x = std::sync::Arc::new(features::<f32>(&data.train.x));
    let y = std::sync::Arc::new(label_column::<f32>(&data.train.y));
    let model: Mlp<f32> = reveal_train::job::init_network(&cfg.train, &cfg.arch, &data, 0)?;
    let theta = model.theta();
    // A mini-batch epoch is about one full-batch step in batches and one whole-set evaluation.
    let per_epoch = if cfg.train.schedule.batch_size().is_some() {
        2.0
    } else {
        1.0
    };
    let epoch_seconds = per_epoch
        * median_seconds(3, || {
            let e = reveal_train::evaluate_shared(&theta, &x, &y, cfg.train.objective());
            let _ = reveal_train::stepped(&theta, &e.grads, 1e-3);
        });
    let plan = reveal_recon::Plan {
        m: default_candidates(cfg.per_class, data.outputs()),
        ..cfg.recon.plan.clone()
    };
    let run = plan.configs()?[0];
    let mut state = RunState::<f32>::init_for(x.ncols(), data.outputs(), &run);
    let mut iteration_seconds = median_seconds(3, || {
        // A diverging start only ends the timing early; the estimate keeps what it measured.
        let _ = step(&theta, &mut state, &run);
    });
    if !iteration_seconds.is_finite() {
        iteration_seconds = 0.0;
    }
    let n_models = models(cfg).len();
    let typical_epochs = match cfg.train.schedule {
        Schedule::Fast { .. } => cfg.train.max_epochs.min(1000),
        _ => cfg.train.max_epochs,
    };
    // The control is not trained: it borrows its seed's base model.
    let trained = cfg.biases.len() * cfg.seeds.len();
    Ok(Estimate {
        models: n_models,
        seeds: cfg.seeds.len(),
        runs_per_model: plan.runs,
        iterations_per_run: plan.iters,
        candidates: plan.m,
        max_epochs: cfg.train.max_epochs,
        typical_epochs,
        epoch_seconds,
        iteration_seconds,
        reconstruction_seconds: (n_models * plan.runs * plan.iters) as f64 * iteration_seconds,
        training_seconds: (trained * typical_epochs) as f64 * epoch_seconds,
        training_seconds_at_cap: (trained * cfg.train.max_epochs) as f64 * epoch_seconds,
    })
}

/// Seconds as "2 h 05 min", "12 min", "40 s".
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600 + 30) / 60),
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "plan: {} models ({} seed(s)) × {} run(s) × {} iterations of {} candidates",
            self.models, self.seeds, self.runs_per_model, self.iterations_per_run, self.candidates
        )?;
        writeln!(
            f,
            "timed here: a training epoch {:.4} s, a reconstruction iteration {:.4} s",
            self.epoch_seconds, self.iteration_seconds
        )?;
        write!(
            f,
            "estimate: reconstruction {}, training {} (typically {} epochs a model; at the cap of {} epochs: {}); in all about {}",
            human(self.reconstruction_seconds),
            human(self.training_seconds),
            self.typical_epochs,
            self.max_epochs,
            human(self.training_seconds_at_cap),
            human(self.total_seconds())
        )
    }
}
