//! `reveal audit`: one model, from reveal or from PyTorch.

use std::path::PathBuf;

use anyhow::Result;
use reveal_audit::{audit, AuditBudget, AuditConfig};
use reveal_data::Selection;
use reveal_nn::{Arch, LayerNames};
use reveal_recon::Multipliers;

use crate::args::{parse_arch, DataArgs};
use crate::progress;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The model (safetensors): reveal's, or a PyTorch state_dict of a ReLU MLP or CNN with a
    /// bias in its first layer only or in every layer.
    #[arg(long)]
    pub model: PathBuf,
    /// A CNN's architecture, which a PyTorch state_dict does not hold (strides, paddings,
    /// pooling), e.g. conv:32k3,conv:64k3s2,fc:1000 (reveal's own models carry theirs).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// The model's weights before training (same layer names), when kept, e.g. a state_dict
    /// saved before the first step: the reconstruction then fits the step training took,
    /// θ − θ0, which is what the training points' gradients span. For models trained from
    /// PyTorch's init with SGD this turns noise into training samples.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// The model's layers in order, e.g. fc1,fc2,fc3 or c1,c2,fc1,fc2 (default: reveal's
    /// names, else every NAME.weight in natural order of NAME, convolutions first).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Output folder: results.json, report.html, pictures (rerunning resumes).
    #[arg(long)]
    pub out: PathBuf,
    /// The task: its held-out images are the clean reference. Read from the model's metadata
    /// when it has it; for a model from elsewhere, give the data flags.
    #[command(flatten)]
    pub data: DataArgs,
    /// The model was trained on this selection of the data flags' training split (first, or
    /// random:SEED, with --per-class): S, ρ10 and the recovered count are then computed too.
    #[arg(long)]
    pub train_selection: Option<Selection>,
    /// quick (one run, one null model) or standard (two runs, three null models).
    #[arg(long, value_enum, default_value = "quick")]
    pub budget: AuditBudget,
    /// Candidates per run (default: twice the training set, or 200 when it is unknown).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Iterations per reconstruction run (default: the default plan's 2,500).
    #[arg(long)]
    pub iters: Option<usize>,
    /// The form of the multipliers: margin (one per candidate: the logistic loss, cross-entropy
    /// without weight decay), pairs (one per wrong class: cross-entropy with weight decay) or
    /// signed (the squared loss). Default: what the model's training recipe calls for (reveal's
    /// models), else margin.
    #[arg(long, value_enum)]
    pub multipliers: Option<Multipliers>,
    /// Seed of the reconstruction and of the null models.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print results.json instead of the verdict.
    #[arg(long)]
    pub json: bool,
    /// f32, or bf16: f32 with the matrix products' operands rounded to bf16 (steps in about
    /// 0.6× the time, less exact; CPUs with AVX512-BF16).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::args::Precision,
}

pub fn cmd_audit(args: &AuditArgs) -> Result<()> {
    crate::args::outputs([Some(args.out.join("results.json").as_path())])?;
    let mut spec = args.data.spec()?;
    let train_known = match args.train_selection {
        None => false,
        Some(selection) => {
            spec.selection = selection;
            true
        }
    };
    let cfg = AuditConfig {
        model: args.model.clone(),
        init: args.init.clone(),
        layers: args
            .layers
            .clone()
            .map_or(LayerNames::Auto, LayerNames::Given),
        arch: args.arch.clone(),
        data: Some(spec),
        train_known,
        data_dir: args.data.source.data_dir(),
        out: args.out.clone(),
        budget: args.budget,
        candidates: args.candidates,
        iters: args.iters,
        multipliers: args.multipliers,
        seed: args.seed,
    };
    let bar = progress::bar(cfg.total_iters() as u64, "iterations", args.json);
    let tick = |_: reveal_recon::search::Tick| {
        bar.inc(1);
        !progress::interrupted()
    };
    let report = audit(&cfg, &tick);
    bar.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", report.verdict.text);
    for (name, f) in &report.evidence {
        let z = f.z.map_or(String::new(), |z| format!(", z {z:.1}"));
        let digits = if name == "recovered" { 0 } else { 3 };
        println!(
            "  {name:<14} {:.digits$} (null models {:.digits$}{z})",
            f.value, f.null
        );
    }
    for n in &report.notes {
        println!("  note: {n}");
    }
    println!("report: {}", args.out.join("report.html").display());
    Ok(())
}
