//! From candidates to a verdict: the bias map of a model's candidates, its calibration against
//! maps that carry no shortcut, and the sentence the report opens with.

use std::path::Path;

use anyhow::Result;
use ndarray::{Array1, Array2};
use reveal_data::Prepared;
use reveal_recon::files::{load_candidates, CandidateFile};
use reveal_recon::Multipliers;
use serde::{Deserialize, Serialize};

use crate::biasmap::{self, Hotspot, Reference};

/// Draws of clean class-difference maps for the threshold.
pub const CLEAN_DRAWS: usize = 40;

/// The z at which the bias map's colour scale saturates.
pub const MAP_SCALE: f64 = 20.0;

/// What the bias map's colour scale shows, for the legends of the reports.
pub const MAP_LEGEND: &str = "Bias map: z of the reconstructions' class difference (each weighted by its λ) beyond that of clean images held out from the training file (sharp or blurred), per pixel over the clean images' standard error, opened by two-pixel segments";

/// Candidates for a bias map: images (mean-subtracted space), their labels (±1, or class
/// indices) and their weights ([`Multipliers::weights`] of their multipliers λ).
#[derive(Clone, Debug)]
pub struct Candidates {
    pub x: Array2<f32>,
    pub y: Vec<f32>,
    pub w: Vec<f64>,
}

impl Candidates {
    /// Reads a candidate file; the weights come from its multipliers.
    pub fn load(path: &Path) -> Result<Candidates> {
        Ok(Candidates::from_file(load_candidates::<f32>(path)?))
    }

    /// The candidates of a file already read, weighted as the form of its multipliers says (in
    /// its run settings; the margin form without them).
    pub fn from_file(c: CandidateFile<f32>) -> Candidates {
        let form = c
            .run_config()
            .map_or(Multipliers::Margin, |run| run.multipliers);
        let y: Vec<f32> = c.y.iter().copied().collect();
        Candidates {
            w: form.weights(&c.lambda, &y),
            y,
            x: c.x,
        }
    }

    /// The same candidates with other labels (a one-against-the-rest view).
    fn relabelled(&self, y: Vec<f32>) -> CandidateView<'_> {
        CandidateView {
            x: &self.x,
            y,
            w: &self.w,
        }
    }
}

/// Candidates as one bias map sees them: their labels possibly remapped.
struct CandidateView<'a> {
    x: &'a Array2<f32>,
    y: Vec<f32>,
    w: &'a [f64],
}

/// The hotspot scores of maps that carry no shortcut, which a map's hotspot is held against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Maps of random subsets of clean images.
    pub clean: Vec<f64>,
    /// Maps of the null models' reconstructions.
    pub null_models: Vec<f64>,
}

impl Calibration {
    /// The threshold: the largest score of the maps that carry no shortcut.
    pub fn threshold(&self) -> f64 {
        largest(&self.clean, &self.null_models)
    }
}

/// ρ_half ([`biasmap::consistency`]) of a model's candidates, the statistic for shortcuts spread
/// over the image, beside the same for sets that carry none: faithful reconstructions of random
/// subsets of clean images, and the null models' reconstructions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Consistency {
    /// For a C-output model, the class (against the rest) this is of.
    #[serde(default)]
    pub class: Option<usize>,
    pub value: f64,
    /// Clean subsets reconstructed with the candidates' own make-up (which images come back
    /// how often, with which λ): the threshold.
    pub clean: Vec<f64>,
    /// Clean subsets with every image taken equally often: below their largest, no pattern
    /// shows; between it and the threshold the audit cannot tell.
    #[serde(default)]
    pub clean_even: Vec<f64>,
    /// The null models' reconstructions.
    pub null_models: Vec<f64>,
    /// R = D − P·D of the candidates (C·H·W values): what their classes share beyond the
    /// concept, the picture of a global shortcut.
    #[serde(skip)]
    pub pattern: Array1<f64>,
}

impl Consistency {
    /// The threshold: the largest ρ_half of the sets that carry no shortcut.
    pub fn threshold(&self) -> f64 {
        largest(&self.clean, &self.null_models)
    }

    /// How far ρ_half stands above its threshold (positive: a global shortcut is suspected).
    pub fn excess(&self) -> f64 {
        self.value - self.threshold()
    }

    /// Whether ρ_half stands above what evenly reconstructed clean subsets give (and the null
    /// models' reconstructions): a pattern may be there, flagged or not.
    pub fn doubtful(&self) -> bool {
        self.value > largest(&self.clean_even, &self.null_models)
    }
}

/// The largest value of two lists (−∞ for none).
fn largest(a: &[f64], b: &[f64]) -> f64 {
    a.iter().chain(b).copied().fold(f64::NEG_INFINITY, f64::max)
}

/// A bias map (H·W values of z), its hotspot and its calibration.
#[derive(Clone, Debug)]
pub struct ClassMap {
    /// For a C-output model, the class whose map against the rest this is.
    pub class: Option<usize>,
    pub map: Array1<f64>,
    pub hotspot: Hotspot,
    pub calibration: Calibration,
    pub consistency: Consistency,
}

impl ClassMap {
    /// How far the hotspot stands above its threshold, as a ratio.
    pub fn ratio(&self) -> f64 {
        self.hotspot.score / self.calibration.threshold()
    }
}

/// The bias map of candidates with labels ±1 against the clean images (`data.reference`), and
/// its calibration from [`CLEAN_DRAWS`] clean maps of `train_per_class` images per class and
/// the null models' candidates.
pub fn bias_map(
    candidates: &Candidates,
    nulls: &[Candidates],
    data: &Prepared,
    train_per_class: usize,
    seed: u64,
) -> ClassMap {
    let clean_y: Vec<f32> = data.reference.y.iter().copied().collect();
    let view = candidates.relabelled(candidates.y.clone());
    let nulls: Vec<_> = nulls.iter().map(|n| n.relabelled(n.y.clone())).collect();
    class_map(
        &view,
        &nulls,
        &clean_y,
        data,
        (train_per_class, CLEAN_DRAWS),
        seed,
    )
}

/// The map of `candidates` against the clean reference images labelled `clean_y` (±1), calibrated
/// from `draws` clean maps of `per_class` images per class and the null models' maps.
fn class_map(
    candidates: &CandidateView,
    nulls: &[CandidateView],
    clean_y: &[f32],
    data: &Prepared,
    (per_class, draws): (usize, usize),
    seed: u64,
) -> ClassMap {
    let reference = Reference::new(&data.reference.x, clean_y, data.shape);
    let (_, h, w) = data.shape;
    let map_of = |c: &CandidateView| reference.map(&biasmap::class_difference(c.x, &c.y, c.w));
    let consistency_of = |c: &CandidateView| biasmap::consistency(&reference, c.x, &c.y, c.w, seed);
    let map = map_of(candidates);
    let hotspot = biasmap::hotspot(&map, h, w);
    // Candidates per training image (m = 2n by default), for the even clean reconstructions.
    let classes = data.classes().max(2);
    let copies = (candidates.x.nrows() as f64 / (classes * per_class) as f64).round() as usize;
    let clean = biasmap::clean_null_scores(
        &data.reference.x,
        clean_y,
        &reference,
        (per_class, copies),
        (&candidates.y, candidates.w),
        draws,
        seed,
    );
    let null_models = nulls
        .iter()
        .map(|n| biasmap::hotspot(&map_of(n), h, w).score)
        .collect();
    let d = biasmap::class_difference(candidates.x, &candidates.y, candidates.w);
    ClassMap {
        class: None,
        map,
        hotspot,
        calibration: Calibration {
            clean: clean.hotspot,
            null_models,
        },
        consistency: Consistency {
            class: None,
            value: consistency_of(candidates),
            clean: clean.consistency,
            clean_even: clean.consistency_even,
            null_models: nulls.iter().map(consistency_of).collect(),
            pattern: reference.beyond(&d),
        },
    }
}

/// The bias map of a model's candidates (labels as the model takes them) and its calibration:
/// [`bias_map`] for one output; for C outputs, for each class c the map of c against the rest
/// (labels +1 for c, −1 for the others, for the candidates, the null models' candidates and the
/// clean images alike) with its own threshold, and the class whose hotspot stands highest above
/// its threshold ([`ClassMap::ratio`]) is returned, with the ρ_half of the class whose ρ_half
/// stands highest above its own threshold. C maps are searched, so each class's clean
/// threshold is the largest of C·[`CLEAN_DRAWS`] clean maps (not [`CLEAN_DRAWS`]): the chance
/// that any of the C exceeds its own stays that of one binary map (a union bound).
pub fn model_bias_map(
    candidates: &Candidates,
    nulls: &[Candidates],
    data: &Prepared,
    train_per_class: usize,
    seed: u64,
) -> ClassMap {
    if data.outputs() == 1 {
        return bias_map(candidates, nulls, data, train_per_class, seed);
    }
    let classes = data.classes();
    let one_vs_rest = |labels: &[f32], c: usize| -> Vec<f32> {
        labels
            .iter()
            .map(|&v| if v as usize == c { 1.0 } else { -1.0 })
            .collect()
    };
    let clean_labels: Vec<f32> = data.reference.y.iter().copied().collect();
    let maps: Vec<ClassMap> = (0..classes)
        .map(|c| {
            let null_views: Vec<_> = nulls
                .iter()
                .map(|n| n.relabelled(one_vs_rest(&n.y, c)))
                .collect();
            let map = class_map(
                &candidates.relabelled(one_vs_rest(&candidates.y, c)),
                &null_views,
                &one_vs_rest(&clean_labels, c),
                data,
                (train_per_class, classes * CLEAN_DRAWS),
                seed + c as u64,
            );
            ClassMap {
                class: Some(c),
                consistency: Consistency {
                    class: Some(c),
                    ..map.consistency
                },
                ..map
            }
        })
        .collect();
    let global = maps
        .iter()
        .max_by(|a, b| a.consistency.excess().total_cmp(&b.consistency.excess()))
        .expect("at least two classes")
        .consistency
        .clone();
    let localised = maps
        .into_iter()
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
        .expect("at least two classes");
    ClassMap {
        consistency: global,
        ..localised
    }
}

/// One figure of the evidence, beside the null models'.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    /// The mean over the null models.
    pub null: f64,
    /// Welch's t between the audited model's items (its candidates, or its best ten pairs)
    /// and the null models' pooled items: how many standard errors the value lies above
    /// (none for a count).
    pub z: Option<f64>,
}

/// Where a suspected shortcut lives: in a few pixels, or spread over the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortcutKind {
    Localised,
    Global,
}

/// How far the reconstruction got towards the KKT conditions: the relative residual
/// ‖θ − (1/m) Σ λ_i ∇θ m_i(x_i)‖ / ‖θ‖ at the final candidates, and the same for the null
/// models (weights that are no KKT point of any data).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Residual {
    pub value: f64,
    pub null: f64,
}

/// What the audit concludes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// A shortcut of either kind is suspected.
    pub shortcut_suspected: bool,
    /// Which kind, when one is suspected.
    #[serde(default)]
    pub kind: Option<ShortcutKind>,
    /// No shortcut was found, but the reconstructions are not good enough to say there is none.
    #[serde(default)]
    pub inconclusive: bool,
    /// The most compact spot of the bias map, [r0, c0, r1, c1] inclusive, when suspected.
    pub region: Option<[usize; 4]>,
    /// The spot's score and the threshold it is held against.
    pub score: f64,
    pub threshold: f64,
    /// Whether the reconstructions resemble real images more than the null models' do.
    pub concept_evidence: bool,
    /// How close the reconstruction came to a KKT point, beside the null models'.
    #[serde(default)]
    pub kkt_residual: Option<Residual>,
    /// One sentence for the top of the report.
    pub text: String,
}

impl Verdict {
    /// The verdict in two words, for tables: "localised shortcut", "global shortcut",
    /// "inconclusive" or "none found".
    pub fn label(&self) -> &'static str {
        match (self.kind, self.inconclusive) {
            (Some(ShortcutKind::Localised), _) => "localised shortcut",
            (Some(ShortcutKind::Global), _) => "global shortcut",
            (None, true) => "inconclusive",
            (None, false) => "none found",
        }
    }
}

/// The largest first-layer KKT residual, as a share of the null models', at which the
/// reconstructions are trusted to show a shortcut if the model has one. Above it the model is
/// too far from a KKT point (not trained to the max-margin regime the method assumes) and a
/// verdict of "no shortcut" becomes "inconclusive".
pub const KKT_TRUST: f64 = 0.5;

/// What else the verdict weighs besides the map: how real the reconstructions look and how
/// close they came to a KKT point, each beside the null models'.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trust<'a> {
    pub concept: Option<&'a Figure>,
    pub kkt: Option<Residual>,
}

/// The verdict of a bias map against its calibration, weighed with the trust evidence: a
/// localised shortcut when the hotspot stands above its threshold, else a global one when
/// ρ_half stands above its own and the reconstruction came near a KKT point; else "no shortcut
/// found" when the reconstructions can be trusted, or "inconclusive" when they cannot (no
/// concept evidence, or a KKT residual not clearly below the null models').
pub fn verdict(map: &ClassMap, trust: Trust) -> Verdict {
    let (hotspot, threshold) = (map.hotspot, map.calibration.threshold());
    let localised = hotspot.score > threshold;
    let far_from_kkt = trust.kkt.filter(|r| r.value > KKT_TRUST * r.null);
    // A pattern shared beyond the concept is the training data's only when the reconstructions
    // explain the weights: reconstructions far from a KKT point share the shape of their own
    // incompleteness (prototypes rather than samples), so there it decides nothing.
    let rho = &map.consistency;
    let global = !localised && rho.excess() > 0.0 && far_from_kkt.is_none();
    let suspected = localised || global;
    let [r0, c0, r1, c1] = hotspot.region;
    let concept = trust.concept;
    let z = concept.and_then(|c| c.z).unwrap_or(0.0);
    let concept_evidence = z > 3.0;
    // ρ_half between what even and what faithful clean reconstructions give: cannot tell.
    let doubtful = !suspected && rho.doubtful();
    let inconclusive = !suspected
        && (far_from_kkt.is_some() || doubtful || (concept.is_some() && !concept_evidence));
    let learned = concept.map_or(String::new(), |c| {
        let how = if concept_evidence { "more" } else { "no more" };
        format!(
            "; its reconstructions resemble real images {how} than a random model's do (realism ρ10 {:.3} against {:.3}, z {z:.1})",
            c.value, c.null
        )
    });
    let of_class = |class: Option<usize>| {
        class.map_or(String::new(), |c| format!("Class {c} against the rest: "))
    };
    let window = format!(
        "best window {:.1} < threshold {:.1}; ρ_half {:.2} ≤ {:.2}",
        hotspot.score,
        threshold,
        rho.value,
        rho.threshold()
    );
    let why = match (far_from_kkt, doubtful) {
        (Some(r), _) => format!(
            ": the reconstruction did not come near a KKT point of this model (first-layer residual {:.2}, the null models' {:.2}), as for models not trained to the max-margin regime (mini-batches, Adam, early stopping), so a shortcut may be there unseen",
            r.value, r.null
        ),
        (None, true) => ": what its reconstructions' classes share beyond the concept repeats more than in clean images given back evenly, though not more than a faithful reconstruction of clean images can, so a pattern spread over the image may be there".into(),
        (None, false) => ": its reconstructions look no more like real images than a random model's, so a shortcut may be there unseen".into(),
    };
    let text = match (localised, global, inconclusive) {
        (true, _, _) => format!(
            "{}Shortcut suspected at rows {r0}–{r1}, columns {c0}–{c1} (score {:.1}, threshold {:.1}){learned}.",
            of_class(map.class), hotspot.score, threshold
        ),
        (false, true, _) => format!(
            "{}Global shortcut suspected: the reconstructions' classes differ beyond the concept in a pattern that repeats across them, as a blended pattern or a contrast or colour change would (ρ_half {:.2} against at most {:.2} for clean images; no localised spot, best window {:.1} < {:.1}){learned}. The pattern is pictured in the report.",
            of_class(rho.class), rho.value, rho.threshold(), hotspot.score, threshold
        ),
        (false, false, true) => format!(
            "{}Inconclusive: no shortcut found ({window}), but the audit cannot vouch for this model{why}.",
            of_class(map.class)
        ),
        (false, false, false) => format!(
            "{}No shortcut found ({window}){learned}.",
            of_class(map.class)
        ),
    };
    Verdict {
        shortcut_suspected: suspected,
        kind: match (localised, global) {
            (true, _) => Some(ShortcutKind::Localised),
            (false, true) => Some(ShortcutKind::Global),
            (false, false) => None,
        },
        inconclusive,
        kkt_residual: trust.kkt,
        region: localised.then_some(hotspot.region),
        score: hotspot.score,
        threshold,
        concept_evidence,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(score: f64) -> ClassMap {
        ClassMap {
            class: None,
            map: Array1::zeros(4),
            hotspot: Hotspot {
                region: [0, 0, 1, 1],
                score,
            },
            calibration: Calibration {
                clean: vec![8.0, 10.0],
                null_models: vec![9.0],
            },
            consistency: Consistency {
                value: 0.4,
                clean: vec![0.3, 0.5],
                clean_even: vec![0.2, 0.45],
                null_models: vec![-0.9],
                ..Consistency::default()
            },
        }
    }

    /// The trust rule: a "no" is inconclusive when the KKT residual exceeds KKT_TRUST of the
    /// null's or the reconstructions show no concept; a flagged spot never is.
    #[test]
    fn a_no_is_inconclusive_exactly_when_the_audit_cannot_vouch_for_it() {
        let real = Figure {
            value: 0.8,
            null: 0.4,
            z: Some(20.0),
        };
        let unreal = Figure {
            z: Some(2.0),
            ..real
        };
        let near = Residual {
            value: 0.1,
            null: 0.97,
        };
        let far = Residual {
            value: 0.99,
            null: 0.99,
        };
        let with = |concept, kkt| Trust {
            concept: Some(concept),
            kkt: Some(kkt),
        };
        let v = verdict(&map(5.0), with(&real, near));
        assert!(!v.shortcut_suspected && !v.inconclusive, "{}", v.text);
        assert_eq!(v.threshold, 10.0);
        let v = verdict(&map(5.0), with(&real, far));
        assert!(
            v.inconclusive && v.text.starts_with("Inconclusive"),
            "{}",
            v.text
        );
        assert!(v.text.contains("0.99"), "{}", v.text);
        let v = verdict(&map(5.0), with(&unreal, near));
        assert!(v.inconclusive, "{}", v.text);
        let v = verdict(&map(12.0), with(&unreal, far));
        assert!(v.shortcut_suspected && !v.inconclusive, "{}", v.text);
        assert_eq!(v.kind, Some(ShortcutKind::Localised));
        assert_eq!(v.region, Some([0, 0, 1, 1]));
        // Without trust evidence (the papers' experiment) a "no" stays a "no".
        let v = verdict(&map(5.0), Trust::default());
        assert!(!v.inconclusive && v.kind.is_none());
    }

    /// ρ_half above the largest of its clean and null values is a global shortcut, with no
    /// region, when the reconstruction came near a KKT point (else inconclusive); a localised
    /// spot takes precedence, near or far; at or below the threshold, none.
    #[test]
    fn a_consistent_pattern_beyond_the_concept_is_a_global_shortcut() {
        let [near, far] = [0.1, 0.99].map(|value| Trust {
            concept: None,
            kkt: Some(Residual { value, null: 0.99 }),
        });
        let with_rho = |score: f64, value: f64| ClassMap {
            consistency: Consistency {
                value,
                ..map(score).consistency
            },
            ..map(score)
        };
        let v = verdict(&with_rho(5.0, 0.8), near);
        assert!(v.shortcut_suspected && !v.inconclusive, "{}", v.text);
        assert_eq!((v.kind, v.region), (Some(ShortcutKind::Global), None));
        assert!(
            v.text.contains("Global shortcut suspected") && v.text.contains("0.80"),
            "{}",
            v.text
        );
        let v = verdict(&with_rho(5.0, 0.8), far);
        assert!(!v.shortcut_suspected && v.inconclusive, "{}", v.text);
        let v = verdict(&with_rho(12.0, 0.8), far);
        assert_eq!(v.kind, Some(ShortcutKind::Localised));
        let v = verdict(&with_rho(5.0, 0.4), near);
        assert!(!v.shortcut_suspected && !v.inconclusive, "{}", v.text);
        // Above the even clean reconstructions (0.45), not above the faithful ones (0.5): a
        // "no" would be unsafe.
        let v = verdict(&with_rho(5.0, 0.48), near);
        assert!(!v.shortcut_suspected && v.inconclusive, "{}", v.text);
        assert!(
            v.text.contains("spread over the image may be there"),
            "{}",
            v.text
        );
    }
}
