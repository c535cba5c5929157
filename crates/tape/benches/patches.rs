//! unfold (im2col), fold (col2im) and average pooling at the shapes of a CNN reconstruction step
//! (m = 200 candidates): as memory passes, in GB/s of values written, beside a plain copy of the
//! same output size (the bound they run against).
//!
//! `cargo bench -p reveal-tape --bench patches`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array2;
use reveal_tape::kernels::patches::{avg_pool, avg_pool_t, fold, unfold, Patches};

/// (images, C, H, W, k, s, p): MNIST's first conv (1×28×28, 3×3), a second conv over 32×26×26
/// with stride 2, CIFAR's first conv with padding, and a 2×2 pooling.
const CASES: [(usize, usize, usize, usize, usize, usize, usize); 4] = [
    (200, 1, 28, 28, 3, 1, 0),
    (200, 32, 26, 26, 3, 2, 0),
    (200, 3, 32, 32, 3, 1, 1),
    (200, 32, 26, 26, 2, 2, 0),
];

fn patches(c: &mut Criterion) {
    let mut group = c.benchmark_group("patches_f32");
    group.sample_size(20);
    for (n, channels, height, width, kernel, stride, padding) in CASES {
        let g = Patches {
            channels,
            height,
            width,
            kernel,
            stride,
            padding,
        };
        let x = Array2::from_shape_fn((n * g.pixels(), channels), |(i, j)| (i + j) as f32);
        let cols =
            Array2::from_shape_fn((n * g.windows(), kernel * kernel * channels), |(i, j)| {
                (i ^ j) as f32
            });
        let id = format!("{n}x{channels}x{height}x{width}-k{kernel}s{stride}p{padding}");
        let bytes = |a: &Array2<f32>| (a.len() * 4) as u64;
        group.throughput(Throughput::Bytes(bytes(&cols)));
        group.bench_function(format!("unfold/{id}"), |b| b.iter(|| unfold(&x, &g)));
        group.bench_function(format!("copy-of-unfold-size/{id}"), |b| {
            b.iter(|| cols.clone())
        });
        group.throughput(Throughput::Bytes(bytes(&x)));
        group.bench_function(format!("fold/{id}"), |b| b.iter(|| fold(&cols, &g)));
        if stride == kernel {
            let pooled = avg_pool(&x, &g);
            group.bench_function(format!("avg_pool/{id}"), |b| b.iter(|| avg_pool(&x, &g)));
            group.bench_function(format!("avg_pool_t/{id}"), |b| {
                b.iter(|| avg_pool_t(&pooled, &g))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, patches);
criterion_main!(benches);
