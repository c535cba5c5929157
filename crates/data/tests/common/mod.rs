//! Finding the real data sets for tests.

use std::path::PathBuf;

/// `$REVEAL_DATA`, else `../shared/data` beside the checkout. `None` (skip) when neither
/// exists, except under CI, where missing data fails the test.
pub fn data_root() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("REVEAL_DATA").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("mnist").is_dir());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the real data is missing: set REVEAL_DATA"
        );
        eprintln!("skipping: no real data (set REVEAL_DATA)");
    }
    found
}
