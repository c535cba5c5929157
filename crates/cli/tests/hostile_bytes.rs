//! Every reader fed random and mutated bytes: no panic, a one-line error naming the file, and no
//! single allocation larger than the input justifies. (The same readers have cargo-fuzz targets
//! in `fuzz/`; this is the bounded version that runs with the normal suite.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use reveal_data::formats::{
    decode_image, parse_cifar_batch, parse_idx, CIFAR10_CLASSES, CIFAR_RECORD,
};
use reveal_data::images::Images;
use reveal_io::kept_log;
use reveal_nn::files::{parse_model, save_model};
use reveal_nn::Mlp;
use reveal_recon::files::{parse_candidates, parse_run_checkpoint, save_candidates};
use reveal_recon::optim::{RunConfig, RunState};
use reveal_recon::PRESETS;

/// Records the largest single allocation of the current thread (tests run on several threads).
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on unchanged to the system allocator, which upholds
// GlobalAlloc's contract; the bookkeeping beside it allocates nothing.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        // SAFETY: as for dealloc, with a new size the caller vouches for.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// A reader under test: its name (also the file name its errors must carry), a valid file to
/// mutate, the parse, and the largest allocation allowed for an input of `len` bytes.
struct Reader {
    name: &'static str,
    valid: Vec<u8>,
    parse: fn(&[u8], &Path) -> Result<(), String>,
    max_alloc: fn(usize) -> usize,
}

fn err<T>(r: anyhow::Result<T>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| format!("{e:#}"))
}

/// Linear in the input: a reader may convert f32 to f64 and keep a copy.
fn linear(len: usize) -> usize {
    16 * len + (1 << 16)
}

fn idx_file() -> Vec<u8> {
    let mut v = 0x803u32.to_be_bytes().to_vec();
    for d in [2u32, 3, 4] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend((0..24).map(|i| i as u8));
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn png_file() -> Vec<u8> {
    let img = image::RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Writes with a library writer into a temporary folder and returns the bytes.
fn written(write: impl FnOnce(&Path)) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.safetensors");
    write(&p);
    std::fs::read(p).unwrap()
}

fn readers() -> Vec<Reader> {
    let mlp = Mlp::<f32>::init(6, &[4, 3], 1);
    let mut meta = BTreeMap::new();
    meta.insert(
        "train.state".to_string(),
        r#"{"epoch":3,"rejected":0,"c":0.05,"seed":1,"elapsed":0.5}"#.to_string(),
    );
    let model = written(|p| save_model(p, &mlp, None, &meta).unwrap());
    let cfg = RunConfig::new(PRESETS[0].1, 4, 10, 3);
    let mut state = RunState::<f32>::init(6, &cfg);
    state.iter = 2;
    meta.insert("elapsed".into(), "1.5".into());
    let checkpoint = written(|p| save_candidates(p, &state, true, &meta).unwrap());
    let mut cifar = vec![3u8; 2 * CIFAR_RECORD];
    cifar[CIFAR_RECORD] = 9;
    vec![
        Reader {
            name: "t-idx3-ubyte",
            valid: idx_file(),
            parse: |b, p| err(parse_idx(b, p, 0x803)),
            max_alloc: linear,
        },
        Reader {
            name: "t-idx3-ubyte.gz",
            valid: gzip(&idx_file()),
            parse: |b, p| err(parse_idx(reveal_data::formats::gz_reader(b), p, 0x803)),
            // gzip may expand by up to ~1000×; the header bounds the payload read.
            max_alloc: |len| 1032 * len + (1 << 16),
        },
        Reader {
            name: "data_batch_1.bin",
            valid: cifar,
            parse: |b, p| {
                let mut out = Images {
                    shape: (3, 32, 32),
                    pixels: Vec::new(),
                    labels: Vec::new(),
                    class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
                };
                err(parse_cifar_batch(b, p, &mut out))
            },
            max_alloc: linear,
        },
        Reader {
            name: "image.png",
            valid: png_file(),
            parse: |b, p| err(decode_image(b, p)),
            // The decoder's limit: 8192 × 8192 × 3 bytes, whatever the header says.
            max_alloc: |_| 3 << 26,
        },
        Reader {
            name: "model.safetensors",
            valid: model.clone(),
            parse: |b, p| err(parse_model::<f64>(b, p)),
            max_alloc: linear,
        },
        Reader {
            name: "model.ckpt.safetensors",
            valid: model,
            parse: |b, p| err(reveal_train::job::parse_checkpoint::<f32>(b, p)),
            max_alloc: linear,
        },
        Reader {
            name: "candidates.safetensors",
            valid: checkpoint.clone(),
            parse: |b, p| err(parse_candidates::<f32>(b, p).map(|f| f.into_state())),
            max_alloc: linear,
        },
        Reader {
            name: "run-0.ckpt.safetensors",
            valid: checkpoint,
            parse: |b, p| err(parse_run_checkpoint::<f64>(b, p)),
            max_alloc: linear,
        },
        Reader {
            name: "run-0.jsonl",
            valid: b"{\"iter\":1,\"loss\":2.5}\n{\"iter\":100,\"loss\":1.5}\n".to_vec(),
            parse: |b, p| err(kept_log(b, p, "iter", 50)),
            max_alloc: linear,
        },
    ]
}

/// One change to a file: flip a bit, overwrite a byte, write a big or extreme number, cut, insert.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Number(usize, u64),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Mutation::Set(p, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just(u64::MAX),
                Just(u32::MAX as u64),
                Just(1 << 40),
                Just(0),
                any::<u64>()
            ]
        )
            .prop_map(|(p, v)| Mutation::Number(p, v)),
        any::<usize>().prop_map(Mutation::Cut),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, changes: &[Mutation]) -> Vec<u8> {
    for m in changes {
        let at = |p: usize| p % (bytes.len() + 1);
        match m {
            Mutation::Flip(p, b) if !bytes.is_empty() => {
                let i = p % bytes.len();
                bytes[i] ^= 1 << b;
            }
            Mutation::Set(p, v) if !bytes.is_empty() => {
                let i = p % bytes.len();
                bytes[i] = *v;
            }
            Mutation::Number(p, v) => {
                let i = at(*p);
                let end = (i + 8).min(bytes.len());
                bytes[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
            }
            Mutation::Cut(p) => bytes.truncate(at(*p)),
            Mutation::Insert(p, b) => {
                let i = at(*p);
                bytes.splice(i..i, b.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

/// Feeds `bytes` to every reader; checks the error and the largest allocation.
fn check_all(bytes_for: impl Fn(&Reader) -> Vec<u8>) -> Result<(), TestCaseError> {
    for r in readers() {
        let bytes = bytes_for(&r);
        let path = Path::new("/some/folder").join(r.name);
        LARGEST.with(|l| l.set(0));
        let result = (r.parse)(&bytes, &path);
        let largest = LARGEST.with(|l| l.get());
        if let Err(e) = result {
            prop_assert!(
                e.contains(r.name) && !e.contains('\n'),
                "{}: the error must be one line naming the file: {e}",
                r.name
            );
        }
        prop_assert!(
            largest <= (r.max_alloc)(bytes.len()),
            "{}: allocated {largest} bytes for a {}-byte input",
            r.name,
            bytes.len()
        );
    }
    Ok(())
}

#[test]
fn valid_files_parse() {
    for r in readers() {
        let path = Path::new("/some/folder").join(r.name);
        (r.parse)(&r.valid, &path).unwrap_or_else(|e| panic!("{}: {e}", r.name));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_give_clean_errors(changes in proptest::collection::vec(mutation(), 1..6)) {
        check_all(|r| mutate(r.valid.clone(), &changes))?;
    }

    #[test]
    fn random_bytes_give_clean_errors(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_all(|_| bytes.clone())?;
    }
}
