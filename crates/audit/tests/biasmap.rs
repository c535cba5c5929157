//! The bias map on images whose answer is known: the biased training images themselves as
//! "perfect reconstructions" show their trigger — the corner square, and the diagonal trigger's
//! six squares, each in a third of a class's images — and clean images of the task show none.

use reveal_audit::biasmap::check;
use reveal_audit::verdict::{bias_map, Candidates};
use reveal_data::{prepare, Bias, DataSpec, Source, TestSelection};

fn data(bias: Bias) -> reveal_data::Prepared {
    let mut spec = DataSpec::new(Source::Synthetic { size: 16 }, 50);
    spec.bias = bias;
    spec.test = TestSelection::PerClass(300);
    prepare(&spec, None).unwrap()
}

#[test]
fn a_planted_trigger_is_found_and_clean_images_raise_no_alarm() {
    for (bias, alarm) in [
        (Bias::Corner, true),
        (Bias::Diag3, true),
        (Bias::None, false),
    ] {
        let d = data(bias);
        let y: Vec<f32> = d.train.y.iter().copied().collect();
        let training = Candidates {
            x: d.train.x.clone(),
            w: vec![1.0; y.len()],
            y,
        };
        let map = bias_map(&training, &[], &d, 50, 0);
        let (z, hotspot, t) = (map.map, map.hotspot, map.calibration.threshold());
        assert_eq!(
            hotspot.score > t,
            alarm,
            "{bias:?}: best window {:?} score {:.1} against threshold {t:.1}",
            hotspot.region,
            hotspot.score
        );
        if let Some(c) = check(&z, Some(hotspot.region), &d.triggers, d.shape) {
            assert_eq!(c.region_overlaps, Some(true), "{bias:?}: {c:?}");
            assert!(c.precision >= 0.5, "{bias:?}: {c:?}");
        }
    }
}

#[test]
fn the_opening_keeps_a_patch_and_drops_a_lone_pixel_and_the_rim() {
    use ndarray::Array1;
    use reveal_audit::biasmap::opening;
    let opening = |z: &Array1<f64>, h, w, k| opening(z, h, w, (k, k));
    let (h, w) = (8, 8);
    let mut z = Array1::<f64>::zeros(h * w);
    for r in 1..4 {
        for c in 1..4 {
            z[r * w + c] = 5.0 + (r * 3 + c) as f64; // a 3×3 patch, uneven
        }
    }
    z[6 * w + 6] = 50.0; // a lone pixel
    let o = opening(&z, h, w, 2);
    // Every pixel of the patch keeps at least its patch's weakest 2×2 minimum.
    for r in 1..4 {
        for c in 1..4 {
            assert!(
                o[r * w + c] >= 9.0 && o[r * w + c] <= z[r * w + c],
                "({r}, {c}): {}",
                o[r * w + c]
            );
        }
    }
    assert_eq!(o[6 * w + 6], 0.0, "the lone pixel falls to its neighbours");
    assert_eq!(o[4 * w + 2], 0.0, "the rim below the patch stays low");
    // Opening is idempotent and never raises a value.
    assert_eq!(opening(&o, h, w, 2), o);
    assert!(o.iter().zip(&z).all(|(a, b)| a <= b));
}

#[test]
fn the_concept_sharp_or_blurred_leaves_no_residual_and_a_square_does() {
    use ndarray::{Array1, Array2};
    use reveal_audit::biasmap::{blur, class_difference, top_pixels, Reference};
    let shape = (1, 16, 16);
    // Clean images: a class pattern (a bar across the middle, +1 brighter) over noise.
    let mut state = 12345u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
    };
    let n = 400;
    let labels: Vec<f32> = (0..n)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let clean = Array2::from_shape_fn((n, 256), |(i, p)| {
        let bar = if (6..10).contains(&(p / 16)) {
            0.4 * labels[i]
        } else {
            0.0
        };
        bar + 0.2 * noise()
    });
    let reference = Reference::new(&clean, &labels, shape);
    let d_clean = class_difference(&clean, &labels, &vec![1.0; n]);
    // The reconstructions' class difference: the concept, partly blurred, plus a 3×3 square.
    let concept = &d_clean * 0.7 + &(blur(&d_clean, shape, 1.0) * 0.6);
    let mut square = Array1::<f64>::zeros(256);
    for r in 2..5 {
        for c in 11..14 {
            square[r * 16 + c] = 0.3;
        }
    }
    // With a square added, the residual is the square (and off it only what the square shares
    // with the concept: its projection), and so are the map's top pixels.
    let with_square = reference.residual(&(&concept + &square));
    let on = with_square[3 * 16 + 12];
    let off: f64 = (0..256)
        .filter(|&p| square[p] == 0.0)
        .map(|p| with_square[p])
        .fold(0.0, f64::max);
    assert!(off < 0.25 * on, "residual {off} off the square, {on} on it");
    // The concept, sharp or blurred by σ = 1 or 2, leaves no residual.
    let plain = reference.residual(&(&concept + &(blur(&d_clean, shape, 2.0) * 0.3)));
    let most = plain.iter().copied().fold(0.0f64, f64::max);
    assert!(most < 1e-9 * on, "the concept left a residual of {most}");
    let mut top = top_pixels(&reference.map(&(&concept + &square)), 16, 9);
    top.sort();
    let expected: Vec<[usize; 2]> = (2..5).flat_map(|r| (11..14).map(move |c| [r, c])).collect();
    assert_eq!(top, expected, "the square's pixels lead the map");
}

#[test]
fn a_candidate_counts_by_its_multiplier() {
    use ndarray::{concatenate, Array2, Axis};
    use reveal_audit::biasmap::class_difference;
    use reveal_recon::Multipliers;
    let x = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f32);
    let y = [1.0, -1.0, 1.0, -1.0];
    // λ = 0 (or below): the candidate is no part of θ, and none of the map.
    let lambda = Array2::from_shape_vec((4, 1), vec![1.0, 2.0, 3.0, -0.5]).unwrap();
    let w = Multipliers::Margin.weights(&lambda, &y);
    assert_eq!(w, vec![1.0, 2.0, 3.0, 0.0]);
    // Signed multipliers count by their size; pairs by their positive parts, the label's own
    // column unused.
    assert_eq!(
        Multipliers::Signed.weights(&lambda, &y),
        vec![1.0, 2.0, 3.0, 0.5]
    );
    let pairs = Array2::from_shape_vec((2, 3), vec![9.0, 1.0, -2.0, 4.0, 5.0, 0.5]).unwrap();
    assert_eq!(
        Multipliers::Pairs.weights(&pairs, &[0.0, 1.0]),
        vec![1.0, 4.5]
    );
    let noise = Array2::from_elem((1, 3), 1e3f32);
    let with_noise = concatenate![Axis(0), x, noise];
    let d = class_difference(&x, &y, &w);
    let d_noise = class_difference(
        &with_noise,
        &[1.0, -1.0, 1.0, -1.0, 1.0],
        &[1.0, 2.0, 3.0, 0.0, 0.0],
    );
    assert_eq!(d, d_noise);
    // Weighted means: +1 rows 0 and 2 with weights 1 and 3, −1 row 1 alone.
    for j in 0..3 {
        let pos = (x[[0, j]] as f64 + 3.0 * x[[2, j]] as f64) / 4.0;
        assert!(
            (d[j] - (pos - x[[1, j]] as f64)).abs() < 1e-12,
            "value {j}: {}",
            d[j]
        );
    }
}

/// The map's opening by two-pixel segments keeps a line one pixel wide (which a 2×2 square
/// erases) and still drops a lone pixel; the hotspot search then finds the line as a bar.
#[test]
fn a_one_pixel_line_survives_and_is_found_as_a_bar() {
    use ndarray::Array1;
    use reveal_audit::biasmap::{hotspot, open_segments, opening};
    let (h, w) = (12, 12);
    let mut z = Array1::<f64>::zeros(h * w);
    for c in 0..w {
        z[5 * w + c] = 6.0; // a horizontal line along row 5
    }
    z[9 * w + 3] = 40.0; // a lone pixel
    let square = opening(&z, h, w, (2, 2));
    assert_eq!(square[5 * w + 4], 0.0, "a 2×2 opening erases the line");
    let o = open_segments(&z, h, w);
    assert!(
        (0..w).all(|c| o[5 * w + c] == 6.0),
        "the line is kept whole"
    );
    assert_eq!(o[9 * w + 3], 0.0, "the lone pixel falls");
    let spot = hotspot(&o, h, w);
    assert_eq!(spot.region, [5, 0, 5, w - 1], "{spot:?}");
    assert!((spot.score - 6.0 * (w as f64).sqrt()).abs() < 1e-9);
}

/// ρ_half, the statistic for shortcuts spread over the image: with the training images as a
/// perfect reconstruction, a pattern blended into every image of one class comes back in both
/// halves, above what faithful reconstructions of clean subsets give (its threshold); the same
/// images without it stay below even the evenly given-back subsets.
#[test]
fn consistency_sees_a_blended_pattern_that_clean_images_lack() {
    use reveal_data::{Trigger, TriggerKind};
    let clean = data(Bias::None);
    let mut spec = clean.spec.clone();
    spec.trigger = Some(Trigger {
        kind: TriggerKind::Blend {
            alpha: 0.3,
            seed: 1,
        },
        class: 0,
        fraction: 1.0,
        seed: 2,
    });
    let blended = prepare(&spec, None).unwrap();
    let consistency = |d: &reveal_data::Prepared| {
        let y: Vec<f32> = d.train.y.iter().copied().collect();
        let training = Candidates {
            x: d.train.x.clone(),
            w: vec![1.0; y.len()],
            y,
        };
        bias_map(&training, &[], d, 50, 0).consistency
    };
    let (with, without) = (consistency(&blended), consistency(&clean));
    assert!(
        with.excess() > 0.0,
        "blended: ρ_half {:.3}, threshold {:.3}",
        with.value,
        with.threshold()
    );
    assert!(
        !without.doubtful(),
        "clean: ρ_half {:.3} above the even subsets' largest",
        without.value
    );
}
