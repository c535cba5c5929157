//! JSONL logs (one record per line) cut back to a checkpoint on resume.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, Result};

use crate::atomic::write_atomic;

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
