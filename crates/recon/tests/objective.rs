//! The KKT objective through the tape's grad-of-grad, checked three ways:
//! against an independent closed-form implementation written by hand in ndarray, against finite
//! differences where the objective is a true function (exact ReLU, softplus_α), and — for the
//! modified ReLU, whose x-gradient is a surrogate — the checks (b) and (c) of docs/DESIGN.md §2.

use ndarray::Array2;
use reveal_nn::{forward, Activation, Biases, Mlp};
use reveal_recon::closed_form::closed_form;
use reveal_recon::objective::{evaluate, evaluate_with, record, Method};
use reveal_recon::terms::{candidate_labels, candidate_labels_for, Multipliers, ObjectiveConfig};
use reveal_tape::check::{gradcheck, gradgradcheck, randn, Rng};
use reveal_tape::{grad, Tape, Var};

/// A small d-h-h-1 model with weights large enough that every term matters.
fn model(d: usize, h: usize, seed: u64) -> Mlp<f64> {
    model_with_outputs(d, h, 1, seed)
}

/// [`model`] with C outputs.
fn model_with_outputs(d: usize, h: usize, outputs: usize, seed: u64) -> Mlp<f64> {
    model_with(d, h, outputs, Biases::First, seed)
}

/// [`model_with_outputs`] with a bias in the first layer only or in every layer.
fn model_with(d: usize, h: usize, outputs: usize, biases: Biases, seed: u64) -> Mlp<f64> {
    let mut rng = Rng::seed(seed);
    let weights = vec![
        randn((h, d), &mut rng) * 0.5,
        randn((h, h), &mut rng) * 0.5,
        randn((outputs, h), &mut rng) * 0.5,
    ];
    let mut biases_of = vec![randn((1, h), &mut rng) * 0.3];
    if biases == Biases::All {
        biases_of.push(randn((1, h), &mut rng) * 0.3);
        biases_of.push(randn((1, outputs), &mut rng) * 0.3);
    }
    Mlp {
        weights,
        biases: biases_of,
        features: None,
    }
}

/// Candidates with some entries beyond ±1 (so L_x is active) and λ around λ_min.
fn candidates(m: usize, d: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut rng = Rng::seed(seed);
    let x = randn((m, d), &mut rng) * 0.9;
    let lambda = randn((m, 1), &mut rng).mapv(|t| 0.4 + 0.3 * t);
    (x, lambda)
}

/// Multipliers of the form `form` for m candidates of a C-output model: the margin form's λ of
/// [`candidates`]; pairs, around λ_min at every class; signed, of either sign.
fn multipliers(form: Multipliers, m: usize, outputs: usize, seed: u64) -> Array2<f64> {
    let mut rng = Rng::seed(seed);
    let columns = form.columns(outputs);
    match form.for_outputs(outputs) {
        Multipliers::Signed => randn((m, columns), &mut rng),
        _ => randn((m, columns), &mut rng).mapv(|t| 0.4 + 0.3 * t),
    }
}

const FORMS: [Multipliers; 3] = [Multipliers::Margin, Multipliers::Pairs, Multipliers::Signed];

fn rel_err(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let diff = (a - b).mapv(|v| v * v).sum().sqrt();
    diff / b.mapv(|v| v * v).sum().sqrt().max(1e-300)
}

#[test]
fn grad_of_grad_matches_closed_form_for_every_activation() {
    for outputs in [1, 2, 4] {
        for form in FORMS {
            agrees_with_closed_form(outputs, form);
        }
    }
}

/// One output (labels ±1) or C outputs (labels = class indices in blocks, margin against the
/// runner-up), each multiplier form: both tape paths against the closed form, f64, 1e-12 on L
/// and 1e-10 on ∇.
fn agrees_with_closed_form(outputs: usize, form: Multipliers) {
    let (d, h, m) = (7, 6, 8);
    for (seed, act) in [
        Activation::ModifiedRelu(19.2),
        Activation::ModifiedRelu(3.0),
        Activation::Relu,
        Activation::Softplus(5.0),
    ]
    .into_iter()
    .enumerate()
    {
        let net = model_with_outputs(d, h, outputs, seed as u64);
        let (x, _) = candidates(m, d, 10 + seed as u64);
        let lambda = multipliers(form, m, outputs, 20 + seed as u64);
        let y = candidate_labels_for(m, outputs);
        let cfg = ObjectiveConfig {
            activation: act,
            lambda_min: 0.45,
            multipliers: form,
        };
        // Without and with an origin θ0 (the weights before training): L_kkt fits θ − θ0.
        let start = model_with_outputs(d, h, outputs, 100 + seed as u64);
        // A guard that the case with θ0 tests something: it moves L.
        let plain = closed_form(&net, None, &x, &lambda, &y, act, 0.45, form).0;
        let from_start = closed_form(&net, Some(&start), &x, &lambda, &y, act, 0.45, form).0;
        assert!(
            (plain - from_start).abs() > 1e-3 * plain.abs(),
            "θ0 leaves L at {plain}"
        );
        for (origin, theta) in [
            (None, net.theta()),
            (Some(&start), net.theta().with_origin(&start)),
        ] {
            let (l, gx, gl) = closed_form(&net, origin, &x, &lambda, &y, act, 0.45, form);
            for method in [Method::GradOfGrad, Method::Gram] {
                let tape_eval = evaluate_with(method, &theta, &x, &lambda, &y, cfg);
                let t = tape_eval.terms;
                assert!(
                    (t.total - l).abs() <= 1e-12 * l.abs(),
                    "C={outputs} {form:?} {act:?} {method:?} origin {}: L tape {} vs closed form {l}",
                    origin.is_some(),
                    t.total
                );
                let signed = form == Multipliers::Signed;
                assert!(
                    t.prior_x > 0.0 && (t.prior_lambda > 0.0) != signed,
                    "{form:?} {act:?}: L_x and (but for signed multipliers) L_λ should be active: {t:?}"
                );
                let (ex, el) = (
                    rel_err(&tape_eval.grad_x, &gx),
                    rel_err(&tape_eval.grad_lambda, &gl),
                );
                assert!(
                    ex < 1e-10 && el < 1e-10,
                    "C={outputs} {form:?} {act:?} {method:?} origin {}: relative error ∂x {ex:e}, ∂λ {el:e}",
                    origin.is_some()
                );
            }
        }
    }
}

/// The closed form is itself right: it differs from the tape when the second-order rule of the
/// modified ReLU is dropped (a guard that the comparison above can fail).
#[test]
fn closed_form_sees_the_second_order_term() {
    let (d, h, m) = (5, 4, 6);
    let net = model(d, h, 3);
    let (x, lambda) = candidates(m, d, 4);
    let y = candidate_labels(m);
    let cfg = ObjectiveConfig {
        activation: Activation::ModifiedRelu(8.0),
        lambda_min: 0.45,
        multipliers: Multipliers::Margin,
    };
    let tape_eval = evaluate_with(Method::GradOfGrad, &net.theta(), &x, &lambda, &y, cfg);
    // Exact ReLU derivative rules in the closed form (no σ anywhere): must disagree clearly.
    let (_, gx_step, _) = closed_form(
        &net,
        None,
        &x,
        &lambda,
        &y,
        Activation::Relu,
        0.45,
        Multipliers::Margin,
    );
    assert!(rel_err(&tape_eval.grad_x, &gx_step) > 1e-3);
}

/// L as a function on the tape, for the gradient checkers: of (x, λ), or of λ alone with x fixed.
fn objective_fn(
    net: &Mlp<f64>,
    act: Activation<f64>,
    fixed_x: Option<&Array2<f64>>,
) -> impl for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>> + Clone {
    objective_fn_with(net, act, fixed_x, Multipliers::Margin)
}

/// [`objective_fn`] with multipliers of the form `form`.
fn objective_fn_with(
    net: &Mlp<f64>,
    act: Activation<f64>,
    fixed_x: Option<&Array2<f64>>,
    form: Multipliers,
) -> impl for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Vec<Var<'t, f64>> + Clone {
    let net = net.clone();
    let fixed_x = fixed_x.cloned();
    move |t, v| {
        let theta = net.on_tape(t);
        let (x, lambda) = match &fixed_x {
            None => (v[0], v[1]),
            Some(x) => (t.constant(x.clone()), v[0]),
        };
        let y = t.constant(candidate_labels_for(x.shape().0, net.outputs()));
        let cfg = ObjectiveConfig {
            activation: act,
            lambda_min: 0.45,
            multipliers: form,
        };
        vec![record(&theta, None, &net.layout(), x, lambda, y, cfg).total]
    }
}

/// Check (b), and the exact-ReLU objective: the whole L passes gradcheck in (x, λ); with
/// softplus_α it also passes gradgradcheck (third derivatives through the tape).
#[test]
fn objective_passes_gradcheck_with_true_activations() {
    let (d, h, m) = (4, 5, 4);
    for (outputs, biases) in [
        (1, Biases::First),
        (3, Biases::First),
        (1, Biases::All),
        (3, Biases::All),
    ] {
        let net = model_with(d, h, outputs, biases, 21);
        let (x, lambda) = candidates(m, d, 22);
        for act in [Activation::Relu, Activation::Softplus(4.0)] {
            let f = objective_fn(&net, act, None);
            let r = gradcheck(f, &[x.clone(), lambda.clone()], 7);
            assert!(
                r.is_ok(),
                "C={outputs} {biases:?} {act:?}: {}",
                r.unwrap_err()
            );
        }
        let f = objective_fn(&net, Activation::Softplus(4.0), None);
        let r = gradgradcheck(f, &[x.clone(), lambda.clone()], 8);
        assert!(
            r.is_ok(),
            "C={outputs} {biases:?} gradgradcheck softplus: {}",
            r.unwrap_err()
        );
    }
}

/// Check (c): under the modified ReLU, λ enters linearly, so ∂L/∂λ is a true derivative: for
/// every multiplier form, of one output and of three.
#[test]
fn lambda_gradient_under_modified_relu_passes_gradcheck() {
    let (d, h, m) = (5, 6, 6);
    for outputs in [1, 3] {
        let net = model_with_outputs(d, h, outputs, 31);
        let (x, _) = candidates(m, d, 32);
        for form in FORMS {
            let lambda = multipliers(form, m, outputs, 33);
            let f = objective_fn_with(&net, Activation::ModifiedRelu(19.2), Some(&x), form);
            let r = gradcheck(f, &[lambda], 9);
            assert!(r.is_ok(), "C={outputs} {form:?}: {}", r.unwrap_err());
        }
    }
}

/// The whole L of the pairs and signed forms in (x, λ) with true activations: gradcheck, and
/// with softplus_α gradgradcheck.
#[test]
fn every_multiplier_form_passes_gradcheck_and_gradgradcheck() {
    let (d, h, m) = (4, 5, 4);
    for form in [Multipliers::Pairs, Multipliers::Signed] {
        for outputs in [1, 3] {
            let net = model_with_outputs(d, h, outputs, 61);
            let (x, _) = candidates(m, d, 62);
            let lambda = multipliers(form, m, outputs, 63);
            let f = objective_fn_with(&net, Activation::Relu, None, form);
            let r = gradcheck(f, &[x.clone(), lambda.clone()], 11);
            assert!(r.is_ok(), "C={outputs} {form:?} relu: {}", r.unwrap_err());
            let f = objective_fn_with(&net, Activation::Softplus(4.0), None, form);
            let r = gradgradcheck(f, &[x.clone(), lambda.clone()], 12);
            assert!(
                r.is_ok(),
                "C={outputs} {form:?} gradgradcheck: {}",
                r.unwrap_err()
            );
        }
    }
}

/// The surrogate really differs from the true derivative in x (docs/DESIGN.md: by 2–180 %), so a
/// finite-difference check in x would be the wrong test for it.
#[test]
fn modified_relu_x_gradient_is_a_surrogate() {
    let (d, h, m) = (5, 6, 6);
    let net = model(d, h, 41);
    let (x, lambda) = candidates(m, d, 42);
    let f = objective_fn(&net, Activation::ModifiedRelu(19.2), None);
    assert!(gradcheck(f, &[x, lambda], 10).is_err());
}

/// With a bias in every layer, L_kkt is Σ_p ‖θ_p − ∇_{θ_p}Φ‖² over all 2L tensors: the same sum
/// built by hand from a plain first-order backward of Φ (no create_graph), tensor by tensor.
#[test]
fn every_bias_has_its_residual_in_l_kkt() {
    let (d, h, m) = (5, 4, 6);
    for outputs in [1, 3] {
        let net = model_with(d, h, outputs, Biases::All, 51);
        assert_eq!(net.params().len(), 6);
        let (x, lambda) = candidates(m, d, 52);
        let y = candidate_labels_for(m, outputs);
        let cfg = ObjectiveConfig {
            activation: Activation::Softplus(4.0),
            lambda_min: 0.45,
            multipliers: Multipliers::Margin,
        };
        let tape = Tape::new();
        let theta = net.on_tape(&tape);
        let (xv, lv, yv) = (
            tape.constant(x.clone()),
            tape.constant(lambda.clone()),
            tape.constant(y.clone()),
        );
        let kkt = record(&theta, None, &net.layout(), xv, lv, yv, cfg)
            .kkt
            .item();
        // Φ = (1/m) Σ_i λ_i Σ_j S_ij f_ij(x_i), S = y (one output) or the margin signs.
        let f = forward(&theta, &net.layout(), xv, cfg.activation);
        let signs = reveal_nn::margin_signs(f.value().view(), y.view());
        let phi = (f * tape.constant(signs))
            .mul_col(lv)
            .sum()
            .scale(1.0 / m as f64);
        let residuals: Vec<f64> = grad(phi, &theta, false)
            .iter()
            .zip(net.params())
            .map(|(g, p)| (p - &*g.value()).mapv(|v| v * v).sum())
            .collect();
        let by_hand: f64 = residuals.iter().sum();
        assert!(
            (kkt - by_hand).abs() <= 1e-12 * by_hand,
            "C={outputs}: L_kkt {kkt} vs by hand {by_hand}"
        );
        // …and the later biases' residuals (b2, b3 at 3 and 5) are a visible part of it, so the
        // comparison would fail without them.
        assert!(
            residuals[3] + residuals[5] > 1e-3 * by_hand,
            "C={outputs}: residuals {residuals:?}"
        );
    }
}

/// The forms reduce to one another where they should: pairs with one non-zero multiplier per
/// candidate, at its runner-up, and signed multipliers λ_ij = λ_i S_ij give the margin form's
/// L_kkt exactly.
#[test]
fn the_margin_form_is_the_pairs_and_the_signed_form_restricted() {
    let (d, h, m, outputs) = (5, 6, 6, 3);
    let net = model_with_outputs(d, h, outputs, 71);
    let (x, lambda) = candidates(m, d, 72);
    let y = candidate_labels_for(m, outputs);
    let act = Activation::ModifiedRelu(19.2);
    let f = net.predict(x.view());
    let s = reveal_nn::margin_signs(f.view(), y.view());
    let kkt = |form: Multipliers, lambda: &Array2<f64>| {
        let cfg = ObjectiveConfig {
            activation: act,
            lambda_min: 0.45,
            multipliers: form,
        };
        evaluate_with(Method::GradOfGrad, &net.theta(), &x, lambda, &y, cfg)
            .terms
            .kkt
    };
    let margin = kkt(Multipliers::Margin, &lambda);
    let signed = &s * &lambda;
    let pairs = s.mapv(|v| if v < 0.0 { 1.0 } else { 0.0 }) * &lambda;
    for (form, l) in [(Multipliers::Signed, signed), (Multipliers::Pairs, pairs)] {
        let other = kkt(form, &l);
        assert!(
            (other - margin).abs() <= 1e-12 * margin,
            "{form:?}: L_kkt {other} against the margin form's {margin}"
        );
    }
}

/// A CNN (conv with padding, strided conv, pooling, fc) over 1×8×8 images.
fn cnn(outputs: usize, biases: Biases, seed: u64) -> Mlp<f64> {
    let arch: reveal_nn::Arch = "conv:3k3p1,conv:2k2s2,avgpool:2,fc:4".parse().unwrap();
    let input = reveal_nn::Grid {
        channels: 1,
        height: 8,
        width: 8,
    };
    let features = arch.features(input).unwrap().unwrap();
    let mut net = Mlp::init_features(
        features,
        &arch.hidden,
        outputs,
        reveal_nn::Init::Default,
        biases,
        seed,
    );
    net.biases[0].mapv_inplace(|v| 3.0 * v);
    net
}

/// The objective of a CNN through the generic path: L passes gradcheck and gradgradcheck in
/// (x, λ) for every multiplier form; `Method::auto` never takes the Gram path for it; and the
/// ranked residual is the first fully connected layer's, not the first convolution's.
#[test]
fn a_cnn_objective_passes_gradcheck_and_ranks_by_its_first_fc_layer() {
    let m = 4;
    for (outputs, form) in [
        (1, Multipliers::Margin),
        (3, Multipliers::Margin),
        (3, Multipliers::Pairs),
        (1, Multipliers::Signed),
    ] {
        let net = cnn(outputs, Biases::All, 61);
        let (x, _) = candidates(m, 64, 62);
        let lambda = multipliers(form, m, outputs, 63);
        let f = objective_fn_with(&net, Activation::Softplus(4.0), None, form);
        let r = gradcheck(f.clone(), &[x.clone(), lambda.clone()], 9);
        assert!(r.is_ok(), "C={outputs} {form:?}: {}", r.unwrap_err());
        let r = gradgradcheck(f, &[x.clone(), lambda.clone()], 10);
        assert!(r.is_ok(), "C={outputs} {form:?}: {}", r.unwrap_err());
    }
    let net = cnn(1, Biases::First, 64);
    let theta = net.theta();
    assert_eq!(Method::auto(&theta, 1), Method::GradOfGrad);
    assert_eq!(net.layout().first_fc(), 2);
    let (x, lambda) = candidates(m, 64, 65);
    let y = candidate_labels_for(m, 1);
    let cfg = ObjectiveConfig {
        activation: Activation::Softplus(4.0),
        lambda_min: 0.45,
        multipliers: Multipliers::Margin,
    };
    let e = evaluate(&net, &x, &lambda, &y, cfg);
    // ‖W_fc1 − ∇Φ‖² by hand: Φ = (1/m) Σ λ_i y_i f(x_i), its gradient at the fc layer (θ[3]).
    let tape = Tape::new();
    let p = net.on_tape(&tape);
    let f = forward(&p, &net.layout(), tape.constant(x.clone()), cfg.activation);
    let phi = (f * tape.constant(y.clone()))
        .mul_col(tape.constant(lambda.clone()))
        .sum()
        .scale(1.0 / m as f64);
    let g = grad(phi, &p, false);
    let fc = net.layout().weight(2);
    assert_eq!(fc, 3);
    let by_hand = (&*p[fc].value() - &*g[fc].value()).mapv(|v| v * v).sum();
    assert!(
        (e.terms.kkt_w1 - by_hand).abs() <= 1e-12 * by_hand,
        "{} vs {by_hand}",
        e.terms.kkt_w1
    );
}
