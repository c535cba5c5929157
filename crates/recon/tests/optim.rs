//! The optimiser, candidate files and divergence handling.

use ndarray::{array, Array2};
use reveal_nn::Mlp;
use reveal_recon::files::{load_candidates, save_candidates};
use reveal_recon::optim::{
    adam_step, adam_step_shared, momentum_step, run, step, Finish, Hyper, LrSchedule, Optimizer,
    RunConfig, RunState, Stop, StopRule,
};
use reveal_recon::Multipliers;

/// Two steps by hand, lr 0.1, μ 0.9, p₀ = 1:
/// g₁ = 0.5: v₁ = 0.5, p₁ = 1 − 0.1·0.5 = 0.95;
/// g₂ = 0.25: v₂ = 0.9·0.5 + 0.25 = 0.7, p₂ = 0.95 − 0.1·0.7 = 0.88.
#[test]
fn momentum_matches_a_hand_computed_example() {
    let (mut p, mut v) = (array![[1.0f64]], array![[0.0f64]]);
    momentum_step(&mut p, &mut v, &array![[0.5]], 0.1, 0.9);
    assert!((p[[0, 0]] - 0.95).abs() < 1e-15 && (v[[0, 0]] - 0.5).abs() < 1e-15);
    momentum_step(&mut p, &mut v, &array![[0.25]], 0.1, 0.9);
    assert!((p[[0, 0]] - 0.88).abs() < 1e-15 && (v[[0, 0]] - 0.7).abs() < 1e-15);
}

fn small_model() -> Mlp<f64> {
    let mut m = Mlp::<f64>::init(6, &[8, 8], 3);
    m.weights[0].mapv_inplace(|v| v * 5e3); // from the 1e-4 init to a trained-like scale
    m.biases[0].mapv_inplace(|v| v * 5e3);
    m
}

fn config(lr: f64) -> RunConfig {
    RunConfig::new(
        Hyper {
            init_scale: 0.1,
            lr,
            lambda_min: 0.4,
            alpha: 20.0,
        },
        4,
        50,
        7,
    )
}

#[test]
fn init_follows_the_reference() {
    let cfg = RunConfig::new(
        Hyper {
            init_scale: 1e-3,
            lr: 0.1,
            lambda_min: 0.4,
            alpha: 20.0,
        },
        2000,
        1,
        1,
    );
    let s = RunState::<f64>::init(50, &cfg);
    let n = s.x.len() as f64;
    let var = s.x.iter().map(|v| v * v).sum::<f64>() / n;
    assert!((var.sqrt() - 1e-3).abs() < 2e-5, "std {}", var.sqrt());
    assert!(s.lambda.iter().all(|&l| (0.0..1.0).contains(&l)));
    let mean_l = s.lambda.mean().unwrap();
    assert!((mean_l - 0.5).abs() < 0.03);
    assert_eq!(s.y.column(0).to_vec()[..1000], vec![-1.0; 1000][..]);
    assert_eq!(s.y.column(0).to_vec()[1000..], vec![1.0; 1000][..]);
}

#[test]
fn the_loss_falls_over_a_run() {
    let model = small_model();
    let cfg = config(0.01);
    let mut s = RunState::init(6, &cfg);
    let first = step(&model.theta(), &mut s.clone(), &cfg).unwrap().total;
    run(&model.theta(), &mut s, &cfg, |_, _| true).unwrap();
    assert_eq!(s.iter, 50);
    assert!(s.last.unwrap().total < first, "{first} → {:?}", s.last);
}

#[test]
fn divergence_names_the_iteration_and_keeps_finite_candidates() {
    let model = small_model();
    let cfg = config(1e12);
    let mut s = RunState::init(6, &cfg);
    let err = run(&model.theta(), &mut s, &cfg, |_, _| true).unwrap_err();
    let Stop::Diverged { iter, term, .. } = &err else {
        panic!("{err}")
    };
    assert!(*iter > 0 && *iter < 50, "{err}");
    assert!(err.to_string().contains("lower the learning rate") && err.to_string().contains(term));
    assert!(s.x.iter().all(|v| v.is_finite()) && s.lambda.iter().all(|v| v.is_finite()));
    assert_eq!(s.iter, *iter);
}

#[test]
fn candidate_files_round_trip_and_reject_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(0.01);
    let model = small_model();
    let mut s = RunState::<f64>::init(6, &cfg);
    step(&model.theta(), &mut s, &cfg).unwrap();
    let path = dir.path().join("c.safetensors");
    save_candidates(&path, &s, true, &Default::default()).unwrap();
    let back = load_candidates::<f64>(&path).unwrap().into_state();
    // The whole state comes back, Adam's moments and the stopping rule's anchor included.
    let mut adam = s.clone();
    let acfg = RunConfig {
        optimizer: Optimizer::Adam,
        stop: Some(StopRule {
            window: 1,
            tol: 1e-12,
        }),
        ..cfg
    };
    run(
        &model.theta(),
        &mut adam,
        &RunConfig { iters: 3, ..acfg },
        |_, _| true,
    )
    .unwrap();
    assert!(adam.sx[[0, 0]] > 0.0 && adam.anchor.is_some());
    save_candidates(&path, &adam, true, &Default::default()).unwrap();
    assert_eq!(
        load_candidates::<f64>(&path).unwrap().into_state(),
        RunState { last: None, ..adam }
    );
    assert_eq!(
        (
            back.x,
            back.lambda,
            back.y,
            back.vx,
            back.vlambda,
            back.iter
        ),
        (
            s.x.clone(),
            s.lambda.clone(),
            s.y.clone(),
            s.vx.clone(),
            s.vlambda.clone(),
            1
        )
    );

    let mut bad = s.clone();
    bad.y = Array2::from_elem((4, 1), 0.5);
    save_candidates(&path, &bad, false, &Default::default()).unwrap();
    let e = load_candidates::<f64>(&path).err().unwrap().to_string();
    assert!(e.contains("c.safetensors") && e.contains("±1"), "{e}");
    std::fs::write(&path, b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    assert!(load_candidates::<f64>(&path).is_err());
}

/// A run of the pairs and of the signed form on a 3-output model: λ is [m, C] from the start
/// (pairs: 0 at each candidate's own class, positive elsewhere; signed: at the label only), an
/// Adam checkpoint of it comes back whole, and the pairs form's unused column never moves.
#[test]
fn multipliers_of_several_columns_run_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = reveal_tape::check::Rng::seed(4);
    let mut model = Mlp::<f64>::init_classes(6, &[5, 4], 3, 2);
    for p in model.params_mut() {
        *p = reveal_tape::check::randn(p.dim(), &mut rng) * 0.5;
    }
    for form in [Multipliers::Pairs, Multipliers::Signed] {
        let cfg = RunConfig {
            optimizer: Optimizer::Adam,
            multipliers: form,
            iters: 4,
            ..config(0.01)
        };
        let mut s = RunState::<f64>::init_for(6, 3, &cfg);
        assert_eq!(s.lambda.dim(), (4, 3));
        let own = |i: usize| s.y[[i, 0]] as usize;
        for ((i, j), &l) in s.lambda.indexed_iter() {
            match form {
                Multipliers::Pairs => {
                    assert_eq!(l == 0.0, j == own(i), "{form:?} λ[{i},{j}] = {l}")
                }
                _ => assert_eq!(l != 0.0, j == own(i), "{form:?} λ[{i},{j}] = {l}"),
            }
        }
        run(&model.theta(), &mut s, &cfg, |_, _| true).unwrap();
        if form == Multipliers::Pairs {
            assert!((0..4).all(|i| s.lambda[[i, s.y[[i, 0]] as usize]] == 0.0));
        }
        let path = dir.path().join("c.safetensors");
        save_candidates(&path, &s, true, &Default::default()).unwrap();
        assert_eq!(
            load_candidates::<f64>(&path).unwrap().into_state(),
            RunState { last: None, ..s }
        );
    }
}

/// Adam per coordinate, two steps by hand (lr 0.1, β₁ 0.9, β₂ 0.999, ε 1e-8), p₀ = (1, −2),
/// g₁ = (0.5, 1.5), g₂ = (−0.5, 0.5): the first step is lr·sign(g) (m̂ = g, ŝ = g²), the
/// second (0.905263160, −2.187106394) as computed by hand in f64.
#[test]
fn adam_matches_a_hand_computed_example() {
    let (mut p, mut m, mut v): (Array2<f64>, Array2<f64>, Array2<f64>) = (
        array![[1.0, -2.0]],
        Array2::zeros((1, 2)),
        Array2::zeros((1, 2)),
    );
    adam_step(
        &mut p,
        &mut m,
        &mut v,
        &array![[0.5, 1.5]],
        0.1,
        1,
        0.9,
        1e-8,
    );
    assert!(
        (p[[0, 0]] - 0.900000002).abs() < 1e-12 && (p[[0, 1]] + 2.0999999993333334).abs() < 1e-12,
        "{p}"
    );
    adam_step(
        &mut p,
        &mut m,
        &mut v,
        &array![[-0.5, 0.5]],
        0.1,
        2,
        0.9,
        1e-8,
    );
    assert!((p[[0, 0]] - 0.9052631597894736).abs() < 1e-12, "{p}");
    assert!((p[[0, 1]] + 2.187106393626508).abs() < 1e-12, "{p}");
}

/// Adam with one second moment for all of p (the x optimiser), same example: s is the running
/// mean of mean(g²) = 1.25 then 0.25, so both coordinates share one step size.
#[test]
fn shared_second_moment_adam_matches_a_hand_computed_example() {
    let (mut p, mut m, mut s): (Array2<f64>, Array2<f64>, Array2<f64>) = (
        array![[1.0, -2.0]],
        Array2::zeros((1, 2)),
        Array2::zeros((1, 1)),
    );
    adam_step_shared(
        &mut p,
        &mut m,
        &mut s,
        &array![[0.5, 1.5]],
        0.1,
        1,
        0.9,
        1e-12,
    );
    assert!((p[[0, 0]] - 0.9552786404500442).abs() < 1e-12, "{p}");
    assert!((p[[0, 1]] + 2.1341640786498672).abs() < 1e-12, "{p}");
    assert!((s[[0, 0]] - 0.00125).abs() < 1e-15);
    adam_step_shared(
        &mut p,
        &mut m,
        &mut s,
        &array![[-0.5, 0.5]],
        0.1,
        2,
        0.9,
        1e-12,
    );
    assert!((p[[0, 0]] - 0.9583178329050833).abs() < 1e-12, "{p}");
    assert!((p[[0, 1]] + 2.246614199486316).abs() < 1e-12, "{p}");
}

#[test]
fn cosine_schedule_goes_from_one_to_zero() {
    let f = |t| LrSchedule::Cosine.factor(t, 100);
    assert!((f(0) - 1.0).abs() < 1e-15 && (f(50) - 0.5).abs() < 1e-15 && f(100).abs() < 1e-15);
    assert!((f(25) - (0.5 + 0.5 * std::f64::consts::FRAC_1_SQRT_2)).abs() < 1e-15);
    assert_eq!(LrSchedule::Constant.factor(37, 100), 1.0);
}

/// The stopping rule: a run whose rates decay to zero settles before its cap and says when and
/// why; a run that keeps moving (constant rates) goes to the cap.
#[test]
fn stopping_rule_ends_a_settled_run_and_not_a_moving_one() {
    let model = small_model();
    let rule = StopRule {
        window: 20,
        tol: 1e-3,
    };
    let adam = RunConfig {
        optimizer: Optimizer::Adam,
        lambda_lr: 1e-3,
        iters: 400,
        stop: Some(rule),
        ..config(1e-2)
    };
    let cosine = RunConfig {
        schedule: LrSchedule::Cosine,
        ..adam
    };
    let mut s = RunState::init(6, &cosine);
    let finish = run(&model.theta(), &mut s, &cosine, |_, _| true).unwrap();
    let Finish::Settled {
        iter,
        window,
        change,
    } = finish
    else {
        panic!("a decaying run did not settle: {finish:?}")
    };
    assert!(
        iter < 400 && iter % 20 == 0 && window == 20 && change < 1e-3,
        "{finish:?}"
    );
    assert_eq!(s.iter, iter);
    assert!(finish
        .to_string()
        .contains(&format!("settled at iteration {iter}")));

    let mut s = RunState::init(6, &adam);
    let finish = run(&model.theta(), &mut s, &adam, |_, _| true).unwrap();
    assert_eq!(finish, Finish::Cap { iters: 400 });
    assert_eq!(s.iter, 400);
}
