//! The optimiser, candidate files and divergence handling.

use ndarray::{array, Array2};
use reveal_nn::Mlp;
use reveal_recon::files::{load_candidates, save_candidates};
use reveal_recon::optim::{momentum_step, run, step, Hyper, RunConfig, RunState, Stop};

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
    m.bias.mapv_inplace(|v| v * 5e3);
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
    run(&model, &mut s, &cfg, |_, _| true).unwrap();
    assert_eq!(s.iter, 50);
    assert!(s.last.unwrap().total < first, "{first} → {:?}", s.last);
}

#[test]
fn divergence_names_the_iteration_and_keeps_finite_candidates() {
    let model = small_model();
    let cfg = config(1e12);
    let mut s = RunState::init(6, &cfg);
    let err = run(&model, &mut s, &cfg, |_, _| true).unwrap_err();
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
