//! Candidate files and reconstruction checkpoints.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.safetensors");
    if let Ok(f) = reveal_recon::files::parse_candidates::<f32>(data, path) {
        let _ = f.into_state();
    }
    let _ = reveal_recon::files::parse_run_checkpoint::<f64>(data, path);
});
