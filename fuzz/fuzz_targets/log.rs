//! JSONL logs as read back on resume.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.jsonl");
    for upto in [0, 7, usize::MAX] {
        let _ = reveal_io::kept_log(data, path, "iter", upto);
    }
});
