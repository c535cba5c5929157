//! Corrupt files give one-line errors naming the file, never a panic.

use std::io::Write;

use reveal_data::formats::{load_cifar, load_folder, read_idx, CIFAR_RECORD};

fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_round_trip_raw_and_gz() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..2 * 3 * 4).map(|v| v as u8).collect();
    let file = idx(0x803, &[2, 3, 4], &body);
    for p in [
        write(&dir, "a-idx3-ubyte", &file),
        write(&dir, "a-idx3-ubyte.gz", &gz(&file)),
    ] {
        let (dims, data) = read_idx(&p, 0x803).unwrap();
        assert_eq!((dims, data), (vec![2, 3, 4], body.clone()));
    }
}

#[test]
fn idx_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong-magic",
            idx(0x801, &[2, 2, 2], &[0; 8]),
            "wrong magic number",
        ),
        ("truncated", idx(0x803, &[2, 2, 2], &[0; 5]), "truncated"),
        (
            "claims-too-much",
            idx(0x803, &[60000, 28, 28], &[0; 100]),
            "truncated",
        ),
        ("trailing", idx(0x803, &[1, 2, 2], &[0; 9]), "more data"),
        (
            "huge",
            idx(0x803, &[u32::MAX, u32::MAX, u32::MAX], &[]),
            "implausibly large",
        ),
        ("short-header", vec![0, 0, 8], "too short"),
        ("cut-dims", vec![0, 0, 8, 3, 0, 0], "truncated IDX header"),
    ];
    for (name, bytes, want) in cases {
        for (p, label) in [
            (write(&dir, name, &bytes), "raw"),
            (write(&dir, &format!("{name}.gz"), &gz(&bytes)), "gz"),
        ] {
            let e = read_idx(&p, 0x803).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(name), "{label} {name}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
    let garbage = write(&dir, "garbage.gz", b"this is not gzip at all");
    assert!(read_idx(&garbage, 0x803)
        .unwrap_err()
        .to_string()
        .contains("garbage.gz"));
}

#[test]
fn cifar_errors() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let short = write(&dir, "short.bin", &vec![0u8; CIFAR_RECORD + 7]);
    let e = load_cifar(&[short], names.clone()).unwrap_err().to_string();
    assert!(e.contains("short.bin") && e.contains("3073"), "{e}");
    let mut bad = vec![0u8; 2 * CIFAR_RECORD];
    bad[CIFAR_RECORD] = 12;
    let p = write(&dir, "label.bin", &bad);
    let e = load_cifar(&[p], names.clone()).unwrap_err().to_string();
    assert!(e.contains("record 1") && e.contains("label 12"), "{e}");
    let empty = write(&dir, "empty.bin", &[]);
    assert!(load_cifar(&[empty], names.clone()).is_err());
    let missing = dir.path().join("missing.bin");
    assert!(load_cifar(&[missing], names)
        .unwrap_err()
        .to_string()
        .contains("missing.bin"));
}

#[test]
fn folder_loads_classes_in_order_and_rejects_mixed_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for (class, n) in [("cats", 2), ("dogs", 3)] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        for i in 0..n {
            let img = image::GrayImage::from_fn(6, 5, |x, y| image::Luma([(x * 10 + y + i) as u8]));
            img.save(dir.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let imgs = load_folder(dir.path(), None).unwrap();
    assert_eq!(imgs.shape, (1, 5, 6));
    assert_eq!(imgs.labels, [0, 0, 1, 1, 1]);
    assert_eq!(imgs.class_names, ["cats", "dogs"]);
    assert_eq!(imgs.image(0)[..3], [0, 10, 20]);
    let resized = load_folder(dir.path(), Some((4, 4))).unwrap();
    assert_eq!(resized.shape, (1, 4, 4));

    image::GrayImage::new(7, 7)
        .save(dir.path().join("dogs/odd.png"))
        .unwrap();
    let e = load_folder(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("odd.png") && e.contains("differs"), "{e}");
    std::fs::write(dir.path().join("dogs/broken.png"), b"not a png").unwrap();
    let e = load_folder(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");
}
