//! IDX (MNIST) reader, raw and gzip: any bytes give the images or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-idx3-ubyte");
    for magic in [0x801, 0x803] {
        let _ = reveal_data::formats::parse_idx(data, path, magic);
        let _ = reveal_data::formats::parse_idx(gzip(data), path, magic);
    }
});

/// The same bytes read through the gzip decoder, as a `.gz` file would be.
fn gzip(data: &[u8]) -> impl std::io::Read + '_ {
    reveal_data::formats::gz_reader(data)
}
