//! CIFAR-10 binary batch reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reveal_data::formats::{parse_cifar_batch, CIFAR10_CLASSES};
use reveal_data::images::Images;

fuzz_target!(|data: &[u8]| {
    let mut out = Images {
        shape: (3, 32, 32),
        pixels: Vec::new(),
        labels: Vec::new(),
        class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let _ = parse_cifar_batch(data, std::path::Path::new("fuzz.bin"), &mut out);
});
