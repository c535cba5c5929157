//! Training checkpoints (a model file with the schedule's state in its metadata).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.ckpt.safetensors");
    let _ = reveal_train::job::parse_checkpoint::<f32>(data, path);
});
