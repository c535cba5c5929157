//! Checkpoints kept one back: a new checkpoint first moves the one it replaces to `X.prev`, and
//! resuming falls back to it when the newest does not load.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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

/// A checkpoint that was read, and what the caller should tell the user about it.
#[derive(Debug)]
pub struct Loaded<R> {
    pub value: R,
    /// Set when the newest checkpoint did not load and the previous one was used instead.
    pub warning: Option<String>,
}

/// Loads the newest readable checkpoint: `path`, or, when it is missing or corrupt, the
/// previous one (with a warning saying so). `None` when neither exists.
pub fn load_checkpoint<R>(
    path: &Path,
    load: impl Fn(&Path) -> Result<R>,
) -> Result<Option<Loaded<R>>> {
    let prev = previous_checkpoint(path);
    let newest = match path.exists() {
        true => Some(load(path)),
        false => None,
    };
    let quiet = |value| Loaded {
        value,
        warning: None,
    };
    match newest {
        Some(Ok(r)) => Ok(Some(quiet(r))),
        _ if !prev.exists() => newest.transpose().map(|r| r.map(quiet)),
        Some(Err(e)) => Ok(Some(Loaded {
            value: load(&prev)?,
            warning: Some(format!(
                "{e:#}; resuming from the previous checkpoint {}",
                prev.display()
            )),
        })),
        None => load(&prev).map(|r| Some(quiet(r))),
    }
}

/// Removes a checkpoint and its predecessor once the result they lead to is written.
pub fn remove_checkpoints(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(previous_checkpoint(path));
}
