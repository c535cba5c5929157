//! Past one machine: `--shard I/N` runs part of a search or an experiment, and `reveal pool`
//! merges the shards. Each shard records its command line (without `--shard`) beside its
//! results; `pool` checks that all N shards ran the same command, then runs that command once
//! more without `--shard`, which finds every piece of work done and only pools and reports. So
//! the pooled output is, byte for byte, what one unsharded run writes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use reveal_io::write_atomic;
use reveal_recon::plan::Shard;
use reveal_recon::search::runs_dir;

/// The record of shard `shard` in `dir`.
fn record_path(dir: &Path, shard: Shard) -> PathBuf {
    dir.join(format!("shard-{}-of-{}.json", shard.index + 1, shard.count))
}

/// The process's command line without `--shard I/N`.
fn command_without_shard() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--shard" => {
                args.next();
            }
            _ if a.starts_with("--shard=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// Before the work of a sharded or pooled command, with `dir` the search's runs folder or the
/// experiment folder: under `reveal pool` every piece must be done already (`missing` names those
/// that are not); a shard writes its record into `dir`.
pub fn begin(
    dir: &Path,
    shard: Option<Shard>,
    pool: bool,
    missing: impl FnOnce() -> Vec<String>,
) -> Result<()> {
    if pool {
        let missing = missing();
        if !missing.is_empty() {
            bail!(
                "{}: {} not done yet; wait for their shards",
                dir.display(),
                missing.join(", ")
            );
        }
    }
    if let Some(shard) = shard {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let text =
            serde_json::json!({ "shard": shard.to_string(), "command": command_without_shard() });
        write_atomic(&record_path(dir, shard), format!("{text:#}\n").as_bytes())?;
    }
    Ok(())
}

/// The command all shards recorded in `dir`, after checking there is one record per shard and
/// that they agree.
fn recorded_command(dir: &Path) -> Result<Vec<String>> {
    let mut records = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("shard-") && name.ends_with(".json") {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("{}: not a shard record ({e})", p.display()))?;
            let shard: Shard = v["shard"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("{}: no shard I/N in the record", p.display()))?;
            let command: Vec<String> = serde_json::from_value(v["command"].clone())
                .map_err(|_| anyhow!("{}: no command in the record", p.display()))?;
            records.push((shard, command, p));
        }
    }
    let Some((first, command, path)) = records.first().cloned() else {
        bail!(
            "{}: no shard records (shard-I-of-N.json) here",
            dir.display()
        );
    };
    for (s, c, p) in &records {
        if s.count != first.count {
            bail!(
                "{}: shard {s}, but {} is of {first}",
                p.display(),
                path.display()
            );
        }
        if *c != command {
            bail!(
                "{} and {}: the shards ran different commands",
                p.display(),
                path.display()
            );
        }
    }
    let missing: Vec<String> = (0..first.count)
        .map(|index| Shard {
            index,
            count: first.count,
        })
        .filter(|s| !record_path(dir, *s).exists())
        .map(|s| s.to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: shards {} have not run",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(command)
}

/// The command the shards of `out` ran, from their records in `OUT.runs/` (a search) or `OUT/`
/// (an experiment).
pub fn pooled_command(out: &Path) -> Result<Vec<String>> {
    let runs = runs_dir(out);
    let has_records = |d: &Path| {
        std::fs::read_dir(d).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("shard-")))
        })
    };
    if has_records(&runs) {
        recorded_command(&runs)
    } else if has_records(out) {
        recorded_command(out)
    } else {
        bail!(
            "{}: no shard records in {} or {} (run the shards with --shard I/N first)",
            out.display(),
            runs.display(),
            out.display()
        )
    }
}
