//! `reveal zoo`: a population of models, clean and with planted shortcuts, trained by several
//! recipes and audited, to measure how often the audit is right.

use std::path::PathBuf;

use anyhow::Result;
use reveal_audit::zoo::{self, Recipe, ZooConfig};
use reveal_audit::AuditBudget;
use reveal_data::{KindName, Task};

use crate::args::SourceArgs;
use crate::progress;

#[derive(clap::Args)]
pub struct ZooArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The task (default: the data set's binary one).
    #[arg(long)]
    pub task: Option<Task>,
    /// Output folder: members/, zoo.json, zoo.md (rerunning resumes; models and reconstructions
    /// already there are reused, verdicts computed again).
    #[arg(long)]
    pub out: PathBuf,
    /// Training recipes: gd, adam, sgd, each optionally -all (a bias in every layer).
    #[arg(long, value_delimiter = ',', default_value = "gd,adam,sgd")]
    pub recipes: Vec<Recipe>,
    /// Trigger kinds: patch, line, blend, contrast, tint (default: all that fit the images;
    /// tint needs colour).
    #[arg(long, value_delimiter = ',')]
    pub triggers: Option<Vec<KindName>>,
    /// Shares of the chosen class's images that carry the trigger.
    #[arg(long, value_delimiter = ',', default_value = "1,0.3")]
    pub fractions: Vec<f64>,
    /// Seeds: one clean model per recipe and seed, one triggered model per recipe, kind,
    /// fraction and seed.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Training images per class.
    #[arg(long, default_value_t = 50)]
    pub per_class: usize,
    /// Hidden widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000")]
    pub hidden: Vec<usize>,
    /// The audit's budget for every member.
    #[arg(long, value_enum, default_value = "quick")]
    pub budget: AuditBudget,
    /// Reconstruction iterations per run (default: the audit's).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Audit the members trained from PyTorch's init without their weights before training
    /// (by default the audit is given them, as an auditor who saved them would give them).
    #[arg(long)]
    pub no_init: bool,
    /// Print zoo.json instead of the table.
    #[arg(long)]
    pub json: bool,
    /// f32, or bf16: f32 with the matrix products' operands rounded to bf16 (steps in about
    /// 0.6× the time, less exact; CPUs with AVX512-BF16), for training and auditing every member.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::args::Precision,
}

pub fn cmd_zoo(args: &ZooArgs) -> Result<()> {
    crate::args::outputs([Some(args.out.join("zoo.json").as_path())])?;
    let source = args.source.source()?;
    let colour = matches!(source, reveal_data::Source::Cifar10);
    let kinds = args.triggers.clone().unwrap_or_else(|| {
        KindName::ALL
            .into_iter()
            .filter(|&k| colour || k != KindName::Tint)
            .collect()
    });
    let cfg = ZooConfig {
        source,
        task: args.task.clone(),
        per_class: args.per_class,
        hidden: args.hidden.clone(),
        recipes: args.recipes.clone(),
        kinds,
        fractions: args.fractions.clone(),
        seeds: args.seeds.clone(),
        test: reveal_data::TestSelection::PerClass(500),
        data_dir: args.source.data_dir(),
        out: args.out.clone(),
        budget: args.budget,
        iters: args.iters,
        from_init: !args.no_init,
    };
    cfg.validate()?;
    let count = cfg.plan().len();
    let bar = progress::bar(count as u64, "models", args.json);
    let member = |i: usize, _: usize, name: &str| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    };
    let tick = |_: reveal_recon::search::Tick| !progress::interrupted();
    let epoch = |_: &reveal_train::TrainState<f32>| progress::control();
    let report = zoo::run(&cfg, &member, &epoch, &tick);
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", zoo::markdown(&report));
        println!("\nzoo: {}", args.out.join("zoo.md").display());
    }
    Ok(())
}
