//! PNG/JPEG decoding with the size limits of the folder reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = reveal_data::formats::decode_image(data, std::path::Path::new("fuzz.png")) {
        let _ = reveal_data::formats::to_chw(&img, img.color().has_color());
    }
});
