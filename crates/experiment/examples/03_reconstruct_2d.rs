//! # 03: KKT reconstruction in the plane
//!
//! Two classes of points in the plane (an inner ring, y = +1, inside an outer ring, y = −1),
//! a small homogeneous net 2-100-1 trained to zero error, then reconstruction from its weights
//! alone, drawn as one PNG: the decision regions, the margin curve y·f(x) = γ, the training points
//! (filled: on the margin), and every candidate's path from its start (small grey dot) to where
//! it ends (cross; blue for y = +1, red for y = −1).
//!
//! Run: `cargo run --release -p reveal-experiment --example 03_reconstruct_2d [OUT.png]`
//!
//! What to look for. Gradient descent drives θ towards a KKT point of the max-margin problem,
//! where θ = Σ_i λ_i y_i ∇_θ f(x_i) with λ_i > 0 only on the margin. Reconstruction searches
//! candidates (x̂_j, λ̂_j) that satisfy the same equation. In the plane this is a hard case, and
//! the picture shows why: inside one activation region of the ReLUs, ∇_θ f(x) is linear in x, so
//! candidates that share a region only determine their λ-weighted mean; and the trained net puts
//! many ReLU kinks right through the training points. The table printed at the end says how close
//! each training point's nearest candidate came, and a control run with the candidates pinned to
//! the training points (only λ moves) shows the point: they satisfy the KKT equations *worse*
//! (first-layer residual 2.0e-2) than the candidates found (5.9e-3), so in the plane the objective
//! does not single out the training points. Images (d = 256) fare far better, see
//! `crates/recon/tests/end_to_end.rs`.

use std::f64::consts::TAU;

use ndarray::Array2;
use plotters::prelude::*;
use reveal_nn::Mlp;
use reveal_recon::optim::{layer1_residual, run, Hyper, RunConfig, RunState};
use reveal_train::{train, Control, Schedule, TrainConfig, TrainState};

/// The training set: `k` points of y = +1 on a circle of radius 0.3, `k` of y = −1 at radii
/// 0.7–0.9.
fn rings(k: usize) -> (Array2<f64>, Array2<f64>) {
    let mut points = Vec::new();
    for i in 0..k {
        let a = TAU * (i as f64 + 0.25) / k as f64;
        points.push((0.3 * a.cos(), 0.3 * a.sin(), 1.0));
    }
    for i in 0..k {
        let a = TAU * i as f64 / k as f64;
        let r = 0.7 + 0.1 * ((i * 7) % 3) as f64;
        points.push((r * a.cos(), r * a.sin(), -1.0));
    }
    let x = Array2::from_shape_fn((2 * k, 2), |(i, j)| [points[i].0, points[i].1][j]);
    let y = Array2::from_shape_fn((2 * k, 1), |(i, _)| points[i].2);
    (x, y)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "03_reconstruct_2d.png".into());

    // 1. Train to zero error and a small loss, so that θ is near a KKT point.
    let (x, y) = rings(6);
    let n = x.nrows();
    let mut state = TrainState::new(Mlp::<f64>::init(2, &[100], 1), Schedule::FAST);
    let cfg = TrainConfig {
        schedule: Schedule::FAST,
        target_loss: 1e-10,
        max_epochs: 100_000,
        weight_decay: 0.0,
        ..TrainConfig::fast(0.0, 0)
    };
    let outcome = train(&mut state, &x, &y, &cfg, |_| Control::Continue);
    let model = state.mlp();
    let f = model.predict(x.view());
    let margins: Vec<f64> = (0..n).map(|i| f[[i, 0]] * y[[i, 0]]).collect();
    let gamma = margins.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "trained: {outcome:?} after {} epochs, loss {:.1e}, margin γ = {gamma:.3}",
        state.epoch, state.loss
    );

    // 2. Reconstruct: m = 2n candidates, recording their paths every 100 iterations.
    let hyper = Hyper {
        init_scale: 0.05,
        lr: 1e-3,
        lambda_min: 0.01,
        alpha: 20.0,
    };
    let mut rc = RunConfig::new(hyper, 2 * n, 20_000, 0);
    rc.lambda_lr = 1e-5;
    let mut recon = RunState::<f64>::init(2, &rc);
    let mut paths: Vec<Vec<(f64, f64)>> =
        recon.x.outer_iter().map(|p| vec![(p[0], p[1])]).collect();
    run(&model.theta(), &mut recon, &rc, |s, _| {
        if s.iter % 100 == 0 {
            for (path, p) in paths.iter_mut().zip(s.x.outer_iter()) {
                path.push((p[0], p[1]));
            }
        }
        true
    })
    .map_err(|e| format!("reconstruction stopped: {e:?}"))?;
    let terms = recon.last.expect("the run took steps");
    println!(
        "reconstructed: L_kkt {:.3e}, first-layer residual ‖W1 − G_W1‖²/‖W1‖² = {:.2e}",
        terms.kkt,
        layer1_residual(&model.theta(), &terms)
    );

    // 3. How close did each training point's nearest candidate come?
    println!("point      x      y  label  y·f/γ  nearest candidate (λ)  distance");
    for i in 0..n {
        let (j, dist) = (0..recon.x.nrows())
            .map(|j| {
                let (dx, dy) = (recon.x[[j, 0]] - x[[i, 0]], recon.x[[j, 1]] - x[[i, 1]]);
                (j, dx.hypot(dy))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("candidates");
        println!(
            "{i:>5} {:>6.2} {:>6.2} {:>6} {:>6.2} {j:>18} ({:.2}) {dist:>9.3}",
            x[[i, 0]],
            x[[i, 1]],
            y[[i, 0]],
            margins[i] / gamma,
            recon.lambda[[j, 0]]
        );
    }

    // 4. The control: candidates pinned to the training points (x does not move, only λ does).
    // Its residual says how well the training points themselves satisfy the KKT equations.
    let mut pinned_cfg = RunConfig::new(Hyper { lr: 0.0, ..hyper }, n, 20_000, 0);
    pinned_cfg.lambda_lr = 1e-3;
    let mut pinned = RunState::<f64>::init(2, &pinned_cfg);
    // candidate_labels puts y = −1 first: the outer ring, then the inner one.
    let order = (0..n)
        .filter(|&i| y[[i, 0]] < 0.0)
        .chain((0..n).filter(|&i| y[[i, 0]] > 0.0));
    for (row, i) in order.enumerate() {
        pinned.x.row_mut(row).assign(&x.row(i));
    }
    run(&model.theta(), &mut pinned, &pinned_cfg, |_, _| true)
        .map_err(|e| format!("the pinned run stopped: {e:?}"))?;
    let pinned_terms = pinned.last.expect("the run took steps");
    println!(
        "control, candidates = the training points: first-layer residual {:.2e}",
        layer1_residual(&model.theta(), &pinned_terms)
    );

    // 5. The picture.
    let root = BitMapBackend::new(&out, (700, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .build_cartesian_2d(-1.1f64..1.1, -1.1f64..1.1)?;
    // Decision regions and the margin curve, from f on a grid.
    let steps = 220;
    let cell = 2.2 / steps as f64;
    let grid = Array2::from_shape_fn((steps * steps, 2), |(k, j)| {
        let (r, c) = (k / steps, k % steps);
        -1.1 + cell * (if j == 0 { c } else { r } as f64 + 0.5)
    });
    let fg = model.predict(grid.view());
    chart.draw_series((0..steps * steps).map(|k| {
        let (gx, gy, v) = (grid[[k, 0]], grid[[k, 1]], fg[[k, 0]]);
        let colour = if (v.abs() - gamma).abs() < 0.04 * gamma {
            RGBColor(120, 120, 120)
        } else if v > 0.0 {
            RGBColor(222, 232, 250)
        } else {
            RGBColor(250, 226, 222)
        };
        Rectangle::new([(gx, gy), (gx + cell, gy + cell)], colour.filled())
    }))?;
    for (j, path) in paths.iter().enumerate() {
        let colour = if recon.y[[j, 0]] > 0.0 { BLUE } else { RED };
        chart.draw_series(LineSeries::new(path.iter().copied(), colour.mix(0.5)))?;
        chart.draw_series(std::iter::once(Circle::new(
            path[0],
            2,
            BLACK.mix(0.4).filled(),
        )))?;
        let end = (recon.x[[j, 0]], recon.x[[j, 1]]);
        chart.draw_series(std::iter::once(Cross::new(end, 5, colour.stroke_width(2))))?;
    }
    for i in 0..n {
        let colour = if y[[i, 0]] > 0.0 { BLUE } else { RED };
        let p = (x[[i, 0]], x[[i, 1]]);
        let on_margin = margins[i] < 1.05 * gamma;
        let style = if on_margin {
            colour.filled()
        } else {
            colour.stroke_width(2)
        };
        chart.draw_series(std::iter::once(Circle::new(p, 7, style)))?;
    }
    root.present()?;
    println!("picture: {out}");
    Ok(())
}
