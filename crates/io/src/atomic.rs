//! Writes that a reader, a Ctrl-C or a crash never sees half done, and reads that name the file.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// folder, so a reader (or a Ctrl-C, or a crash) never sees half a file.
///
/// An existing `path` that is not a regular file (a device such as `/dev/full`, a FIFO, a
/// folder, `/dev/stdout`) is refused: the rename would replace it with a regular file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_replaceable(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the folder is synced.
        fs::File::open(dir).and_then(|d| d.sync_all()).or(Ok(()))
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow!("{}: cannot write: {e}", path.display())
    })
}

/// Fails when `path` exists and is not a regular file (a symbolic link counts by its target).
pub fn check_replaceable(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => bail!(
            "{}: exists and is not a regular file (a device, FIFO or folder); refusing to replace it, choose another output path",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Reads a whole file, with the path in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}
