//! Pairwise distances and Krum on the GPU against the fast CPU path and the
//! f64 reference, over a grid of n and d.
//!
//! Throughput is in bytes of gradient read (n·d·4). Every GPU measurement
//! includes the upload of the gradients from host memory, because the
//! library takes host slices; the labels state it. Without a GPU adapter the
//! GPU cases are left out with a message on stderr.
//!
//! Run: `cargo bench --bench gpu`; on lavapipe the numbers measure Mesa's
//! software rasterizer, not a GPU.

use std::hint::black_box;

use byzagg::{Engine, Rule};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// (n, d) pairs measured.
const GRID: &[(usize, usize)] = &[
    (8, 1 << 14),
    (8, 1 << 18),
    (32, 1 << 14),
    (32, 1 << 18),
    (128, 1 << 16),
];

/// The reference reads every row into f64 and is slow, so it runs only up
/// to this many gradient values.
const REFERENCE_MAX_VALUES: usize = 1 << 22;

fn gradients(n: usize, d: usize) -> Vec<Vec<f32>> {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ (n * d) as u64;
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        })
        .collect()
}

fn engines() -> Vec<(&'static str, Engine)> {
    let mut engines = Vec::new();
    match Engine::gpu() {
        Ok(engine) => engines.push(("gpu, upload included", engine)),
        Err(error) => eprintln!("GPU cases left out: {error}"),
    }
    engines.push(("cpu fast", Engine::cpu()));
    engines.push(("cpu reference", Engine::reference()));
    engines
}

fn bench_distances(c: &mut Criterion) {
    let engines = engines();
    let mut group = c.benchmark_group("pairwise_sq_distances");
    group.sample_size(10);
    for &(n, d) in GRID {
        let grads = gradients(n, d);
        group.throughput(Throughput::Bytes((n * d * 4) as u64));
        for (label, engine) in &engines {
            if *label == "cpu reference" && n * d > REFERENCE_MAX_VALUES {
                continue;
            }
            let id = BenchmarkId::new(*label, format!("n={n} d={d}"));
            group.bench_with_input(id, &grads, |b, grads| {
                b.iter(|| black_box(engine.pairwise_sq_distances(grads).expect("distances")))
            });
        }
    }
    group.finish();
}

fn bench_krum(c: &mut Criterion) {
    let engines = engines();
    let mut group = c.benchmark_group("krum");
    group.sample_size(10);
    for &(n, d) in GRID {
        let grads = gradients(n, d);
        let rule = Rule::Krum { f: (n - 3) / 2 };
        group.throughput(Throughput::Bytes((n * d * 4) as u64));
        for (label, engine) in &engines {
            if *label == "cpu reference" && n * d > REFERENCE_MAX_VALUES {
                continue;
            }
            let id = BenchmarkId::new(*label, format!("n={n} d={d}"));
            group.bench_with_input(id, &grads, |b, grads| {
                b.iter(|| black_box(engine.aggregate(&rule, grads).expect("Krum")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_distances, bench_krum);
criterion_main!(benches);
