//! The best multipliers at known samples: the conjugate-gradient fit solves the normal equations
//! of L_kkt(λ), no other λ does better, and the forms nest (signed ⊇ pairs ⊇ margin); at a real
//! model trained with weight decay the form of its own loss fits it best by far.

use ndarray::Array2;
use reveal_nn::{Activation, Mlp};
use reveal_recon::stationarity::{fit_multipliers, Fit};
use reveal_recon::{candidate_labels_for, evaluate_with, Method, Multipliers, ObjectiveConfig};
use reveal_tape::check::{randn, Rng};
use reveal_train::{train, Control, Loss, Schedule, TrainConfig, TrainState};

const FORMS: [Multipliers; 3] = [Multipliers::Margin, Multipliers::Pairs, Multipliers::Signed];

/// ∂L_kkt/∂λ and L_kkt at λ (exact ReLU, no prior), as the fit sees them.
fn kkt_at(
    net: &Mlp<f64>,
    x: &Array2<f64>,
    y: &Array2<f64>,
    form: Multipliers,
    lambda: &Array2<f64>,
) -> (Array2<f64>, f64) {
    let cfg = ObjectiveConfig {
        activation: Activation::Relu,
        lambda_min: f64::MIN,
        multipliers: form,
    };
    let e = evaluate_with(Method::GradOfGrad, &net.theta(), x, lambda, y, cfg);
    (e.grad_lambda, e.terms.kkt)
}

#[test]
fn the_fit_solves_the_normal_equations_and_no_other_multipliers_do_better() {
    let (d, n, outputs) = (9, 6, 3);
    let mut rng = Rng::seed(3);
    let mut net = Mlp::<f64>::init_classes(d, &[7, 6], outputs, 1);
    for p in net.params_mut() {
        *p = randn(p.dim(), &mut rng) * 0.5;
    }
    let x = randn((n, d), &mut rng);
    let y = candidate_labels_for(n, outputs);
    let norm = |a: &Array2<f64>| a.mapv(|v| v * v).sum().sqrt();
    let mut residuals = Vec::new();
    for form in FORMS {
        let fit = fit_multipliers(&net.theta(), &x, &y, form, 200, 1e-13);
        let zero = Array2::zeros(fit.lambda.dim());
        let (g0, _) = kkt_at(&net, &x, &y, form, &zero);
        let (g, best) = kkt_at(&net, &x, &y, form, &fit.lambda);
        assert!(
            norm(&g) <= 1e-8 * norm(&g0),
            "{form:?}: ∇λ L_kkt {:e} at the fit, {:e} at 0",
            norm(&g),
            norm(&g0)
        );
        for k in 0..5 {
            let nudged = &fit.lambda + &(randn(fit.lambda.dim(), &mut Rng::seed(10 + k)) * 0.05);
            let (_, other) = kkt_at(&net, &x, &y, form, &nudged);
            assert!(
                best <= other,
                "{form:?}: the fit {best} above a nudged λ {other}"
            );
        }
        residuals.push(fit.residual);
    }
    // The spans nest, signed ⊇ pairs ⊇ margin, so the best residuals fall in that order.
    assert!(
        residuals[2] <= residuals[1] + 1e-12 && residuals[1] <= residuals[0] + 1e-12,
        "residuals margin, pairs, signed: {residuals:?}"
    );
}

/// A three-class set: class c sits around the direction e_c, labels 0, 1, 2.
fn three_classes(n: usize, d: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut x = randn((n, d), &mut Rng::seed(seed)).mapv(|v| 0.3 * v);
    let y = Array2::from_shape_fn((n, 1), |(i, _)| (i % 3) as f64);
    for i in 0..n {
        x[[i, i % 3]] += 2.0;
    }
    (x, y)
}

/// A model of `loss` with weight decay 1e-2, trained by full-batch descent at a constant rate.
fn trained(loss: Loss, x: &Array2<f64>, y: &Array2<f64>) -> Mlp<f64> {
    let schedule = Schedule::Reference { lr: 0.02 };
    let mut state = TrainState::new(
        Mlp::<f64>::init_classes(x.ncols(), &[10, 10], 3, 5),
        schedule,
    );
    let cfg = TrainConfig {
        schedule,
        weight_decay: 1e-2,
        loss,
        ..TrainConfig::fast(0.0, 50_000)
    };
    train(&mut state, x, y, &cfg, |_| Control::Continue);
    assert_eq!(state.error, 0.0, "{loss:?}: training error {}", state.error);
    state.mlp()
}

/// Cross-entropy with weight decay is fitted best by the pairs form, the squared loss by the
/// signed form, each leaving well under half the residual of the margin form (measured
/// 2026-12-06: CE 0.061 against 0.285, squared 0.056 against 0.434). Neither model is exactly
/// stationary: in trials at learning rates 0.005–0.2, up to 200,000 epochs, full-batch descent
/// on these ReLU nets left ‖∇L‖ at 2–22 % of ‖wd·θ‖, not falling with the rate (it chatters at
/// the ReLU's kinks), so no form fits to zero.
#[test]
fn a_model_trained_with_weight_decay_is_fitted_best_by_its_own_form() {
    let (x, y) = three_classes(12, 20, 8);
    for (loss, own) in [
        (Loss::Logistic, Multipliers::Pairs),
        (Loss::Squared, Multipliers::Signed),
    ] {
        let model = trained(loss, &x, &y);
        let fit = |form| -> Fit { fit_multipliers(&model.theta(), &x, &y, form, 500, 1e-12) };
        let (margin, mine) = (fit(Multipliers::Margin), fit(own));
        eprintln!(
            "{loss:?}: margin {:.3e}, {own:?} {:.3e}",
            margin.residual, mine.residual
        );
        assert!(
            mine.residual < 0.5 * margin.residual,
            "{loss:?}: {own:?} leaves {:.3e}, the margin form {:.3e}",
            mine.residual,
            margin.residual
        );
    }
}
