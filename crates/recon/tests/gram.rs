//! The Gram-matrix fast path agrees with the generic grad-of-grad path to 1e-10 in f64, for every
//! activation, for m below and above the width, for deeper nets, for C-output models, with a
//! bias in the first layer or in every layer, with or without an origin θ0, for every multiplier
//! form.

use ndarray::Array2;
use reveal_nn::{Activation, Biases, Init, Mlp};
use reveal_recon::objective::{evaluate_with, Method};
use reveal_recon::terms::{candidate_labels_for, Multipliers, ObjectiveConfig};
use reveal_tape::check::{randn, Rng};

fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).mapv(|v| v * v).sum().sqrt() / b.mapv(|v| v * v).sum().sqrt().max(1e-300)
}

#[test]
fn gram_path_equals_grad_of_grad() {
    // (d, hidden widths, m, outputs)
    let cases: [(usize, &[usize], usize, usize); 6] = [
        (9, &[7, 7], 4, 1),
        (9, &[5, 6], 12, 1),
        (6, &[8, 5, 4], 6, 1),
        (11, &[4], 6, 1),
        (9, &[7, 7], 6, 3),
        (6, &[8, 5, 6], 12, 4),
    ];
    let every = cases.iter().map(|&c| (c, Biases::All));
    let plans = cases.iter().map(|&c| (c, Biases::First)).chain(every);
    for (case, ((d, hidden, m, outputs), biases)) in plans.enumerate() {
        let mut rng = Rng::seed(case as u64);
        let mut net = Mlp::<f64>::init_with(d, hidden, outputs, Init::Small, biases, case as u64);
        for p in net.params_mut() {
            *p = randn(p.dim(), &mut rng) * 0.6;
        }
        let x = randn((m, d), &mut rng) * 0.9;
        let y = candidate_labels_for(m, outputs);
        let forms = [Multipliers::Margin, Multipliers::Pairs, Multipliers::Signed];
        let acts = [
            Activation::ModifiedRelu(19.2),
            Activation::Relu,
            Activation::Softplus(4.0),
        ];
        for (form, act) in forms.into_iter().flat_map(|f| acts.map(|a| (f, a))) {
            let lambda = randn((m, form.columns(outputs)), &mut rng).mapv(|t| 0.4 + 0.3 * t);
            let cfg = ObjectiveConfig {
                activation: act,
                lambda_min: 0.45,
                multipliers: form,
            };
            // Without and with an origin θ0 (the weights before training).
            let mut start = net.clone();
            for p in start.params_mut() {
                *p = randn(p.dim(), &mut rng) * 0.3;
            }
            for theta in [net.theta(), net.theta().with_origin(&start)] {
                let g = evaluate_with(Method::GradOfGrad, &theta, &x, &lambda, &y, cfg);
                let f = evaluate_with(Method::Gram, &theta, &x, &lambda, &y, cfg);
                let what = format!(
                    "case {case} {hidden:?} m={m} {biases:?} {form:?} {act:?} origin {}",
                    theta.step.is_some()
                );
                for (a, b, name) in [
                    (f.terms.total, g.terms.total, "L"),
                    (f.terms.kkt, g.terms.kkt, "L_kkt"),
                    (f.terms.kkt_w1, g.terms.kkt_w1, "W1 residual"),
                ] {
                    assert!(
                        (a - b).abs() <= 1e-10 * b.abs().max(1.0),
                        "{what}: {name} {a} vs {b}"
                    );
                }
                assert!(
                    rel(&f.grad_x, &g.grad_x) < 1e-10,
                    "{what}: ∂x {:e}",
                    rel(&f.grad_x, &g.grad_x)
                );
                assert!(rel(&f.grad_lambda, &g.grad_lambda) < 1e-10, "{what}: ∂λ");
            }
        }
    }
}

#[test]
fn auto_picks_gram_when_m_is_at_most_half_the_width() {
    let net = Mlp::<f64>::init(4, &[10, 10], 0);
    assert_eq!(Method::auto(&net.theta(), 5), Method::Gram);
    assert_eq!(Method::auto(&net.theta(), 6), Method::GradOfGrad);
}

/// In f32 near convergence, where ‖W1‖² − 2⟨Δ, XW1ᵀ⟩ + ⟨ΔΔᵀ, XXᵀ⟩ nearly cancels: the Gram path
/// must still give L_kkt and the gradients of the f64 reference, as the generic f32 path does.
#[test]
fn gram_path_in_f32_holds_near_convergence() {
    use reveal_data::{prepare, DataSpec, Source};
    use reveal_recon::optim::{run, RunConfig, RunState};
    use reveal_train::job::{features, label_column};
    use reveal_train::{train_new, TrainConfig};

    // A trained 256-300-300-1 net (10 synthetic images) and 3000 iterations of a run from it.
    let spec = DataSpec::new(Source::Synthetic { size: 16 }, 5);
    let data = prepare(&spec, None).unwrap();
    let (x, y) = (
        features::<f32>(&data.train.x),
        label_column::<f32>(&data.train.y),
    );
    let (state, _) = train_new(&x, &y, &[300, 300], 0, &TrainConfig::fast(1e-5, 10_000));
    let model = state.mlp();
    let cfg = RunConfig::new(reveal_recon::preset("mnist-a").unwrap(), 20, 3000, 0);
    let mut recon = RunState::<f32>::init(256, &cfg);
    run(&model.theta(), &mut recon, &cfg, |_, _| true).unwrap();

    let ocfg = |alpha: f64| ObjectiveConfig {
        activation: Activation::ModifiedRelu(alpha),
        lambda_min: 0.447,
        multipliers: Multipliers::Margin,
    };
    let wide = |a: &Array2<f32>| a.mapv(f64::from);
    let reference = evaluate_with(
        Method::GradOfGrad,
        &model.cast::<f64>().theta(),
        &wide(&recon.x),
        &wide(&recon.lambda),
        &wide(&recon.y),
        ocfg(cfg.hyper.alpha),
    );
    let w1 = model.weights[0]
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>();
    let residual = reference.terms.kkt_w1 / w1;
    eprintln!("‖W1 − G1‖² / ‖W1‖² = {residual:.3e}");
    assert!(residual < 0.05, "not near convergence: {residual:.3e}");
    let theta = model.theta();
    let c = ObjectiveConfig {
        activation: Activation::ModifiedRelu(cfg.hyper.alpha as f32),
        lambda_min: 0.447,
        multipliers: Multipliers::Margin,
    };
    for method in [Method::Gram, Method::GradOfGrad] {
        let e = evaluate_with(method, &theta, &recon.x, &recon.lambda, &recon.y, c);
        let kkt_w1 =
            (e.terms.kkt_w1 as f64 - reference.terms.kkt_w1).abs() / reference.terms.kkt_w1;
        let kkt = (e.terms.kkt as f64 - reference.terms.kkt).abs() / reference.terms.kkt;
        let gx = rel(&wide(&e.grad_x), &reference.grad_x);
        let gl = rel(&wide(&e.grad_lambda), &reference.grad_lambda);
        eprintln!(
            "{method:?} f32: L_kkt {kkt:.1e}, its W1 part {kkt_w1:.1e}, ∇x {gx:.1e}, ∇λ {gl:.1e}"
        );
        assert!(
            kkt_w1 < 1e-3 && kkt < 1e-4 && gx < 1e-3 && gl < 1e-3,
            "{method:?}: {kkt_w1:e} {kkt:e} {gx:e} {gl:e}"
        );
    }
}
