//! Model files (safetensors with PyTorch names), in both precisions.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.safetensors");
    let _ = reveal_nn::files::parse_model::<f32>(data, path);
    let _ = reveal_nn::files::parse_model::<f64>(data, path);
});
