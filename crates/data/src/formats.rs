//! Readers for the original file formats: MNIST IDX (raw or gzip), CIFAR-10 binary batches, and
//! folders of PNG/JPEG images. Every size is checked against the file before anything is
//! allocated from it, and every error names the file and what is wrong.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;

use crate::images::Images;

/// The ten MNIST classes.
pub fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// The ten CIFAR-10 classes in label order (used when `batches.meta.txt` is absent).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Opens a file, decompressing on the fly when its name ends in `.gz`.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let r = BufReader::new(f);
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(gz_reader(r))
    } else {
        Box::new(r)
    })
}

/// A reader that decompresses gzip on the fly.
pub fn gz_reader<R: Read>(r: R) -> impl Read {
    GzDecoder::new(r)
}

/// Reads exactly `want` bytes; more or fewer is an error naming the file.
fn read_exact_len(mut r: impl Read, path: &Path, want: usize, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    // The Vec grows with what the file really holds, never to a size taken from its header.
    r.by_ref()
        .take(want as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| anyhow!("{}: read error ({e})", path.display()))?;
    match buf.len().cmp(&want) {
        std::cmp::Ordering::Less => bail!(
            "{}: truncated: the header promises {what} ({want} bytes) but the file holds {}",
            path.display(),
            buf.len()
        ),
        std::cmp::Ordering::Greater => bail!(
            "{}: more data than the header's {what} ({want} bytes)",
            path.display()
        ),
        std::cmp::Ordering::Equal => Ok(buf),
    }
}

/// Largest IDX payload accepted (the MNIST training images are 47 MB).
const MAX_IDX_BYTES: usize = 1 << 32;

/// Reads an IDX file of unsigned bytes: returns its dimensions and payload.
/// `magic` is the expected magic number (0x801 for labels, 0x803 for images).
pub fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    parse_idx(open_maybe_gz(path)?, path, magic)
}

/// Parses an IDX stream (`path` only names it in errors).
pub fn parse_idx(mut r: impl Read, path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .map_err(|_| anyhow!("{}: too short for an IDX header", path.display()))?;
    let found = u32::from_be_bytes(head);
    if found != magic {
        bail!(
            "{}: wrong magic number 0x{found:08x}, expected 0x{magic:08x}",
            path.display()
        );
    }
    let ndim = head[3] as usize;
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)
            .map_err(|_| anyhow!("{}: truncated IDX header", path.display()))?;
        dims.push(u32::from_be_bytes(b) as usize);
    }
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&t| t <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            anyhow!(
                "{}: header dimensions {dims:?} are implausibly large",
                path.display()
            )
        })?;
    let body = read_exact_len(r, path, total, &format!("dimensions {dims:?}"))?;
    Ok((dims, body))
}

/// Finds `name` or `name.gz` in `dir`.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{}: no {name} or {name}.gz here", dir.display())
}

/// Loads an MNIST split (`train` or `t10k`) from a folder holding the four IDX files.
pub fn load_mnist(dir: &Path, split: &str) -> Result<Images> {
    let images_path = find_file(dir, &format!("{split}-images-idx3-ubyte"))?;
    let labels_path = find_file(dir, &format!("{split}-labels-idx1-ubyte"))?;
    let (dims, pixels) = read_idx(&images_path, 0x803)?;
    let [n, h, w] = dims[..] else {
        bail!(
            "{}: images must have 3 dimensions, found {dims:?}",
            images_path.display()
        );
    };
    let (ldims, labels) = read_idx(&labels_path, 0x801)?;
    if ldims != [n] {
        bail!(
            "{}: {ldims:?} labels for {n} images in {}",
            labels_path.display(),
            images_path.display()
        );
    }
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        bail!(
            "{}: label {} at index {i} is not a digit",
            labels_path.display(),
            labels[i]
        );
    }
    Ok(Images {
        shape: (1, h, w),
        pixels,
        labels,
        class_names: digit_names(),
    })
}

/// Bytes of one CIFAR-10 record: a label, then 1024 R, 1024 G and 1024 B bytes.
pub const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// Loads CIFAR-10 binary batch files, concatenated in the given order.
pub fn load_cifar(files: &[PathBuf], class_names: Vec<String>) -> Result<Images> {
    let mut out = Images {
        shape: (3, 32, 32),
        pixels: Vec::new(),
        labels: Vec::new(),
        class_names,
    };
    for path in files {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        parse_cifar_batch(&bytes, path, &mut out)?;
    }
    Ok(out)
}

/// Appends the records of one CIFAR-10 batch (its bytes; `path` names it in errors) to `out`.
pub fn parse_cifar_batch(bytes: &[u8], path: &Path, out: &mut Images) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR_RECORD) {
        bail!(
            "{}: size {} is not a whole number of {CIFAR_RECORD}-byte records",
            path.display(),
            bytes.len()
        );
    }
    for (i, rec) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
        if rec[0] as usize >= out.class_names.len() {
            bail!(
                "{}: record {i} has label {}, not a class",
                path.display(),
                rec[0]
            );
        }
        out.labels.push(rec[0]);
        out.pixels.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Class names from `batches.meta.txt` (one per line, blank lines ignored), or the defaults.
pub fn cifar_class_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("batches.meta.txt");
    if !path.exists() {
        return Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != 10 {
        bail!(
            "{}: expected 10 class names, found {}",
            path.display(),
            names.len()
        );
    }
    Ok(names)
}

/// Largest image side accepted: a header may not make us allocate more than this allows.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// Reads and decodes an image file (PNG or JPEG).
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode_image(&bytes, path)
}

/// Decodes a PNG or JPEG from its bytes (`path` names it in errors), refusing images larger
/// than [`MAX_IMAGE_SIDE`] on a side before any pixel buffer is allocated.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<image::DynamicImage> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| anyhow!("{}: cannot read ({e})", path.display()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(3 * (MAX_IMAGE_SIDE as u64).pow(2));
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| anyhow!("{}: cannot decode ({e})", path.display()))
}

/// An image's bytes in C×H×W order: three planes R, G, B when `colour`, else one grey plane.
pub fn to_chw(img: &image::DynamicImage, colour: bool) -> Vec<u8> {
    if colour {
        let rgb = img.to_rgb8();
        (0..3)
            .flat_map(|ch| rgb.pixels().map(move |p| p[ch]).collect::<Vec<_>>())
            .collect()
    } else {
        img.to_luma8().pixels().map(|p| p[0]).collect()
    }
}

/// Loads `root/<class>/*.png|jpg|jpeg`. Classes are the sub-folders in name order, images in
/// file-name order. With `size = Some((h, w))` every image is resized to it; otherwise all must
/// share the first image's size. Grey images give 1 channel; any colour image makes all RGB.
pub fn load_folder(root: &Path, size: Option<(usize, usize)>) -> Result<Images> {
    let sorted_entries = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if class_dirs.len() < 2 {
        bail!(
            "{}: need at least two class folders, found {}",
            root.display(),
            class_dirs.len()
        );
    }
    let mut decoded = Vec::new();
    for (c, dir) in class_dirs.iter().enumerate() {
        for path in sorted_entries(dir)? {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
                continue;
            }
            let img = open_image(&path)?;
            decoded.push((c as u8, path, img));
        }
    }
    if decoded.is_empty() {
        bail!(
            "{}: no .png or .jpg images in the class folders",
            root.display()
        );
    }
    let colour = decoded.iter().any(|(_, _, img)| img.color().has_color());
    let channels = if colour { 3 } else { 1 };
    let (h, w) = size.unwrap_or((
        decoded[0].2.height() as usize,
        decoded[0].2.width() as usize,
    ));
    let mut out = Images {
        shape: (channels, h, w),
        pixels: Vec::with_capacity(decoded.len() * channels * h * w),
        labels: Vec::with_capacity(decoded.len()),
        class_names: class_dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
    };
    for (c, path, img) in decoded {
        let img = if (img.height() as usize, img.width() as usize) == (h, w) {
            img
        } else if size.is_some() {
            img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
        } else {
            bail!(
                "{}: size {}×{} differs from the first image's {h}×{w} (pass a size to resize)",
                path.display(),
                img.height(),
                img.width()
            );
        };
        out.pixels.extend(to_chw(&img, colour));
        out.labels.push(c);
    }
    Ok(out)
}
