//! SSIM and NCC: values worked out by hand, properties, and agreement with scikit-image and
//! kornia on fixed image pairs (`tests/fixtures/ssim_reference.json`, made by
//! `tests/fixtures/make_ssim_reference.py`).

use proptest::prelude::*;
use reveal_ssim::{
    correlation_from_distance, gaussian_kernel, ncc_distance, pad_index, ssim_pairs, Padding, Ssim,
};

const C1: f64 = 1e-4; // 0.01²
const C2: f64 = 9e-4; // 0.03²

#[test]
fn kernel_of_the_papers() {
    let k = gaussian_kernel(3, 1.5);
    for (a, b) in k.iter().zip([0.3078, 0.3844, 0.3078]) {
        assert!((a - b).abs() < 5e-5, "{k:?}");
    }
}

/// Two uniform images a and b: every local mean is the value itself and every variance is 0, so
/// SSIM = (2ab + C1)·C2 / ((a² + b² + C1)·C2 + ε). For a = 0.5, b = 0.25:
/// (0.25 + 1e-4)·9e-4 / ((0.3125 + 1e-4)·9e-4 + ε) = 0.2501 / 0.3126 = 0.800063980…
/// (kornia3 adds ε = 1e-12: 2.2509e-4 / (2.8134e-4 + 1e-12) = 0.800063977…).
#[test]
fn uniform_images_by_hand_both_presets() {
    let (a, b) = (vec![0.5f32; 16 * 16], vec![0.25f32; 16 * 16]);
    let want = |eps: f64| (0.2501 * C2) / (0.3126 * C2 + eps);
    let k = Ssim::kornia3().mean(&a, &b, (1, 16, 16));
    let g = Ssim::gauss11().mean(&a, &b, (1, 16, 16));
    assert!((k - want(1e-12)).abs() < 1e-9, "kornia3 {k}");
    assert!((g - want(0.0)).abs() < 1e-9, "gauss11 {g}");
    assert!((want(0.0) - 0.800_063_98).abs() < 1e-8);
}

/// x = [[1, 0], [0, 0]], y = 0, kornia3. Reflect padding on a side of 2 maps −1 → 1 and 2 → 0,
/// so filtering row [1, 0] with [k0, k1, k0] gives [k1, 2k0] and the columns do the same:
/// μx = [[k1², 2k0k1], [2k0k1, 4k0²]]. As x² = x, E[x²] = μx and σx² = μx − μx²; μy = σy = σxy = 0:
/// SSIM = C1·C2 / ((μx² + C1)(σx² + C2) + ε) per pixel.
#[test]
fn reflect_padding_by_hand() {
    let k = gaussian_kernel(3, 1.5);
    let (k0, k1) = (k[0], k[1]);
    let mu = [k1 * k1, 2.0 * k0 * k1, 2.0 * k0 * k1, 4.0 * k0 * k0];
    let want: Vec<f64> = mu
        .iter()
        .map(|&m| C1 * C2 / ((m * m + C1) * (m - m * m + C2) + 1e-12))
        .collect();
    let map = Ssim::kornia3().map(&[1.0, 0.0, 0.0, 0.0], &[0.0; 4], (1, 2, 2));
    for (a, b) in map.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "{map:?} vs {want:?}");
    }
    // Symmetric padding (the edge repeated) sees other neighbours and gives another map.
    let mut sym = Ssim::kornia3();
    sym.padding = Padding::Symmetric;
    let other = sym.map(&[1.0, 0.0, 0.0, 0.0], &[0.0; 4], (1, 2, 2))[0];
    assert!(
        (other - want[0]).abs() > 0.1 * want[0],
        "{other} vs {}",
        want[0]
    );
}

#[test]
fn padding_indices() {
    let r: Vec<usize> = (-3..8).map(|i| pad_index(i, 5, Padding::Reflect)).collect();
    assert_eq!(r, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
    let s: Vec<usize> = (-3..8)
        .map(|i| pad_index(i, 5, Padding::Symmetric))
        .collect();
    assert_eq!(s, [2, 1, 0, 0, 1, 2, 3, 4, 4, 3, 2]);
}

#[test]
fn identical_images() {
    let img: Vec<f32> = (0..3 * 12 * 12)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    let k = Ssim::kornia3().mean(&img, &img, (3, 12, 12));
    assert!((k - 1.0).abs() < 1e-6 && k < 1.0);
    let black = vec![0.0f32; 64];
    assert!((Ssim::kornia3().mean(&black, &black, (1, 8, 8)) - 0.999_988_89).abs() < 1e-8);
    assert!((Ssim::gauss11().mean(&img, &img, (3, 12, 12)) - 1.0).abs() < 1e-12);
}

fn image(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(0.0f32..=1.0, len)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn symmetric_in_its_arguments(a in image(2 * 12 * 12), b in image(2 * 12 * 12)) {
        for s in [Ssim::kornia3(), Ssim::gauss11()] {
            let (ab, ba) = (s.mean(&a, &b, (2, 12, 12)), s.mean(&b, &a, (2, 12, 12)));
            prop_assert!((ab - ba).abs() < 1e-12);
        }
    }

    /// A noisy copy scores between an unrelated image and the original.
    #[test]
    fn noisy_copy_is_in_between(a in image(16 * 16), other in image(16 * 16), noise in image(16 * 16)) {
        let noisy: Vec<f32> = a.iter().zip(&noise).map(|(v, n)| (v + 0.2 * (n - 0.5)).clamp(0.0, 1.0)).collect();
        for s in [Ssim::kornia3(), Ssim::gauss11()] {
            let (same, near, far) = (s.mean(&a, &a, (1, 16, 16)), s.mean(&a, &noisy, (1, 16, 16)), s.mean(&a, &other, (1, 16, 16)));
            prop_assert!(same > near && near > far, "{same} {near} {far}");
        }
    }

    /// NCC is invariant to a positive affine change of each channel.
    #[test]
    fn ncc_invariant_to_affine(a in image(3 * 25), b in image(3 * 25), scale in prop::array::uniform3(0.1f32..3.0), shift in prop::array::uniform3(-1.0f32..1.0)) {
        let changed: Vec<f32> = b.iter().enumerate().map(|(i, v)| scale[i / 25] * v + shift[i / 25]).collect();
        let (d0, d1) = (ncc_distance(&a, &b, 3), ncc_distance(&a, &changed, 3));
        prop_assert!((d0 - d1).abs() < 1e-3 * (1.0 + d0), "{d0} {d1}");
        let rho = correlation_from_distance(ncc_distance(&a, &a, 3), a.len(), 3);
        prop_assert!((rho - 1.0).abs() < 1e-9);
    }
}

#[test]
fn correlation_of_anti_correlated_images_is_minus_one() {
    let a: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let b: Vec<f32> = a.iter().map(|v| -v).collect();
    assert!((correlation_from_distance(ncc_distance(&a, &b, 1), 20, 1) + 1.0).abs() < 1e-9);
}

/// Agreement with scikit-image's `structural_similarity` and kornia's `ssim` on the pairs of the
/// fixture file (values to 1e-4, as the issue asks; in practice ~1e-7).
#[test]
fn agrees_with_scikit_image_and_kornia() {
    let text = include_str!("fixtures/ssim_reference.json");
    let cases: Vec<serde_json_lite::Case> = serde_json_lite::parse(text);
    assert!(!cases.is_empty());
    let mut worst: f64 = 0.0;
    for c in &cases {
        let pairs = [(c.x.as_slice(), c.y.as_slice())];
        for (name, reference) in [("kornia3", c.kornia3), ("gauss11", c.gauss11)] {
            let Some(r) = reference else { continue };
            let ours = ssim_pairs(&Ssim::preset(name).unwrap(), &pairs, c.shape)[0];
            worst = worst.max((ours - r).abs());
            assert!(
                (ours - r).abs() < 1e-4,
                "{} {name}: ours {ours}, reference {r}",
                c.name
            );
        }
    }
    eprintln!("largest difference to the references: {worst:e}");
}

/// A minimal reader for the fixture (keeps this crate free of serde).
mod serde_json_lite {
    pub struct Case {
        pub name: String,
        pub shape: (usize, usize, usize),
        pub x: Vec<f32>,
        pub y: Vec<f32>,
        pub kornia3: Option<f64>,
        pub gauss11: Option<f64>,
    }

    fn field<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
        let start = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = obj[start..].trim_start();
        let end = if rest.starts_with('[') {
            rest.find(']')? + 1
        } else {
            rest.find([',', '}']).unwrap_or(rest.len())
        };
        Some(rest[..end].trim())
    }

    fn numbers(s: &str) -> Vec<f64> {
        s.trim_matches(['[', ']'])
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().parse().unwrap())
            .collect()
    }

    /// Pixels stored as bytes, read as float32 v/255.
    fn bytes(s: &str) -> Vec<f32> {
        numbers(s).into_iter().map(|v| v as f32 / 255.0).collect()
    }

    /// One case per line between the outer brackets.
    pub fn parse(text: &str) -> Vec<Case> {
        text.lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(|l| {
                let sh = numbers(field(l, "shape").unwrap());
                let opt = |k: &str| {
                    field(l, k)
                        .filter(|v| *v != "null")
                        .map(|v| v.parse().unwrap())
                };
                Case {
                    name: field(l, "name").unwrap().trim_matches('"').to_string(),
                    shape: (sh[0] as usize, sh[1] as usize, sh[2] as usize),
                    x: bytes(field(l, "x").unwrap()),
                    y: bytes(field(l, "y").unwrap()),
                    kornia3: opt("kornia3"),
                    gauss11: opt("gauss11"),
                }
            })
            .collect()
    }
}
