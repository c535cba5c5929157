//! # 04: watch a reconstruction
//!
//! Ten 16×16 images of the built-in synthetic set (rings against crosses), a 256-300-300-1 net
//! trained on them to a loss of 1e-5, then one reconstruction run with the default plan (Adam,
//! 2,500 iterations, 20 candidates) from the weights alone. Written out:
//!
//! - an animated GIF: the top row holds the ten training images, the row below the candidate
//!   that ends nearest to each (by correlation), frame by frame from its random start to the end;
//! - a PNG of the three terms of the objective, L_kkt, L_x and L_λ, over the iterations (log
//!   scale), with the first layer's share ‖W1 − G1‖² / ‖W1‖²;
//! - the first and last frames as OUT-start.png and OUT-end.png;
//! - on the terminal: each training image's correlation with its candidate at the end.
//!
//! Run: `cargo run --release -p reveal-experiment --example 04_watch_reconstruction [OUT.gif]`
//! (under a minute on 2 cores; the loss plot goes beside the GIF as OUT-loss.png).

use std::fs::File;
use std::io::BufWriter;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbaImage};
use ndarray::{Array2, ArrayView1};
use plotters::prelude::*;
use reveal_data::{prepare, DataSpec, Source, TestSelection};
use reveal_recon::optim::{layer1_residual, run, RunState};
use reveal_recon::Plan;
use reveal_render::grid;
use reveal_score::score::to_pixels;
use reveal_train::job::{features, label_column};
use reveal_train::{train_new, TrainConfig};

/// Pearson correlation of two images.
fn correlation(a: ArrayView1<f32>, b: ArrayView1<f32>) -> f32 {
    let (ma, mb) = (a.mean().unwrap(), b.mean().unwrap());
    let (a, b) = (a.mapv(|v| v - ma), b.mapv(|v| v - mb));
    a.dot(&b) / (a.dot(&a) * b.dot(&b)).sqrt().max(1e-12)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gif_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "04_watch.gif".into());
    let loss_path = gif_path.trim_end_matches(".gif").to_string() + "-loss.png";

    // 1. The data and a trained net, as `reveal train --dataset synthetic --size 16x16` makes.
    let mut spec = DataSpec::new(Source::Synthetic { size: 16 }, 5);
    spec.test = TestSelection::PerClass(10);
    let data = prepare(&spec, None)?;
    let (x, y) = (
        features::<f32>(&data.train.x),
        label_column::<f32>(&data.train.y),
    );
    let (state, _) = train_new(&x, &y, &[300, 300], 0, &TrainConfig::fast(1e-5, 10_000));
    let model = state.mlp();
    println!("trained: {} epochs, loss {:.2e}", state.epoch, state.loss);

    // 2. One run of the default plan, keeping the candidates every 50 iterations and the terms
    //    of the objective at every one.
    let cfg = Plan::new(Some(&spec.source), 20, 0).configs()?[0];
    let mut recon = RunState::<f32>::init(256, &cfg);
    let mut snapshots: Vec<Array2<f32>> = vec![recon.x.clone()];
    let mut curve: Vec<(usize, [f64; 4])> = Vec::new();
    let theta = model.theta();
    let finish = run(&theta, &mut recon, &cfg, |s, t| {
        curve.push((
            s.iter,
            [t.kkt, t.prior_x, t.prior_lambda, layer1_residual(&theta, t)],
        ));
        if s.iter % 50 == 0 {
            snapshots.push(s.x.clone());
        }
        true
    })?;
    println!("reconstruction: {finish}");

    // 3. Pair each training image with the candidate that ends nearest to it.
    let last = snapshots.last().unwrap();
    let pixels = |c: &Array2<f32>| to_pixels(c, data.mean.view());
    let end = pixels(last);
    let pairing: Vec<(usize, f32)> = data
        .train
        .pixels
        .rows()
        .into_iter()
        .map(|t| {
            (0..end.nrows())
                .map(|j| (j, correlation(t, end.row(j))))
                .fold((0, f32::MIN), |b, c| if c.1 > b.1 { c } else { b })
        })
        .collect();
    for (i, (j, r)) in pairing.iter().enumerate() {
        println!("training image {i}: candidate {j}, correlation {r:.3}");
    }
    let mean = pairing.iter().map(|p| p.1).sum::<f32>() / pairing.len() as f32;
    println!("mean correlation {mean:.3}");

    // 4. The GIF: targets on top, their candidates below, one frame per snapshot.
    let scale = 6;
    let mut encoder = GifEncoder::new_with_speed(BufWriter::new(File::create(&gif_path)?), 10);
    encoder.set_repeat(Repeat::Infinite)?;
    for (k, snap) in snapshots.iter().enumerate() {
        let p = pixels(snap);
        let mut images: Vec<ArrayView1<f32>> = data.train.pixels.rows().into_iter().collect();
        images.extend(pairing.iter().map(|&(j, _)| p.row(j)));
        let rgb = grid::render(&images, data.shape, 10, scale);
        let rgba = RgbaImage::from_fn(rgb.width(), rgb.height(), |x, y| {
            let [r, g, b] = rgb.get_pixel(x, y).0;
            image::Rgba([r, g, b, 255])
        });
        // Hold the first and the last frame longer, and keep them as PNGs too.
        let ends = k == 0 || k + 1 == snapshots.len();
        let ms = if ends { 1500 } else { 60 };
        if ends {
            let which = if k == 0 { "start" } else { "end" };
            rgb.save(format!("{}-{which}.png", gif_path.trim_end_matches(".gif")))?;
        }
        encoder.encode_frame(Frame::from_parts(
            rgba,
            0,
            0,
            Delay::from_numer_denom_ms(ms, 1),
        ))?;
    }
    drop(encoder);
    println!("wrote {gif_path} ({} frames)", snapshots.len());

    // 5. The terms over the iterations.
    reveal_render::register_font();
    let root = BitMapBackend::new(&loss_path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = curve
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    let hi = curve
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("the objective's terms over one run", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0usize..cfg.iters,
            (lo.max(1e-12) / 2.0..hi * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("value (log)")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    let names = ["L_kkt", "L_x", "L_λ", "‖W1 − G1‖² / ‖W1‖²"];
    let colours = [BLUE, RED, GREEN, MAGENTA];
    for (t, (name, colour)) in names.iter().zip(colours).enumerate() {
        let points = curve
            .iter()
            .filter(|(_, v)| v[t] > 0.0)
            .map(|&(i, v)| (i, v[t]));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    println!("wrote {loss_path}");
    Ok(())
}
