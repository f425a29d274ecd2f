//! Criterion benches of the CPU paths: the f64 reference against the fast
//! path, on gradients generated in memory before timing starts.
//!
//! Throughput is the gradient bytes read (n · d · 4). No upload is involved:
//! both paths read the borrowed host rows. Run with `cargo bench --bench cpu`;
//! `byzagg bench` measures the larger sizes of docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use byzagg::bench::generate;
use byzagg::cpu::CpuStages;
use byzagg::stages::{CoordinateStat, Stages};
use byzagg::{Engine, Rule};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// (n, d) pairs: a memory-bound small n and a compute-heavier larger n, small
/// enough that the reference finishes a sample in about a second.
const SIZES: &[(usize, usize)] = &[(8, 1 << 20), (32, 1 << 18)];

fn label(n: usize, d: usize) -> String {
    format!("n={n},d={d}")
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group
}

fn distances(c: &mut Criterion) {
    let mut group = configure(c, "distances (host memory, no upload)");
    let fast = CpuStages::new();
    for &(n, d) in SIZES {
        let grads = generate(n, d, 0, 1).expect("gradients fit in memory");
        group.throughput(Throughput::Bytes((n * d * 4) as u64));
        group.bench_with_input(
            BenchmarkId::new("reference", label(n, d)),
            &grads,
            |b, grads| b.iter(|| byzagg::cpu::reference::sq_distances(black_box(grads)).unwrap()),
        );
        group.bench_with_input(BenchmarkId::new("cpu", label(n, d)), &grads, |b, grads| {
            b.iter(|| fast.sq_distances(black_box(grads)).unwrap())
        });
    }
    group.finish();
}

/// Krum and Multi-Krum with f = (n − 3) / 2, the largest f Krum accepts.
fn krum_family(c: &mut Criterion, name: &str, rule_for: impl Fn(usize) -> Rule) {
    let mut group = configure(c, name);
    let engines = [("reference", Engine::reference()), ("cpu", Engine::cpu())];
    for &(n, d) in SIZES {
        let rule = rule_for(n);
        let grads = generate(n, d, rule.f(), 2).expect("gradients fit in memory");
        group.throughput(Throughput::Bytes((n * d * 4) as u64));
        for (engine_name, engine) in &engines {
            group.bench_with_input(
                BenchmarkId::new(*engine_name, label(n, d)),
                &grads,
                |b, grads| b.iter(|| engine.aggregate(&rule, black_box(grads)).unwrap()),
            );
        }
    }
    group.finish();
}

fn krum(c: &mut Criterion) {
    krum_family(c, "krum (host memory, no upload)", |n| Rule::Krum {
        f: (n - 3) / 2,
    });
}

fn multi_krum(c: &mut Criterion) {
    krum_family(c, "multi-krum m = n - f (host memory, no upload)", |n| {
        let f = (n - 3) / 2;
        Rule::MultiKrum { f, m: n - f }
    });
}

/// Times the fast median against the obvious per-coordinate sort in f64,
/// because the reference has no median.
fn median(c: &mut Criterion) {
    let mut group = configure(c, "median (host memory, no upload)");
    let fast = CpuStages::new();
    for &(n, d) in SIZES {
        let grads = generate(n, d, 0, 3).expect("gradients fit in memory");
        group.throughput(Throughput::Bytes((n * d * 4) as u64));
        group.bench_with_input(
            BenchmarkId::new("sort-f64", label(n, d)),
            &grads,
            |b, grads| {
                b.iter(|| {
                    let mut column = vec![0f64; n];
                    (0..d)
                        .map(|c| {
                            for (v, row) in column.iter_mut().zip(black_box(grads)) {
                                *v = row[c] as f64;
                            }
                            column.sort_by(f64::total_cmp);
                            let median = if n % 2 == 1 {
                                column[n / 2]
                            } else {
                                (column[n / 2 - 1] + column[n / 2]) / 2.0
                            };
                            median as f32
                        })
                        .collect::<Vec<f32>>()
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("cpu", label(n, d)), &grads, |b, grads| {
            b.iter(|| {
                fast.coordinate_stat(black_box(grads), CoordinateStat::Median)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, distances, krum, multi_krum, median);
criterion_main!(benches);
