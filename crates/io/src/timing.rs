//! Wall times beside the products, so the products themselves carry no clock readings.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::atomic::write_atomic;

/// Where the wall time of the job that wrote `path` is kept: `X.timing.json` beside
/// `X.safetensors`. Products carry no clock readings, so the same command with the same seed
/// writes byte-identical products; only these side files differ between runs.
pub fn timing_path(path: &Path) -> PathBuf {
    path.with_extension("timing.json")
}

/// Writes the wall time of the job that wrote `path` (see [`timing_path`]).
pub fn write_timing(path: &Path, seconds: f64) -> Result<()> {
    let text = format!("{{\"wall_seconds\": {seconds:.3}}}\n");
    write_atomic(&timing_path(path), text.as_bytes())
}

/// The wall time recorded beside `path`, NaN when there is none.
pub fn read_timing(path: &Path) -> f64 {
    fs::read_to_string(timing_path(path))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["wall_seconds"].as_f64())
        .unwrap_or(f64::NAN)
}
