//! Times reconstruction steps at a peer-benchmark case, for profiling:
//! `cargo run --release -p reveal-recon --example step_profile -- B gram 20`
use ndarray::Array2;
use reveal_nn::{Activation, Mlp};
use reveal_recon::objective::{candidate_labels, evaluate_with, Method, ObjectiveConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("gemm") {
        for (mm, k, n, ta, tb) in [
            (200, 3072, 1000, false, true),
            (200, 3072, 1000, false, false),
            (200, 1000, 3072, false, false),
            (200, 200, 3072, false, false),
            (200, 3072, 200, false, true),
            (1000, 1000, 1000, false, false),
        ] {
            let a = if ta {
                Array2::<f32>::ones((k, mm))
            } else {
                Array2::<f32>::ones((mm, k))
            };
            let b = if tb {
                Array2::<f32>::ones((n, k))
            } else {
                Array2::<f32>::ones((k, n))
            };
            let reps = 10;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                let av = if ta { a.t() } else { a.view() };
                let bv = if tb { b.t() } else { b.view() };
                std::hint::black_box(av.dot(&bv));
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            // The same product as two column halves of B on two rayon threads.
            let t = std::time::Instant::now();
            for _ in 0..reps {
                let av = if ta { a.t() } else { a.view() };
                let bv = if tb { b.t() } else { b.view() };
                let (left, right) = bv.split_at(ndarray::Axis(1), n / 2);
                std::hint::black_box(rayon::join(|| av.dot(&left), || av.dot(&right)));
            }
            let s2 = t.elapsed().as_secs_f64() / reps as f64;
            let g = |s: f64| 2.0 * (mm * k * n) as f64 / s / 1e9;
            println!("{mm}x{k}x{n} ta={ta} tb={tb}: {:.2} ms, {:.0} GFLOP/s; split by columns {:.2} ms, {:.0} GFLOP/s", s * 1e3, g(s), s2 * 1e3, g(s2));
        }
        return;
    }
    let (d, h, m) = match args.get(1).map(String::as_str).unwrap_or("B") {
        "A" => (3072, 1000, 1000),
        "C" => (784, 1000, 1000),
        "D" => (784, 100, 200),
        "M" => (784, 1000, 200),
        _ => (3072, 1000, 200),
    };
    let method = if args.get(2).map(String::as_str) == Some("generic") {
        Method::GradOfGrad
    } else {
        Method::Gram
    };
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let net = Mlp::<f32>::init(d, &[h, h], 0);
    let x = Array2::from_shape_fn((m, d), |(i, j)| ((i * 31 + j * 17) % 97) as f32 * 1e-5);
    let lambda = Array2::from_elem((m, 1), 0.5f32);
    let y = candidate_labels(m);
    let theta = net.theta();
    reveal_tape::keep_freed_memory();
    let cfg = ObjectiveConfig {
        activation: Activation::ModifiedRelu(20.0),
        lambda_min: 0.45,
    };
    {
        // One step split into its two halves, with the tape's size.
        let tape = reveal_tape::Tape::new();
        let t0 = std::time::Instant::now();
        let th = theta.on_tape(&tape);
        let (xv, lv, yv) = (
            tape.var(x.clone()),
            tape.var(lambda.clone()),
            tape.constant(y.clone()),
        );
        let terms = match method {
            Method::Gram => reveal_recon::gram::record(&th, xv, lv, yv, cfg),
            Method::GradOfGrad => reveal_recon::record(&th, xv, lv, yv, cfg),
        };
        let t1 = std::time::Instant::now();
        let (n, e) = (tape.len(), tape.elements());
        let _g = reveal_tape::grad(terms.total, &[xv, lv], false);
        let t2 = std::time::Instant::now();
        println!(
            "record {:.1} ms ({n} nodes, {:.1} M elements), backward {:.1} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            e as f64 / 1e6,
            (t2 - t1).as_secs_f64() * 1e3
        );
    }
    let t = std::time::Instant::now();
    for _ in 0..steps {
        std::hint::black_box(evaluate_with(method, &theta, &x, &lambda, &y, cfg));
    }
    println!(
        "{:.1} ms per step",
        t.elapsed().as_secs_f64() * 1e3 / steps as f64
    );
}
