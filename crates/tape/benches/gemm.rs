//! The GEMM at the reconstruction step's shapes: our kernels (packing B on the fly, and with B
//! pre-packed as the weights are during a run) against matrixmultiply, f32, all threads; and
//! the bf16 kernel (operands rounded to bf16, f32 sums) where the CPU has AVX512-BF16.
//!
//! `cargo bench -p reveal-tape --bench gemm` (criterion reports time; GFLOP/s = 2·m·k·n / time)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array2;
use reveal_tape::kernels::gemm::{
    matmul_bf16, matmul_with, with_precision, Backend, GemmPrecision, PackedB,
};

/// m×k·k×n: the products of a step at cases A–D (candidates × input or hidden widths).
const SHAPES: [(usize, usize, usize); 6] = [
    (1000, 3072, 1000),
    (1000, 1000, 3072),
    (1000, 784, 1000),
    (200, 3072, 1000),
    (200, 784, 100),
    (200, 100, 100),
];

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_f32");
    group.sample_size(20);
    for (m, k, n) in SHAPES {
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.1);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 2) % 13) as f32 * 0.1);
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for backend in Backend::available() {
            let id = format!("{m}x{k}x{n}/{}", backend.name());
            group.bench_function(&id, |bench| {
                bench.iter(|| matmul_with(backend, a.view(), b.view(), None))
            });
            if let Backend::Packed(isa) = backend {
                let packed = PackedB::for_isa(b.view(), isa);
                group.bench_function(format!("{id}-prepacked"), |bench| {
                    bench.iter(|| matmul_with(backend, a.view(), b.view(), Some(&packed)))
                });
            }
        }
        if GemmPrecision::Bf16.available() {
            let id = format!("{m}x{k}x{n}/bf16");
            group.bench_function(&id, |bench| {
                bench.iter(|| matmul_bf16(a.view(), b.view(), None))
            });
            let packed = with_precision(GemmPrecision::Bf16, || PackedB::new(b.view()));
            group.bench_function(format!("{id}-prepacked"), |bench| {
                bench.iter(|| matmul_bf16(a.view(), b.view(), packed.as_ref()))
            });
        } else {
            eprintln!("bf16 kernel skipped: this CPU has no AVX512-BF16");
        }
    }
    group.finish();
}

criterion_group!(benches, gemm);
criterion_main!(benches);
