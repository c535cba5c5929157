//! The trainer: its gradient against finite differences, convergence on a separable set,
//! both schedules, resume.

use ndarray::Array2;
use reveal_nn::{forward, Activation, Biases, Init, Mlp};
use reveal_tape::check::{gradcheck, randn, Rng};
use reveal_train::{
    evaluate, train, Control, Loss, Objective, Outcome, Schedule, TrainConfig, TrainState,
};

/// A separable set: the label is the sign of the first coordinate (kept away from 0).
fn separable(n: usize, d: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut x = randn((n, d), &mut Rng::seed(seed));
    let y = Array2::from_shape_fn((n, 1), |(i, _)| if i % 2 == 0 { -1.0 } else { 1.0 });
    for i in 0..n {
        x[[i, 0]] = y[[i, 0]] * (0.5 + x[[i, 0]].abs());
    }
    (x, y)
}

/// ∂L/∂θ of the logistic loss through the tape against central differences (f64, small widths),
/// for a first-layer bias and for a bias in every layer (PyTorch's default init).
#[test]
fn training_loss_gradient_passes_gradcheck() {
    let (x, y) = separable(6, 4, 1);
    // The papers' small init has a first layer of 1e-4, too flat for finite differences:
    // W1 and b1 scaled up. PyTorch's default init with a bias in every layer as it is.
    let mut small = Mlp::<f64>::init(4, &[5, 3], 2);
    small.weights[0].mapv_inplace(|v| v * 3e3);
    small.biases[0].mapv_inplace(|v| v * 3e3);
    let all = Mlp::<f64>::init_with(4, &[5, 3], 1, Init::Default, Biases::All, 2);
    for m in [&small, &all] {
        let params: Vec<Array2<f64>> = m.params().into_iter().cloned().collect();
        let (xc, yc, layout) = (x.clone(), y.clone(), m.layout());
        let r = gradcheck(
            move |t, v| {
                let f = forward(v, &layout, t.constant(xc.clone()), Activation::Relu);
                vec![(-(f * t.constant(yc.clone())))
                    .softplus()
                    .sum()
                    .scale(1.0 / 6.0)]
            },
            &params,
            3,
        );
        assert!(r.is_ok(), "{:?}: {}", m.bias_layout(), r.unwrap_err());
    }
    // The trainer's own evaluate() returns the plain forward's loss.
    for m in [&small, &all] {
        let e = evaluate(m, &x, &y, Objective::logistic(0.0));
        let direct: f64 = (m.predict(x.view()) * &y)
            .mapv(|t| (1.0 + (-t).exp()).ln())
            .mean()
            .unwrap();
        assert!((e.loss - direct).abs() < 1e-12, "{} vs {direct}", e.loss);
    }
}

#[test]
fn both_schedules_reach_zero_error_on_a_separable_set() {
    let (x, y) = separable(20, 6, 4);
    for (schedule, cap) in [
        (Schedule::FAST, 5000),
        (Schedule::Reference { lr: 0.5 }, 200_000),
    ] {
        let mut state = TrainState::new(Mlp::<f64>::init(6, &[16, 16], 5), schedule);
        let cfg = TrainConfig {
            schedule,
            target_loss: 1e-3,
            max_epochs: cap,
            weight_decay: 0.0,
            ..TrainConfig::fast(0.0, 0)
        };
        let outcome = train(&mut state, &x, &y, &cfg, |_| Control::Continue);
        assert_eq!(
            outcome,
            Outcome::Converged,
            "{schedule:?} after {} epochs, loss {}",
            state.epoch,
            state.loss
        );
        assert_eq!(state.error, 0.0);
        assert!(state.loss < 1e-3);
    }
}

#[test]
fn fast_schedule_is_much_faster_than_the_reference() {
    let (x, y) = separable(20, 6, 6);
    let epochs = |schedule| {
        let mut s = TrainState::new(Mlp::<f64>::init(6, &[16, 16], 7), schedule);
        train(
            &mut s,
            &x,
            &y,
            &TrainConfig {
                schedule,
                target_loss: 1e-4,
                max_epochs: 300_000,
                weight_decay: 0.0,
                ..TrainConfig::fast(0.0, 0)
            },
            |_| Control::Continue,
        );
        s.epoch
    };
    let (fast, reference) = (
        epochs(Schedule::FAST),
        epochs(Schedule::Reference { lr: 0.5 }),
    );
    assert!(
        fast * 10 < reference,
        "fast {fast} epochs, reference {reference}"
    );
}

/// Stopping and continuing gives exactly the run that never stopped.
#[test]
fn stopped_and_resumed_equals_uninterrupted() {
    let (x, y) = separable(10, 5, 8);
    let cfg = TrainConfig {
        schedule: Schedule::FAST,
        target_loss: 1e-6,
        max_epochs: 400,
        weight_decay: 0.0,
        ..TrainConfig::fast(0.0, 0)
    };
    let init = || TrainState::new(Mlp::<f64>::init(5, &[8, 8], 9), Schedule::FAST);
    let mut whole = init();
    train(&mut whole, &x, &y, &cfg, |_| Control::Continue);
    let mut part = init();
    let out = train(&mut part, &x, &y, &cfg, |s| {
        if s.epoch == 37 {
            Control::Stop
        } else {
            Control::Continue
        }
    });
    assert_eq!(out, Outcome::Stopped);
    train(&mut part, &x, &y, &cfg, |_| Control::Continue);
    assert_eq!(part.mlp(), whole.mlp());
    assert_eq!((part.epoch, part.c), (whole.epoch, whole.c));
}

/// A set no net can fit (the same point with both labels): in f32 the fast schedule soon runs
/// out of step sizes that lower the loss and says it stalled, not that it diverged.
#[test]
fn an_unfittable_set_stalls() {
    let (mut x, y) = separable(4, 3, 6);
    let row = x.row(0).to_owned();
    x.row_mut(1).assign(&row); // rows 0 and 1 have labels −1 and +1
    let (x, y) = (x.mapv(|v| v as f32), y.mapv(|v| v as f32));
    let mut state = TrainState::new(Mlp::<f32>::init(3, &[8, 8], 7), Schedule::FAST);
    let cfg = TrainConfig {
        schedule: Schedule::FAST,
        target_loss: 1e-5,
        max_epochs: 100_000,
        weight_decay: 0.0,
        ..TrainConfig::fast(0.0, 0)
    };
    let outcome = train(&mut state, &x, &y, &cfg, |_| Control::Continue);
    assert_eq!(outcome, Outcome::Stalled, "loss {}", state.loss);
    assert!(state.loss.is_finite() && state.loss > 0.1);
}

/// A three-class set: class c sits around the direction e_c (kept apart), labels 0, 1, 2.
fn three_classes(n: usize, d: usize, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let mut x = randn((n, d), &mut Rng::seed(seed)).mapv(|v| 0.3 * v);
    let y = Array2::from_shape_fn((n, 1), |(i, _)| (i % 3) as f64);
    for i in 0..n {
        x[[i, i % 3]] += 2.0;
    }
    (x, y)
}

/// The cross-entropy loss plus (wd/2)‖θ‖², written out with ndarray (no tape).
fn cross_entropy_by_hand(m: &Mlp<f64>, x: &Array2<f64>, y: &Array2<f64>, wd: f64) -> f64 {
    let f = m.predict(x.view());
    let per_sample: f64 = f
        .rows()
        .into_iter()
        .zip(y.column(0))
        .map(|(row, &label)| {
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            lse - row[label as usize]
        })
        .sum();
    let norm2: f64 = m.params().iter().map(|p| p.mapv(|v| v * v).sum()).sum();
    per_sample / x.nrows() as f64 + wd / 2.0 * norm2
}

/// Each gradient entry against the central difference of `loss` (written by hand) in that
/// parameter: eps 1e-6, atol 1e-5, rtol 1e-3, as PyTorch's gradcheck.
fn matches_central_differences(
    m: &Mlp<f64>,
    grads: &[Array2<f64>],
    loss: impl Fn(&Mlp<f64>) -> f64,
) {
    let eps = 1e-6;
    for (p, g) in grads.iter().enumerate() {
        for (idx, &analytic) in g.indexed_iter() {
            let at = |delta: f64| {
                let mut moved = m.clone();
                moved.params_mut()[p][idx] += delta;
                loss(&moved)
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (analytic - numeric).abs() <= 1e-5 + 1e-3 * numeric.abs(),
                "parameter {p} at {idx:?}: tape {analytic}, central difference {numeric}"
            );
        }
    }
}

/// The C-output loss with weight decay: the trainer's value and ∂L/∂θ against the loss written
/// by hand and its central differences (f64, eps 1e-6, atol 1e-5, rtol 1e-3).
#[test]
fn cross_entropy_with_weight_decay_matches_the_loss_by_hand() {
    let (x, y) = three_classes(9, 4, 3);
    let mut m = Mlp::<f64>::init_classes(4, &[6, 5], 3, 4);
    m.weights[0].mapv_inplace(|v| v * 3e3);
    m.biases[0].mapv_inplace(|v| v * 3e3);
    let wd = 0.05;
    let e = evaluate(&m, &x, &y, Objective::logistic(wd));
    assert!((e.loss - cross_entropy_by_hand(&m, &x, &y, wd)).abs() < 1e-12);
    matches_central_differences(&m, &e.grads, |m| cross_entropy_by_hand(m, &x, &y, wd));
    // The error counts margins Φ_y − max_{j≠y} Φ_j ≤ 0, i.e. wrong or tied argmax.
    let f = m.predict(x.view());
    let wrong = (0..9)
        .filter(|&i| {
            let label = y[[i, 0]] as usize;
            (0..3).any(|j| j != label && f[[i, j]] >= f[[i, label]])
        })
        .count();
    assert_eq!(e.error, wrong as f64 / 9.0);
}

/// L = (1/n) Σ_i ‖Φ(x_i) − t_i‖² + (wd/2)‖θ‖², written by hand (t = y for one output, one-hot
/// for C).
fn squared_by_hand(m: &Mlp<f64>, x: &Array2<f64>, y: &Array2<f64>, wd: f64) -> f64 {
    let f = m.predict(x.view());
    let c = f.ncols();
    let per_sample: f64 = f
        .indexed_iter()
        .map(|((i, j), &v)| {
            let t = match c {
                1 => y[[i, 0]],
                _ => (y[[i, 0]] as usize == j) as u8 as f64,
            };
            (v - t).powi(2)
        })
        .sum();
    let norm2: f64 = m.params().iter().map(|p| p.mapv(|v| v * v).sum()).sum();
    per_sample / x.nrows() as f64 + wd / 2.0 * norm2
}

/// The squared loss with weight decay, of one output (±1 targets) and of three (one-hot): the
/// trainer's value and ∂L/∂θ against the loss by hand and its central differences (f64, eps
/// 1e-6, atol 1e-5, rtol 1e-3).
#[test]
fn the_squared_loss_matches_the_loss_by_hand() {
    let objective = Objective {
        loss: Loss::Squared,
        weight_decay: 0.05,
    };
    let (x1, y1) = separable(6, 4, 1);
    let (x3, y3) = three_classes(9, 4, 3);
    for (x, y, outputs) in [(x1, y1, 1), (x3, y3, 3)] {
        let m = Mlp::<f64>::init_with(4, &[5, 3], outputs, Init::Default, Biases::All, 2);
        let e = evaluate(&m, &x, &y, objective);
        let by_hand = squared_by_hand(&m, &x, &y, objective.weight_decay);
        assert!(
            (e.loss - by_hand).abs() < 1e-12,
            "C={outputs}: {} vs {by_hand}",
            e.loss
        );
        matches_central_differences(&m, &e.grads, |m| {
            squared_by_hand(m, &x, &y, objective.weight_decay)
        });
    }
}

/// Three classes train to zero error; with weight decay, training ends near a stationary point of
/// the regularised loss (where the KKT form θ = Σ λ_i ∇θ m_i holds): ‖∇L‖ ≪ ‖wd·θ‖.
#[test]
fn three_classes_train_to_zero_error_and_weight_decay_to_a_stationary_point() {
    let (x, y) = three_classes(30, 6, 8);
    let norm = |a: &[Array2<f64>]| {
        a.iter()
            .map(|p| p.mapv(|v| v * v).sum())
            .sum::<f64>()
            .sqrt()
    };
    let mut theta_norms = Vec::new();
    for wd in [0.0, 1e-3] {
        let mut state =
            TrainState::new(Mlp::<f64>::init_classes(6, &[16, 16], 3, 5), Schedule::FAST);
        let cfg = TrainConfig {
            schedule: Schedule::FAST,
            target_loss: 1e-3,
            max_epochs: 20_000,
            weight_decay: wd,
            ..TrainConfig::fast(0.0, 0)
        };
        let outcome = train(&mut state, &x, &y, &cfg, |_| Control::Continue);
        assert_eq!(state.error, 0.0, "wd {wd}: {outcome:?}");
        let e = evaluate(&state.mlp(), &x, &y, Objective::logistic(wd));
        let params: Vec<Array2<f64>> = state.mlp().params().into_iter().cloned().collect();
        theta_norms.push(norm(&params));
        if wd == 0.0 {
            assert_eq!(outcome, Outcome::Converged);
            assert!(e.loss < 1e-3);
        } else {
            let (g, pull) = (norm(&e.grads), wd * norm(&params));
            assert!(
                g < 0.05 * pull,
                "{outcome:?}: ‖∇L‖ {g:e} against ‖wd·θ‖ {pull:e}"
            );
            // The decay term is part of the loss the trainer lowered.
            assert!(e.loss >= wd / 2.0 * norm(&params).powi(2));
        }
    }
    // Ignoring wd would make the two runs identical: decay must leave θ smaller.
    assert!(
        theta_norms[1] < theta_norms[0],
        "‖θ‖ with weight decay {} against {} without",
        theta_norms[1],
        theta_norms[0]
    );
}

/// A mini-batch recipe on the whole set as one batch, so each step's gradient is `evaluate`'s.
fn one_batch(schedule: Schedule, wd: f64, epochs: usize) -> TrainConfig {
    TrainConfig {
        schedule,
        target_loss: 0.0,
        max_epochs: epochs,
        weight_decay: wd,
        init: Init::Default,
        biases: Biases::All,
        loss: Loss::Logistic,
    }
}

/// PyTorch's update rules, written out by hand from `evaluate`'s gradients (with wd·θ in them):
/// SGD with momentum over two steps, Adam over two steps with its bias corrections.
#[test]
fn sgd_and_adam_steps_follow_pytorch_rules() {
    let (x, y) = separable(8, 4, 3);
    let m0 = Mlp::<f64>::init_with(4, &[6, 5], 1, Init::Default, Biases::All, 4);
    let wd = 0.01;
    let grads = |m: &Mlp<f64>| evaluate(m, &x, &y, Objective::logistic(wd)).grads;
    let step = |m: &Mlp<f64>, delta: &dyn Fn(usize, usize, f64) -> f64| {
        let mut out = m.clone();
        for (p, t) in out.params_mut().into_iter().enumerate() {
            for (i, v) in t.iter_mut().enumerate() {
                *v += delta(p, i, *v);
            }
        }
        out
    };
    let flat = |g: &[Array2<f64>], p: usize, i: usize| g[p].iter().nth(i).copied().unwrap();
    let run = |schedule| {
        let mut s = TrainState::new(m0.clone(), schedule);
        train(&mut s, &x, &y, &one_batch(schedule, wd, 2), |_| {
            Control::Continue
        });
        s.mlp()
    };
    let close = |a: &Mlp<f64>, b: &Mlp<f64>, what: &str| {
        for (p, q) in a.params().iter().zip(b.params()) {
            let diff = (*p - q).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
            assert!(diff < 1e-12, "{what}: max difference {diff:e}");
        }
    };

    // SGD: v1 = g0, θ1 = θ0 − lr·v1; v2 = μ·v1 + g1, θ2 = θ1 − lr·v2.
    let (lr, mu) = (0.05, 0.9);
    let g0 = grads(&m0);
    let m1 = step(&m0, &|p, i, _| -lr * flat(&g0, p, i));
    let g1 = grads(&m1);
    let m2 = step(&m1, &|p, i, _| {
        -lr * (mu * flat(&g0, p, i) + flat(&g1, p, i))
    });
    let sgd = Schedule::Sgd {
        lr,
        momentum: mu,
        batch_size: 8,
    };
    close(&run(sgd), &m2, "sgd");

    // Adam: m_t = β1·m + (1−β1)·g, v_t = β2·v + (1−β2)·g², θ −= lr·m̂/(√v̂ + ε).
    let (b1, b2, eps, lr): (f64, f64, f64, f64) = (0.9, 0.999, 1e-8, 1e-2);
    let adam_delta = |ms: &[f64], vs: &[f64], t: i32| {
        let (mh, vh) = (ms[0] / (1.0 - b1.powi(t)), vs[0] / (1.0 - b2.powi(t)));
        -lr * mh / (vh.sqrt() + eps)
    };
    let a1 = step(&m0, &|p, i, _| {
        let g = flat(&g0, p, i);
        adam_delta(&[(1.0 - b1) * g], &[(1.0 - b2) * g * g], 1)
    });
    let h1 = grads(&a1);
    let a2 = step(&a1, &|p, i, _| {
        let (g, h) = (flat(&g0, p, i), flat(&h1, p, i));
        let m = b1 * (1.0 - b1) * g + (1.0 - b1) * h;
        let v = b2 * (1.0 - b2) * g * g + (1.0 - b2) * h * h;
        adam_delta(&[m], &[v], 2)
    });
    close(&run(Schedule::Adam { lr, batch_size: 8 }), &a2, "adam");
}

/// Mini-batch SGD and Adam from PyTorch's init, with a bias in every layer, fit a separable set;
/// stopping and continuing (moments and shuffles included) gives the run that never stopped.
#[test]
fn minibatch_recipes_fit_and_resume_exactly() {
    let (x, y) = separable(24, 5, 12);
    for schedule in [
        Schedule::Sgd {
            lr: 0.05,
            momentum: 0.9,
            batch_size: 5,
        },
        Schedule::Adam {
            lr: 1e-2,
            batch_size: 5,
        },
    ] {
        let cfg = one_batch(schedule, 5e-4, 60);
        let init = || {
            let mut s = TrainState::new(cfg.init_model::<f64>(5, &[16, 16], 1, 3), schedule);
            s.shuffle_seed = 3;
            s
        };
        let mut whole = init();
        let outcome = train(&mut whole, &x, &y, &cfg, |_| Control::Continue);
        assert_eq!(outcome, Outcome::EpochCap, "{schedule:?}");
        assert_eq!(whole.error, 0.0, "{schedule:?}: loss {}", whole.loss);
        assert_eq!(
            whole.steps,
            60 * 5,
            "{schedule:?}: 24 samples in batches of 5"
        );
        let mut part = init();
        let stop = train(&mut part, &x, &y, &cfg, |s| match s.epoch {
            17 => Control::Stop,
            _ => Control::Continue,
        });
        assert_eq!(stop, Outcome::Stopped);
        train(&mut part, &x, &y, &cfg, |_| Control::Continue);
        assert_eq!(part.mlp(), whole.mlp(), "{schedule:?}");
    }
}
