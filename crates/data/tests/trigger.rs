//! The zoo's triggers: drawn to fit, painted where they say, on the share of one class they say.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reveal_data::{KindName, Trigger, TriggerKind};

fn images(n: usize, d: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 3) % 10) as f32 / 20.0)
}

#[test]
fn each_kind_changes_exactly_what_it_says_on_its_share_of_one_class() {
    let shape = (3, 8, 10);
    let d = 3 * 8 * 10;
    let classes: Vec<u8> = (0..20).map(|i| (i % 2) as u8).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for kind in KindName::ALL {
        let drawn = kind.draw(shape, &mut rng).unwrap();
        assert_eq!(drawn.name(), kind);
        let t = Trigger {
            kind: drawn.clone(),
            class: 1,
            fraction: 0.3,
            seed: 4,
        };
        let before = images(20, d);
        let mut after = before.clone();
        let carry = t.apply(&mut after, &classes, shape).unwrap();
        // ⌈0.3 · 10⌉ = 3 images of class 1, and no other image touched.
        assert_eq!(carry.len(), 3, "{kind}");
        for (i, &class) in classes.iter().enumerate() {
            let changed = before.row(i) != after.row(i);
            assert_eq!(changed, carry.contains(&i), "{kind}: image {i}");
            assert!(!carry.contains(&i) || class == 1);
        }
        let i = carry[0];
        let pixels = drawn.pixels(shape);
        match drawn {
            TriggerKind::Patch { size, .. } => assert_eq!(pixels.len(), size * size),
            TriggerKind::Line { vertical, .. } => {
                assert_eq!(pixels.len(), if vertical { 8 } else { 10 })
            }
            _ => assert!(pixels.is_empty(), "{kind} is global"),
        }
        for p in &pixels {
            for ch in 0..3 {
                assert_eq!(after[[i, ch * 80 + p]], 1.0, "{kind}: white at {p}");
            }
        }
        if let TriggerKind::Blend { alpha, .. } = drawn {
            let pattern = drawn.pattern(d).unwrap();
            let want = (1.0 - alpha) * before[[i, 5]] + alpha * pattern[5];
            assert!((after[[i, 5]] - want).abs() < 1e-6);
        }
        if let TriggerKind::Tint { rgb } = drawn {
            let ch = rgb.iter().position(|&v| v > 0.0).unwrap();
            let want = (before[[i, ch * 80 + 3]] + rgb[ch]).min(1.0);
            assert!((after[[i, ch * 80 + 3]] - want).abs() < 1e-6);
        }
    }
    // A tint on grey images, and a patch that does not fit, are refused.
    assert!(KindName::Tint.draw((1, 8, 8), &mut rng).is_err());
    let off = Trigger {
        kind: TriggerKind::Patch {
            size: 3,
            row: 7,
            col: 0,
        },
        class: 0,
        fraction: 1.0,
        seed: 0,
    };
    let e = off
        .apply(&mut images(4, d), &[0, 1, 0, 1], shape)
        .unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
}
