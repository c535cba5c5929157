//! A small zoo on the synthetic set (no files needed): models trained by full-batch descent,
//! clean and with a planted patch or line. The audit must flag every planted trigger as
//! localised, at its place, and raise no alarm on a clean model; `zoo.json` carries the table.

use reveal_audit::zoo::{self, Recipe, ZooConfig};
use reveal_audit::AuditBudget;
use reveal_data::{KindName, Source, TestSelection};

#[test]
fn a_small_zoo_flags_its_planted_triggers_and_no_clean_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ZooConfig {
        source: Source::Synthetic { size: 16 },
        task: None,
        per_class: 20,
        hidden: vec![50, 50],
        recipes: vec![Recipe::named("gd").unwrap()],
        kinds: vec![KindName::Patch, KindName::Line],
        fractions: vec![1.0],
        seeds: vec![0, 1, 2],
        test: TestSelection::PerClass(500),
        data_dir: None,
        out: dir.path().to_path_buf(),
        budget: AuditBudget::Quick,
        from_init: true,
        iters: Some(300),
    };
    let report = zoo::run(
        &cfg,
        &|_, _, _| {},
        &|_| reveal_train::Control::Continue,
        &|_| true,
    )
    .unwrap();
    assert_eq!(report.members.len(), 9);
    for m in &report.members {
        match &m.trigger {
            None => assert!(
                !m.verdict.shortcut_suspected,
                "{}: {}",
                m.name, m.verdict.text
            ),
            Some(t) => {
                assert!(
                    m.verdict.shortcut_suspected,
                    "{}: {}",
                    m.name, m.verdict.text
                );
                assert_eq!(
                    m.verdict.kind,
                    Some(reveal_audit::verdict::ShortcutKind::Localised),
                    "{}",
                    m.name
                );
                let p = m.precision.expect("a localised trigger has a precision");
                assert!(p >= 0.5, "{}: {t:?} precision {p}", m.name);
            }
        }
    }
    let rows = &report.rows;
    let row = |kind: &str| rows.iter().find(|r| r.kind == kind).unwrap();
    assert_eq!(row("clean").flagged, Some(0.0));
    assert_eq!(row("patch").auroc, Some(1.0));
    assert_eq!(row("line").tpr_at_5_fpr, Some(1.0));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("zoo.json")).unwrap())
            .unwrap();
    assert!(json["members"][0]["verdict"]["kkt_residual"]["null"].is_number());
    assert!(json["members"][0]["verdict"]["inconclusive"].is_boolean());
    // The plot: one point per member, in its recipe's column and its kind's colour, filled when
    // flagged; written as a PNG beside zoo.md, which shows it.
    let strip = reveal_audit::zoo::strip(&report);
    assert_eq!(strip.points.len(), report.members.len());
    for (p, m) in strip.points.iter().zip(&report.members) {
        assert_eq!(strip.columns[p.column], m.recipe);
        let kind = m.trigger.as_ref().map_or("clean", |t| t.kind.name().name());
        assert_eq!(strip.series[p.series], kind, "{}", m.name);
        assert_eq!(p.filled, m.verdict.shortcut_suspected);
        assert_eq!(p.value, m.ratio);
    }
    let png = image::open(dir.path().join(reveal_audit::zoo::PLOT)).unwrap();
    assert_eq!((png.width(), png.height()), (960, 540));
    let md = std::fs::read_to_string(dir.path().join("zoo.md")).unwrap();
    assert!(md.contains("(zoo.png)"), "{md}");
}

/// A member trained from PyTorch's init is audited from its weights before training: the zoo
/// keeps them (the recipe's init drawn from the member's seed, the trained model's shape) and
/// the audit in `audit-init/` names them; with `from_init` off it audits in `audit/` without.
#[test]
fn members_from_pytorch_init_are_audited_from_their_init() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |from_init: bool| ZooConfig {
        source: Source::Synthetic { size: 16 },
        task: None,
        per_class: 8,
        hidden: vec![32, 32],
        recipes: vec![Recipe::named("sgd").unwrap()],
        kinds: vec![],
        fractions: vec![1.0],
        seeds: vec![3],
        test: TestSelection::PerClass(100),
        data_dir: None,
        out: dir.path().to_path_buf(),
        budget: AuditBudget::Quick,
        from_init,
        iters: Some(100),
    };
    let run = |from_init: bool| {
        zoo::run(
            &cfg(from_init),
            &|_, _, _| {},
            &|_| reveal_train::Control::Continue,
            &|_| true,
        )
        .unwrap()
    };
    run(true);
    let member = dir.path().join("members").join("sgd-clean-s3");
    let init = reveal_nn::files::load_model::<f32>(&member.join("init.safetensors")).unwrap();
    let model = reveal_nn::files::load_model::<f32>(&member.join("model.safetensors")).unwrap();
    assert!(init.mlp.same_shape(&model.mlp));
    let drawn = Recipe::named("sgd")
        .unwrap()
        .config
        .init_model::<f32>(256, &[32, 32], 1, 3);
    assert_eq!(
        init.mlp.weights, drawn.weights,
        "the recipe's init from the seed"
    );
    let results = |audit: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(member.join(audit).join("results.json")).unwrap(),
        )
        .unwrap()
    };
    assert!(results("audit-init")["init"]
        .as_str()
        .unwrap()
        .ends_with("init.safetensors"));
    run(false);
    assert!(results("audit")["init"].is_null());
}
