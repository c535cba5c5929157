//! `reveal bench`: time per reconstruction step and per training step at the peer benchmark's
//! cases (docs/DESIGN.md §6), so the two print comparable lines.
//!
//! Cases (d, h, m candidates, n training samples): A 3072-1000-1000/500, B 3072-1000-200/100,
//! C 784-1000-1000/500, D 784-100-200/100. GEMM FLOPs per step (docs/DESIGN.md §4):
//! reconstruction 10·m·h·d + 14·m·h², training 4·n·h·d + 6·n·h².
//!
//! With `--arch` (a CNN, or any architecture) the case is that network over `--input` images at
//! m = 200, n = 100, and its FLOPs are counted as the MLP's above are, from each layer's forward
//! FLOPs (2·rows·in·out per product, a convolution's rows being its windows): reconstruction 5×
//! the first layer's and 7× the others', training 2× and 3×.
//!
//! Every line also carries what one step did, counted in the kernels (`kernels::count`): the
//! GFLOP of its products and the MB of the values it recorded.

use std::time::Instant;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reveal_nn::{Arch, Biases, Grid, Init, Mlp, Stage};
use reveal_recon::objective::Method;
use reveal_recon::optim::{step, Hyper, RunConfig, RunState};
use reveal_tape::kernels::gemm::{cpu_name, Backend};
use reveal_tape::Scalar;
use serde::Serialize;

/// One benchmark case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub name: char,
    pub d: usize,
    pub h: usize,
    pub m: usize,
    pub n: usize,
}

/// The peer script's four cases.
pub const CASES: [Case; 4] = [
    Case {
        name: 'A',
        d: 3072,
        h: 1000,
        m: 1000,
        n: 500,
    },
    Case {
        name: 'B',
        d: 3072,
        h: 1000,
        m: 200,
        n: 100,
    },
    Case {
        name: 'C',
        d: 784,
        h: 1000,
        m: 1000,
        n: 500,
    },
    Case {
        name: 'D',
        d: 784,
        h: 100,
        m: 200,
        n: 100,
    },
];

/// A result line, with the peer script's field names where they mean the same.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub framework: &'static str,
    pub case: String,
    /// Outputs of the model (1: binary, as the peers).
    pub outputs: usize,
    pub precision: &'static str,
    pub threads: usize,
    pub recon_method: String,
    /// The GEMM backend products ran on (`avx512`, `avx2` or `matrixmultiply`).
    pub gemm_kernel: &'static str,
    /// The CPU's brand string.
    pub cpu: String,
    pub steps: usize,
    pub recon_step_s: f64,
    pub recon_min_s: f64,
    pub recon_max_s: f64,
    pub recon_gflop: f64,
    pub recon_gflops: f64,
    pub train_step_s: f64,
    pub train_gflop: f64,
    pub train_gflops: f64,
    /// The tape's GEMM alone at 1000×3072·3072×1000 (best of 5), and the steps' rates as a
    /// percentage of it. The rates count the generic step's FLOPs, as the peers do, so the Gram
    /// path, which does about half of them, can show more than 100 %.
    pub gemm_peak_gflops: f64,
    pub recon_peak_pct: f64,
    pub train_peak_pct: f64,
    /// What one step did, counted in the kernels: GFLOP of its matrix products (beside
    /// `recon_gflop`/`train_gflop`, the model's count), and MB of the values it recorded.
    pub recon_products_gflop_counted: f64,
    pub recon_recorded_mb: f64,
    pub train_products_gflop_counted: f64,
    pub train_recorded_mb: f64,
}

/// GFLOP/s of the tape's matrix product at 1000×3072 · 3072×1000, best of 5: the ceiling a step
/// made only of GEMMs would reach.
pub fn gemm_peak<T: Scalar>() -> f64 {
    let (m, k, n) = (1000, 3072, 1000);
    let a = Array2::from_elem((m, k), T::from_f64(0.5));
    let b = Array2::from_elem((k, n), T::from_f64(0.25));
    let tape = reveal_tape::Tape::new();
    let (a, b) = (tape.constant(a), tape.constant(b));
    let (_, best, _) = time(1, 5, || {
        let _ = a.matmul(b);
    });
    2.0 * (m * k * n) as f64 / best / 1e9
}

/// Median, min and max of step times.
fn stats(mut t: Vec<f64>) -> (f64, f64, f64) {
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0], t[t.len() - 1])
}

/// Times `steps` calls of `f` after `warmup` untimed ones.
fn time(warmup: usize, steps: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..warmup {
        f();
    }
    stats(
        (0..steps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Runs one case: `steps` timed reconstruction and training steps after 3 warm-up steps, for a
/// model with `outputs` outputs (1: the peers' binary case; C: a C-class model of the same
/// size); `peak` is [`gemm_peak`] in GFLOP/s.
pub fn run_case<T: Scalar>(case: Case, outputs: usize, steps: usize, peak: f64) -> BenchResult {
    let model = Mlp::<T>::init_classes(case.d, &[case.h, case.h], outputs, 0);
    let (d, h, m, n) = (case.d as f64, case.h as f64, case.m as f64, case.n as f64);
    let flops = [
        10.0 * m * h * d + 14.0 * m * h * h,
        4.0 * n * h * d + 6.0 * n * h * h,
    ];
    let sizes = (case.m, case.n);
    run_model(case.name.to_string(), &model, sizes, flops, steps, peak)
}

/// Runs the network `arch` over `input` images (m = 200 candidates, n = 100 training images),
/// as [`run_case`] runs an MLP; an error when a stage does not fit the images.
pub fn run_arch<T: Scalar>(
    arch: &Arch,
    input: Grid,
    outputs: usize,
    steps: usize,
    peak: f64,
) -> Result<BenchResult, String> {
    let model = match arch.features(input)? {
        Some(f) => Mlp::<T>::init_features(f, &arch.hidden, outputs, Init::Small, Biases::First, 0),
        None => Mlp::<T>::init_classes(input.len(), &arch.hidden, outputs, 0),
    };
    let (m, n) = (200, 100);
    // As for the MLP cases: a reconstruction step does 5 products of each layer's forward size
    // for the first layer and 7 for the others; a training step 2 and 3 (the first layer's
    // input gradient is not needed).
    let steps_flops = |rows: usize, first: f64, rest: f64| {
        let f = forward_flops(&model, rows);
        first * f[0] + rest * f[1..].iter().sum::<f64>()
    };
    let flops = [steps_flops(m, 5.0, 7.0), steps_flops(n, 2.0, 3.0)];
    Ok(run_model(
        arch.to_string(),
        &model,
        (m, n),
        flops,
        steps,
        peak,
    ))
}

/// GEMM FLOPs of the forward pass over `rows` images, layer by layer: 2·rows·in·out for an fc
/// layer, 2·rows·windows·(in·k·k)·out for a convolution.
fn forward_flops<T: Scalar>(model: &Mlp<T>, rows: usize) -> Vec<f64> {
    let windows: Vec<usize> = model.features.as_ref().map_or(Vec::new(), |f| {
        f.geometries()
            .into_iter()
            .filter(|(s, _)| matches!(s, Stage::Conv { .. }))
            .map(|(_, g)| g.windows())
            .collect()
    });
    model
        .weights
        .iter()
        .enumerate()
        .map(|(k, w)| 2.0 * (rows * windows.get(k).unwrap_or(&1) * w.len()) as f64)
        .collect()
}

/// Times the reconstruction and training steps of `model` with (m candidates, n training
/// samples), given their GEMM FLOPs [reconstruction, training].
fn run_model<T: Scalar>(
    case: String,
    model: &Mlp<T>,
    (m, n): (usize, usize),
    [recon_flop, train_flop]: [f64; 2],
    steps: usize,
    peak: f64,
) -> BenchResult {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (d, outputs) = (model.input_dim(), model.outputs());
    let theta = model.theta();
    let cfg = RunConfig::new(
        Hyper {
            init_scale: 1e-3,
            lr: 0.1,
            lambda_min: 0.45,
            alpha: 20.0,
        },
        m,
        usize::MAX,
        0,
    );
    let mut state = RunState::<T>::init_for(d, outputs, &cfg);
    let mut recon_step = || {
        step(&theta, &mut state, &cfg).expect("finite at the benchmark's start point");
    };
    let (recon, rmin, rmax) = time(3, steps, &mut recon_step);
    // One more step, counted.
    let recon_work = counted(recon_step);

    let x: Array2<T> =
        Array2::from_shape_simple_fn((n, d), || T::from_f64(rng.gen_range(-1.0..1.0)));
    let y: Array2<T> = reveal_recon::candidate_labels_for(n, outputs);
    // One training step: L and ∂L/∂θ at θ, then θ ← θ − lr·∂L/∂θ (as the peers time it).
    let (x, y) = (std::sync::Arc::new(x), std::sync::Arc::new(y));
    let mut theta = model.theta();
    let mut training_step = || {
        let e = reveal_train::evaluate_shared(&theta, &x, &y, reveal_train::Objective::default());
        theta = reveal_train::stepped(&theta, &e.grads, 0.01);
    };
    let (train_step, _, _) = time(3, steps, &mut training_step);
    let train_work = counted(training_step);
    let (recon_gflop, train_gflop) = (recon_flop / 1e9, train_flop / 1e9);
    BenchResult {
        framework: "reveal",
        case,
        outputs,
        precision: reveal_tape::kernels::gemm::product_precision::<T>(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        recon_method: format!("{:?}", Method::auto(&theta, m)),
        gemm_kernel: Backend::selected().name(),
        cpu: cpu_name(),
        steps,
        recon_step_s: recon,
        recon_min_s: rmin,
        recon_max_s: rmax,
        recon_gflop,
        recon_gflops: recon_gflop / recon,
        train_step_s: train_step,
        train_gflop,
        train_gflops: train_gflop / train_step,
        gemm_peak_gflops: peak,
        recon_peak_pct: 100.0 * recon_gflop / recon / peak,
        train_peak_pct: 100.0 * train_gflop / train_step / peak,
        recon_products_gflop_counted: recon_work.product_flops as f64 / 1e9,
        recon_recorded_mb: recon_work.recorded_bytes as f64 / 1e6,
        train_products_gflop_counted: train_work.product_flops as f64 / 1e9,
        train_recorded_mb: train_work.recorded_bytes as f64 / 1e6,
    }
}

/// The kernels' counts of one call of `f` (nothing else runs meanwhile).
fn counted(mut f: impl FnMut()) -> reveal_tape::kernels::count::Work {
    let before = reveal_tape::kernels::count::work();
    f();
    reveal_tape::kernels::count::work() - before
}
