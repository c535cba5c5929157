//! A model zoo: a population of models trained the ways people train them, clean and with a
//! planted shortcut of a known kind, place and strength, each audited as a user would, so that
//! the audit's error rates are measured rather than hoped for ([`crate::metrics`]).
//!
//! Members: for every recipe and seed one clean model, and for every trigger kind, fraction and
//! seed one triggered model (the class drawn from the seed). Each member's model and audit sit
//! in `members/<name>/`; a rerun reuses both (only the maps and verdicts are computed again, so
//! a changed statistic is re-measured in seconds). `zoo.json` holds every member and the table.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reveal_data::{prepare, DataSpec, KindName, Source, Task, TestSelection, Trigger};
use reveal_io::write_atomic;
use reveal_nn::files::{save_model, LayerNames};
use reveal_nn::{Arch, Biases, Init};
use reveal_recon::search::Tick;
use reveal_render::plot::{self, Strip, StripPoint};
use reveal_train::job::{self as train_job, TrainJob};
use reveal_train::{Control, Schedule, TrainConfig, TrainState};
use serde::{Deserialize, Serialize};

use crate::metrics::{auroc, rate, tpr_at_fpr};
use crate::verdict::{ShortcutKind, Verdict};
use crate::workflow::{audit, AuditBudget, AuditConfig};

/// A named training recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub config: TrainConfig,
}

impl Recipe {
    /// The recipes by name: `gd` (the papers': full-batch descent with the fast schedule from the
    /// small init to loss 1e-5), `adam` (lr 1e-3, batches of 20, 60 epochs, PyTorch's init),
    /// `sgd` (momentum 0.9, lr 0.01, weight decay 5e-4, batches of 20, 150 epochs, PyTorch's
    /// init); each with a first-layer bias, or with `-all` a bias in every layer.
    pub fn named(name: &str) -> Result<Recipe, String> {
        let (base, biases) = match name.strip_suffix("-all") {
            Some(b) => (b, Biases::All),
            None => (name, Biases::First),
        };
        let config = match base {
            "gd" => TrainConfig::fast(1e-5, 100_000),
            "adam" => TrainConfig {
                schedule: Schedule::Adam {
                    lr: 1e-3,
                    batch_size: 20,
                },
                target_loss: 0.0,
                max_epochs: 60,
                init: Init::Default,
                ..TrainConfig::fast(0.0, 0)
            },
            "sgd" => TrainConfig {
                schedule: Schedule::Sgd {
                    lr: 0.01,
                    momentum: 0.9,
                    batch_size: 20,
                },
                target_loss: 0.0,
                max_epochs: 150,
                weight_decay: 5e-4,
                init: Init::Default,
                ..TrainConfig::fast(0.0, 0)
            },
            _ => {
                return Err(format!(
                    "unknown recipe {name:?}: expected gd, adam or sgd, each optionally with -all"
                ))
            }
        };
        Ok(Recipe {
            name: name.to_string(),
            config: TrainConfig { biases, ..config },
        })
    }
}

impl std::str::FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Recipe::named(s)
    }
}

/// What a zoo is made of.
#[derive(Clone, Debug)]
pub struct ZooConfig {
    pub source: Source,
    pub task: Option<Task>,
    pub per_class: usize,
    pub hidden: Vec<usize>,
    pub recipes: Vec<Recipe>,
    pub kinds: Vec<KindName>,
    /// Shares of the chosen class's images that carry the trigger (e.g. 1.0 and 0.3).
    pub fractions: Vec<f64>,
    pub seeds: Vec<u64>,
    pub test: TestSelection,
    pub data_dir: Option<PathBuf>,
    pub out: PathBuf,
    pub budget: AuditBudget,
    /// Reconstruction iterations per run (default: the audit's).
    pub iters: Option<usize>,
    /// Whether members trained from PyTorch's init are audited from their weights before
    /// training (kept as `init.safetensors`, the way an auditor who saved them would), in
    /// `audit-init/`; otherwise, and for the small init, without them, in `audit/`.
    pub from_init: bool,
}

/// One model of the zoo and what the audit said of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub recipe: String,
    pub seed: u64,
    /// The planted shortcut (none: a clean model).
    pub trigger: Option<Trigger>,
    pub train_error: f64,
    pub test_accuracy: f64,
    pub verdict: Verdict,
    /// The localised statistic: the verdict's score over its threshold.
    pub ratio: f64,
    /// For a localised trigger: the share of the map's top-K pixels inside it, K its area.
    pub precision: Option<f64>,
    /// The global statistic: ρ_half of its candidates ([`crate::biasmap::consistency`]) and its
    /// threshold.
    #[serde(default)]
    pub consistency: Option<[f64; 2]>,
    pub audit_seconds: f64,
}

/// One row of the zoo's table: a recipe against one kind of trigger (or all clean models).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub recipe: String,
    /// The trigger kind, or "clean".
    pub kind: String,
    pub models: usize,
    /// Share flagged (false-alarm rate for the clean row).
    pub flagged: Option<f64>,
    /// Share flagged of the right kind (localised for patch and line, global for the others).
    pub flagged_right_kind: Option<f64>,
    pub inconclusive: Option<f64>,
    /// Of the kind's own statistic ([`Member::statistic`]), against the same recipe's clean
    /// models.
    pub auroc: Option<f64>,
    pub tpr_at_5_fpr: Option<f64>,
    /// Mean top-K precision of the flagged localised triggers.
    pub precision: Option<f64>,
}

impl Member {
    /// The detector's continuous output for a kind of trigger: the localised score over its
    /// threshold (patch, line), or ρ_half less its threshold (blend, contrast, tint); each
    /// flags above 1 and 0 respectively.
    pub fn statistic(&self, localised: bool) -> Option<f64> {
        match localised {
            true => Some(self.ratio),
            false => self.consistency.map(|[value, threshold]| value - threshold),
        }
    }
}

/// `zoo.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ZooReport {
    pub data_set: String,
    pub members: Vec<Member>,
    pub rows: Vec<Row>,
}

/// One member as planned: its recipe (an index into [`ZooConfig::recipes`]), the trigger kind
/// and share planted (none: clean), its seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Planned {
    pub recipe: usize,
    pub planted: Option<(KindName, f64)>,
    pub seed: u64,
}

impl ZooConfig {
    /// Checks the zoo before any model is trained: recipes, seeds and hidden widths given,
    /// shares in (0, 1], the data set at hand, and every trigger kind drawable on its images (a
    /// tint needs colour). Returns the images' shape (C, H, W) and the task's class count.
    pub fn validate(&self) -> Result<((usize, usize, usize), usize)> {
        if self.recipes.is_empty() || self.seeds.is_empty() {
            bail!("a zoo needs at least one recipe and one seed");
        }
        train_job::check_hidden(&self.hidden)?;
        if let Some(f) = self.fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            bail!("trigger fraction {f}: each must be in (0, 1]");
        }
        let images = self.images()?;
        let (shape, _) = images;
        for kind in &self.kinds {
            kind.draw(shape, &mut ChaCha8Rng::seed_from_u64(0))
                .with_context(|| format!("trigger {kind} on {:?} images", shape))?;
        }
        Ok(images)
    }

    /// The clean training set's spec.
    fn spec(&self) -> DataSpec {
        let mut spec = DataSpec::new(self.source.clone(), self.per_class);
        if let Some(t) = &self.task {
            spec.task = t.clone();
        }
        spec.test = self.test;
        spec
    }

    /// The images' shape (C, H, W) and the task's class count, from the clean data set.
    fn images(&self) -> Result<((usize, usize, usize), usize)> {
        let clean = prepare(&self.spec(), self.data_dir.as_deref())?;
        Ok((clean.shape, clean.classes()))
    }

    /// Every member, each recipe's clean models first.
    pub fn plan(&self) -> Vec<Planned> {
        let mut out = Vec::new();
        for recipe in 0..self.recipes.len() {
            let mut add = |planted| {
                out.extend(self.seeds.iter().map(|&seed| Planned {
                    recipe,
                    planted,
                    seed,
                }))
            };
            add(None);
            for &k in &self.kinds {
                for &f in &self.fractions {
                    add(Some((k, f)));
                }
            }
        }
        out
    }
}

/// A member's folder name: recipe, kind and share, seed.
fn member_name(recipe: &str, planted: Option<(KindName, f64)>, seed: u64) -> String {
    match planted {
        None => format!("{recipe}-clean-s{seed}"),
        Some((k, f)) => format!("{recipe}-{k}{:.0}-s{seed}", 100.0 * f),
    }
}

/// The data set of a member: the task's training set, with the trigger drawn from the seed for
/// images of `shape` and a task of `classes` classes.
fn member_data(
    cfg: &ZooConfig,
    (shape, classes): ((usize, usize, usize), usize),
    planted: Option<(KindName, f64)>,
    seed: u64,
) -> Result<reveal_data::Prepared> {
    let mut spec = cfg.spec();
    if let Some((kind, fraction)) = planted {
        // One stream per member: the kind's index keeps kinds of one seed apart.
        let index = KindName::ALL.iter().position(|&k| k == kind).unwrap_or(0) as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(index));
        spec.trigger = Some(Trigger {
            kind: kind.draw(shape, &mut rng)?,
            class: rng.gen_range(0..classes),
            fraction,
            seed: rng.gen(),
        });
    }
    prepare(&spec, cfg.data_dir.as_deref())
}

/// Top-K precision of a map's strongest pixels (row, col) against a trigger's pixels.
fn precision(top: &[[usize; 2]], trigger: &Trigger, shape: (usize, usize, usize)) -> Option<f64> {
    let pixels = trigger.kind.pixels(shape);
    if pixels.is_empty() {
        return None;
    }
    let w = shape.2;
    let k = pixels.len().min(top.len());
    let inside = top[..k]
        .iter()
        .filter(|&&[r, c]| pixels.contains(&(r * w + c)))
        .count();
    Some(inside as f64 / k as f64)
}

/// Builds (or resumes) the zoo, audits every member and writes `zoo.json` and `zoo.md`;
/// `member` hears of each member as it starts (its index, the count and its name).
pub fn run(
    cfg: &ZooConfig,
    member: &dyn Fn(usize, usize, &str),
    epoch: &dyn Fn(&TrainState<f32>) -> Control,
    tick: &(dyn Fn(Tick) -> bool + Sync),
) -> Result<ZooReport> {
    let images = cfg.validate()?;
    let plan = cfg.plan();
    let mut members = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let (recipe, planted, seed) = (&cfg.recipes[p.recipe], p.planted, p.seed);
        let name = member_name(&recipe.name, planted, seed);
        member(i, plan.len(), &name);
        let dir = cfg.out.join("members").join(&name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let data = member_data(cfg, images, planted, seed)?;
        let model = dir.join("model.safetensors");
        let job = TrainJob {
            arch: Arch::mlp(&cfg.hidden),
            config: recipe.config,
            seed,
            out: model.clone(),
            checkpoint_every: 0,
            resume: true,
        };
        if !model.exists() {
            train_job::run::<f32>(&job, &data, epoch)?;
        }
        let file = reveal_nn::files::load_model::<f32>(&model)?;
        let summary = train_job::read_summary(&model, &file.metadata)?;
        // The weights before training, as the recipe and seed drew them.
        let init = (cfg.from_init && recipe.config.init == Init::Default)
            .then(|| dir.join("init.safetensors"));
        if let Some(path) = init.as_ref().filter(|p| !p.exists()) {
            save_model(path, &job.initial::<f32>(&data)?, None, &Default::default())?;
        }
        let report = audit(
            &AuditConfig {
                model: model.clone(),
                init: init.clone(),
                layers: LayerNames::Auto,
                arch: None,
                data: None,
                train_known: true,
                data_dir: cfg.data_dir.clone(),
                out: dir.join(if init.is_some() {
                    "audit-init"
                } else {
                    "audit"
                }),
                budget: cfg.budget,
                candidates: None,
                iters: cfg.iters,
                multipliers: None,
                seed,
            },
            tick,
        )?;
        let trigger = data.spec.trigger.clone();
        members.push(Member {
            name,
            recipe: recipe.name.clone(),
            seed,
            precision: trigger
                .as_ref()
                .and_then(|t| precision(&report.bias_map.top_pixels, t, data.shape)),
            trigger,
            train_error: summary.train_error,
            test_accuracy: summary.test_accuracy,
            ratio: report.verdict.score / report.verdict.threshold,
            consistency: report
                .bias_map
                .consistency
                .as_ref()
                .map(|c| [c.value, c.threshold()]),
            verdict: report.verdict,
            audit_seconds: report.seconds,
        });
    }
    let report = ZooReport {
        data_set: cfg.source.name().to_string(),
        rows: table(&cfg.recipes, &members),
        members,
    };
    write_atomic(
        &cfg.out.join("zoo.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    plot::write(&cfg.out.join(PLOT), &strip(&report), (960, 540))?;
    write_atomic(&cfg.out.join("zoo.md"), markdown(&report).as_bytes())?;
    Ok(report)
}

/// The table: per recipe its clean models' false alarms, then each trigger kind's detection.
pub fn table(recipes: &[Recipe], members: &[Member]) -> Vec<Row> {
    let mut rows = Vec::new();
    for recipe in recipes {
        let of_recipe: Vec<&Member> = members.iter().filter(|m| m.recipe == recipe.name).collect();
        let clean: Vec<&Member> = of_recipe
            .iter()
            .copied()
            .filter(|m| m.trigger.is_none())
            .collect();

        let flags = |ms: &[&Member], f: &dyn Fn(&Member) -> bool| {
            rate(&ms.iter().map(|m| f(m)).collect::<Vec<_>>())
        };
        rows.push(Row {
            recipe: recipe.name.clone(),
            kind: "clean".into(),
            models: clean.len(),
            flagged: flags(&clean, &|m| m.verdict.shortcut_suspected),
            flagged_right_kind: None,
            inconclusive: flags(&clean, &|m| m.verdict.inconclusive),
            auroc: None,
            tpr_at_5_fpr: None,
            precision: None,
        });
        for kind in KindName::ALL {
            let of_kind: Vec<&Member> = of_recipe
                .iter()
                .copied()
                .filter(|m| m.trigger.as_ref().is_some_and(|t| t.kind.name() == kind))
                .collect();
            if of_kind.is_empty() {
                continue;
            }
            let statistic = |ms: &[&Member]| -> Vec<f64> {
                ms.iter()
                    .filter_map(|m| m.statistic(kind.localised()))
                    .collect()
            };
            let (positives, negatives) = (statistic(&of_kind), statistic(&clean));
            let right = |m: &Member| {
                m.verdict.shortcut_suspected
                    && m.verdict.kind
                        == Some(if kind.localised() {
                            ShortcutKind::Localised
                        } else {
                            ShortcutKind::Global
                        })
            };
            let located: Vec<f64> = of_kind
                .iter()
                .filter(|m| m.verdict.shortcut_suspected)
                .filter_map(|m| m.precision)
                .collect();
            rows.push(Row {
                recipe: recipe.name.clone(),
                kind: kind.name().into(),
                models: of_kind.len(),
                flagged: flags(&of_kind, &|m| m.verdict.shortcut_suspected),
                flagged_right_kind: flags(&of_kind, &right),
                inconclusive: flags(&of_kind, &|m| m.verdict.inconclusive),
                auroc: auroc(&positives, &negatives),
                tpr_at_5_fpr: tpr_at_fpr(&positives, &negatives, 0.05),
                precision: (!located.is_empty()).then(|| crate::stats::mean(&located)),
            });
        }
    }
    rows
}

/// The zoo's plot, beside `zoo.md`.
pub const PLOT: &str = "zoo.png";

/// The plot of [`PLOT`]: each member's score over its threshold, one column per recipe (in the
/// order met), coloured by the trigger kind (series 0 clean, then [`KindName::ALL`]'s order),
/// filled when a shortcut was suspected and hollow when not; the line at 1 is the threshold.
pub fn strip(r: &ZooReport) -> Strip {
    let mut columns: Vec<String> = Vec::new();
    for m in &r.members {
        if !columns.contains(&m.recipe) {
            columns.push(m.recipe.clone());
        }
    }
    let series_of = |t: &Option<Trigger>| {
        t.as_ref().map_or(0, |t| {
            1 + KindName::ALL
                .iter()
                .position(|&k| k == t.kind.name())
                .unwrap_or(0)
        })
    };
    let mut series = vec!["clean".to_string()];
    series.extend(KindName::ALL.iter().map(|k| k.name().to_string()));
    Strip {
        title: format!(
            "model zoo, {}: the map's score / threshold (filled: flagged, localised or global)",
            r.data_set
        ),
        y_desc: "score / threshold".into(),
        points: r
            .members
            .iter()
            .map(|m| StripPoint {
                column: columns.iter().position(|c| *c == m.recipe).unwrap_or(0),
                series: series_of(&m.trigger),
                value: m.ratio,
                filled: m.verdict.shortcut_suspected,
            })
            .collect(),
        columns,
        series,
        line_at: 1.0,
    }
}

/// The table as Markdown.
pub fn markdown(r: &ZooReport) -> String {
    let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    let mut md = format!(
        "# Model zoo: {}\n\n{} models. *flagged*: share with a shortcut suspected (for clean models, the false-alarm rate); *right kind*: flagged as localised (patch, line) or global (blend, contrast, tint); AUROC and TPR at 5 % FPR against the same recipe's clean models, of the kind's own statistic (patch, line: the map's score over its threshold; blend, contrast, tint: ρ_half less its threshold); precision: top-K map pixels inside the trigger (K its area), flagged localised triggers.\n\n| recipe | trigger | models | flagged | right kind | inconclusive | AUROC | TPR @ 5 % FPR | precision |\n|---|---|---|---|---|---|---|---|---|\n",
        r.data_set,
        r.members.len()
    );
    for row in &r.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.recipe,
            row.kind,
            row.models,
            cell(row.flagged),
            cell(row.flagged_right_kind),
            cell(row.inconclusive),
            cell(row.auroc),
            cell(row.tpr_at_5_fpr),
            cell(row.precision)
        ));
    }
    md.push_str(&format!(
        "\n![score / threshold per model, by recipe and trigger kind]({PLOT})\n"
    ));
    md.push_str("\n## Members\n\n| model | trigger | train error | test acc. | verdict | score / threshold | ρ_half / threshold | precision |\n|---|---|---|---|---|---|---|---|\n");
    for m in &r.members {
        let trigger = m.trigger.as_ref().map_or("–".to_string(), |t| {
            format!(
                "{:?} on class {} ({:.0} %)",
                t.kind,
                t.class,
                100.0 * t.fraction
            )
        });
        let verdict = m.verdict.label();
        md.push_str(&format!(
            "| {} | {trigger} | {:.3} | {:.3} | {verdict} | {:.1} / {:.1} | {} | {} |\n",
            m.name,
            m.train_error,
            m.test_accuracy,
            m.verdict.score,
            m.verdict.threshold,
            m.consistency
                .map_or("–".to_string(), |[v, t]| format!("{v:.2} / {t:.2}")),
            cell(m.precision)
        ));
    }
    md
}
