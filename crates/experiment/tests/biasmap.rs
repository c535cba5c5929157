//! The bias map on images whose answer is known: the biased training images themselves as
//! "perfect reconstructions" show their trigger; clean images of the task show none. (The
//! diagonal triggers, spread over six squares each in a third of a class's images, are located
//! by the map's top pixels but stay below the verdict's threshold here.)

use reveal_data::{prepare, Bias, DataSpec, Source, TestSelection};
use reveal_experiment::audit::{bias_map, threshold};
use reveal_experiment::biasmap::check;

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
        (Bias::Diag3, false),
        (Bias::None, false),
    ] {
        let d = data(bias);
        let y: Vec<f32> = d.train.y.iter().copied().collect();
        let (z, hotspot, clean, _) = bias_map(&d.train.x, &y, &[], &d, 50, 0);
        let t = threshold(&clean, &[]);
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
