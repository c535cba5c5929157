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
        skipped();
    }
    found
}

/// Says on the terminal that the current test is skipped, with a running count. Written to the
/// process's stderr directly: the test harness captures `eprintln!` of passing tests, and a
/// skip must not pass silently.
fn skipped() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let k = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {name}: no real data (set REVEAL_DATA to the folder holding mnist/ and cifar10/); {k} skipped in this test binary so far"
    );
}
