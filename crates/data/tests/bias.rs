//! The planted biases: the square is where it should be with its class's value, nothing else
//! changes, contrast follows the formula.

use ndarray::Array2;
use proptest::prelude::*;
use reveal_data::bias::{adjust_contrast, apply, trigger_positions, Bias};

/// n images of shape (c, s, s) with values in [0, 1], and alternating classes.
fn images() -> impl Strategy<Value = (Array2<f32>, Vec<u8>, (usize, usize, usize))> {
    (1usize..=3, 14usize..=20, 2usize..=8).prop_flat_map(|(c, s, n)| {
        let c = if c == 2 { 3 } else { c };
        let d = c * s * s;
        prop::collection::vec(0.0f32..=1.0, n * d).prop_map(move |v| {
            let classes = (0..n).map(|i| (i % 2) as u8).collect();
            (
                Array2::from_shape_vec((n, d), v).unwrap(),
                classes,
                (c, s, s),
            )
        })
    })
}

/// Top-left of the square image i gets (i counts within its class), per the spec.
fn square_of(bias: Bias, triggers: &reveal_data::Triggers, class: u8, i: usize) -> usize {
    let pos = if class == 0 {
        &triggers.class0
    } else {
        &triggers.class1
    };
    match bias {
        Bias::Corner => 0,
        _ => pos[i % pos.len()],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn squares_are_placed_and_nothing_else_changes((orig, classes, shape) in images(), seed in any::<u64>()) {
        for bias in [Bias::Corner, Bias::Diag3, Bias::Diag5] {
            let mut px = orig.clone();
            let t = apply(bias, &mut px, &classes, 2, shape, seed).unwrap();
            let (c, h, w) = shape;
            if bias != Bias::Corner {
                let k = if bias == Bias::Diag3 { 3 } else { 5 };
                let mut all: Vec<usize> = t.class0.iter().chain(&t.class1).copied().collect();
                prop_assert_eq!(all.len(), 2 * k);
                all.sort();
                all.dedup();
                prop_assert_eq!(all.len(), 2 * k, "positions repeat across classes");
                prop_assert!(all.iter().all(|&p| (1..=h - 4).contains(&p)));
            }
            let mut seen = [0usize; 2];
            for (n, &cls) in classes.iter().enumerate() {
                let p = square_of(bias, &t, cls, seen[cls as usize]);
                seen[cls as usize] += 1;
                for ch in 0..c {
                    for r in 0..h {
                        for col in 0..w {
                            let k = ch * h * w + r * w + col;
                            let inside = (p..p + 3).contains(&r) && (p..p + 3).contains(&col);
                            let want = if inside { cls as f32 } else { orig[[n, k]] };
                            prop_assert_eq!(px[[n, k]], want);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn contrast_follows_the_formula((orig, classes, shape) in images()) {
        let mut px = orig.clone();
        apply(Bias::Contrast, &mut px, &classes, 2, shape, 0).unwrap();
        let (c, h, w) = shape;
        let plane = h * w;
        for (n, &cls) in classes.iter().enumerate() {
            let img = orig.row(n);
            let gray_mean: f32 = if c == 3 {
                (0..plane).map(|i| 0.299 * img[i] + 0.587 * img[plane + i] + 0.114 * img[2 * plane + i]).sum::<f32>() / plane as f32
            } else {
                img.sum() / plane as f32
            };
            let f = if cls == 0 { 0.5 } else { 2.0 };
            for k in 0..img.len() {
                let want = (f * img[k] + (1.0 - f) * gray_mean).clamp(0.0, 1.0);
                prop_assert!((px[[n, k]] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn positions_depend_only_on_the_seed(seed in any::<u64>()) {
        let a = trigger_positions(Bias::Diag5, (1, 28, 28), seed).unwrap();
        let b = trigger_positions(Bias::Diag5, (1, 28, 28), seed).unwrap();
        prop_assert_eq!(a, b);
    }
}

#[test]
fn none_changes_nothing_and_contrast_of_grey_uses_its_mean() {
    let orig = Array2::from_shape_fn((2, 16 * 16), |(i, k)| ((i * 7 + k) % 11) as f32 / 10.0);
    let mut px = orig.clone();
    apply(Bias::None, &mut px, &[0, 1], 2, (1, 16, 16), 3).unwrap();
    assert_eq!(px, orig);
    let mut one = ndarray::arr1(&[0.0f32, 1.0, 0.5, 0.5]);
    adjust_contrast(one.view_mut(), (1, 2, 2), 2.0);
    assert_eq!(one.to_vec(), [0.0, 1.0, 0.5, 0.5]);
}

#[test]
fn a_bias_that_does_not_fit_is_refused() {
    let e = trigger_positions(Bias::Diag5, (1, 12, 12), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("diag5") && e.contains("12×12"), "{e}");
    assert!(trigger_positions(Bias::Corner, (3, 2, 2), 0).is_err());
}

/// With C classes the corner square of class c is the grey c/(C−1) (0 and 1 in a binary task);
/// the other biases are refused for more than two classes.
#[test]
fn corner_gives_each_of_c_classes_its_own_grey() {
    let shape = (1, 8, 8);
    let mut px = Array2::from_elem((5, 64), 0.3f32);
    apply(Bias::Corner, &mut px, &[0, 1, 2, 3, 4], 5, shape, 0).unwrap();
    for (c, img) in px.rows().into_iter().enumerate() {
        assert_eq!(img[0], c as f32 / 4.0);
        assert_eq!(img[2 * 8 + 2], c as f32 / 4.0, "inside the 3×3 square");
        assert_eq!(img[3 * 8 + 3], 0.3, "outside it");
    }
    let e = apply(Bias::Diag3, &mut px, &[0, 1, 2, 3, 4], 5, shape, 0).unwrap_err();
    assert!(e.to_string().contains("binary"), "{e}");
}
