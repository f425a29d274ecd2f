//! The fast CPU path against the f64 reference: distances within the
//! agreement tolerance (relative 1e-4, absolute floor 1e-6 · (|x_i|² + |x_j|²)),
//! identical selections, and the other stages against f64 oracles, on every
//! SIMD level this CPU supports; plus `byzagg bench` from the command line.

use byzagg::cpu::fast::{CpuStages, SimdLevel};
use byzagg::stages::{CoordinateStat, Stages};
use byzagg::{Engine, GradientSource, Rule};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

type Rng = rand::rngs::Xoshiro256PlusPlus;

/// Sizes that cross the SIMD width (8, 16), the kernel chunk (2048), the
/// 4-row tile and, for small n, the cache block (tens of thousands of
/// coordinates): (n, d).
const SIZES: &[(usize, usize)] = &[
    (1, 5),
    (2, 1),
    (3, 17),
    (4, 16),
    (5, 2047),
    (5, 2049),
    (7, 6_001),
    (8, 4_096),
    (9, 33),
    (12, 5_000),
    (13, 31),
    (3, 100_003),
    (2, 140_001),
    (33, 4_099),
    (64, 2_100),
];

fn levels() -> Vec<CpuStages> {
    [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512]
        .into_iter()
        .filter_map(CpuStages::with_simd)
        .collect()
}

fn random_rows(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| rng.sample::<f32, _>(StandardNormal))
                .collect()
        })
        .collect()
}

fn sq_norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum()
}

/// The agreement tolerance of a distance between x_i and x_j.
fn tolerance(reference: f64, xi: &[f32], xj: &[f32]) -> f64 {
    1e-4 * reference.abs() + 1e-6 * (sq_norm(xi) + sq_norm(xj))
}

/// Asserts entry by entry that `fast` is within the agreement tolerance of
/// `reference`, infinities equal.
fn assert_distances_close(
    fast: &Array2<f64>,
    reference: &Array2<f64>,
    rows: &[Vec<f32>],
    context: &str,
) {
    assert_eq!(fast.dim(), reference.dim(), "{context}: shape");
    for ((i, j), &expected) in reference.indexed_iter() {
        let got = fast[[i, j]];
        if expected.is_infinite() {
            assert_eq!(got, expected, "{context}: D[{i}][{j}]");
            continue;
        }
        let tol = tolerance(expected, &rows[i], &rows[j]);
        assert!(
            (got - expected).abs() <= tol,
            "{context}: D[{i}][{j}] = {got}, reference {expected}, |diff| {} > tolerance {tol}",
            (got - expected).abs()
        );
    }
}

#[test]
fn distances_match_reference_across_boundaries() {
    for (k, &(n, d)) in SIZES.iter().enumerate() {
        let seed = 100 + k as u64;
        let rows = random_rows(n, d, seed);
        let reference = byzagg::cpu::reference::sq_distances(&rows).unwrap();
        for stages in levels() {
            let fast = stages.sq_distances(&rows).unwrap();
            let context = format!("n = {n}, d = {d}, seed {seed}, {}", stages.simd().name());
            assert_distances_close(&fast, &reference, &rows, &context);
        }
    }
}

#[test]
fn distances_diagonal_is_zero() {
    let rows = random_rows(6, 3_000, 7);
    for stages in levels() {
        let fast = stages.sq_distances(&rows).unwrap();
        for i in 0..6 {
            assert_eq!(
                fast[[i, i]],
                0.0,
                "seed 7, {}: D[{i}][{i}]",
                stages.simd().name()
            );
        }
    }
}

/// Coordinates near 1000 with differences near 1e-3: the f32 Gram form
/// |x|² + |y|² − 2⟨x, y⟩ loses every digit here, the difference form must not.
#[test]
fn distances_survive_large_common_offset() {
    let (n, d, seed) = (9, 20_000, 11);
    let mut rng = Rng::seed_from_u64(seed);
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            (0..d)
                .map(|_| 1000.0 + 1e-3 * rng.sample::<f32, _>(StandardNormal))
                .collect()
        })
        .collect();
    let reference = byzagg::cpu::reference::sq_distances(&rows).unwrap();
    for stages in levels() {
        let fast = stages.sq_distances(&rows).unwrap();
        for i in 0..n {
            for j in 0..n {
                let expected = reference[[i, j]];
                let got = fast[[i, j]];
                // The relative bound alone: the absolute floor would be
                // 1e-6 · 2e10, far above these distances of about 0.04.
                assert!(
                    (got - expected).abs() <= 1e-4 * expected,
                    "seed {seed}, {}: D[{i}][{j}] = {got}, reference {expected}",
                    stages.simd().name()
                );
            }
        }
    }

    // The same data in the f32 Gram form is off by far more than 1e-4, which
    // is what this test guards against.
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>();
    let gram = dot(&rows[0], &rows[0]) + dot(&rows[1], &rows[1]) - 2.0 * dot(&rows[0], &rows[1]);
    let gram_error = (gram as f64 - reference[[0, 1]]).abs() / reference[[0, 1]];
    assert!(
        gram_error > 1e-4,
        "seed {seed}: the Gram form was accurate ({gram_error})"
    );
}

#[test]
fn distances_mark_non_finite_workers() {
    let (n, d, seed) = (7, 50_001, 21);
    let mut rows = random_rows(n, d, seed);
    rows[1][3] = f32::NAN;
    rows[4][d - 1] = f32::INFINITY; // in the tail of the last chunk
    rows[5][40_000] = f32::NEG_INFINITY; // in a later block
    let reference = byzagg::cpu::reference::sq_distances(&rows).unwrap();
    for stages in levels() {
        let context = format!("seed {seed}, {}", stages.simd().name());
        let fast = stages.sq_distances(&rows).unwrap();
        assert_distances_close(&fast, &reference, &rows, &context);
        for i in [0, 2, 3, 6] {
            assert_eq!(
                fast[[i, i]],
                0.0,
                "{context}: D[{i}][{i}] of a finite worker"
            );
        }
        assert_eq!(
            stages.non_finite(&rows).unwrap(),
            vec![1, 4, 5],
            "{context}: non_finite"
        );
    }
}

#[test]
fn distances_mark_lone_non_finite_worker() {
    let rows = vec![vec![1.0, f32::NAN, 2.0]];
    for stages in levels() {
        let fast = stages.sq_distances(&rows).unwrap();
        assert_eq!(
            fast[[0, 0]],
            f64::INFINITY,
            "{}: D[0][0]",
            stages.simd().name()
        );
    }
}

/// Differences beyond 1.8e19 overflow f32 when squared; the fast path
/// recomputes them in f64 and must match the reference.
#[test]
fn distances_recompute_f32_overflow() {
    let d = 3_000;
    let mut rows = random_rows(5, d, 31);
    rows[2][10] = 3e19;
    rows[3][10] = -3e19;
    rows[4][2_500] = 1e30;
    let reference = byzagg::cpu::reference::sq_distances(&rows).unwrap();
    for stages in levels() {
        let fast = stages.sq_distances(&rows).unwrap();
        assert_distances_close(
            &fast,
            &reference,
            &rows,
            &format!("seed 31, {}", stages.simd().name()),
        );
    }
}

/// A source that lends no rows, so that the fast path copies every block.
struct Copied(Vec<Vec<f32>>);

impl GradientSource for Copied {
    fn workers(&self) -> usize {
        self.0.len()
    }

    fn len_of(&self, worker: usize) -> usize {
        self.0[worker].len()
    }

    fn row(&self, _worker: usize) -> Option<&[f32]> {
        None
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> byzagg::Result<()> {
        out.copy_from_slice(&self.0[worker][start..start + out.len()]);
        Ok(())
    }
}

#[test]
fn distances_of_unborrowed_rows_match() {
    let (n, d, seed) = (6, 70_001, 41);
    let rows = random_rows(n, d, seed);
    let stages = CpuStages::new();
    let borrowed = stages.sq_distances(&rows).unwrap();
    let copied = stages.sq_distances(&Copied(rows.clone())).unwrap();
    assert_eq!(borrowed, copied, "seed {seed}");
}

/// n workers near 0 and the first f far away, so that the Krum scores are
/// well separated.
fn clustered_rows(n: usize, f: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rows = random_rows(n, d, seed);
    for row in rows.iter_mut().take(f) {
        for v in row.iter_mut() {
            *v += 5.0;
        }
    }
    rows
}

#[test]
fn krum_selects_like_reference() {
    for (n, f, d, seed) in [
        (7, 2, 1_000, 51),
        (11, 4, 9_001, 52),
        (32, 14, 3_000, 53),
        (5, 1, 70_000, 54),
    ] {
        let rows = clustered_rows(n, f, d, seed);
        let rule = Rule::Krum { f };
        let expected = Engine::reference().aggregate(&rule, &rows).unwrap();
        let got = Engine::cpu().aggregate(&rule, &rows).unwrap();
        assert_eq!(
            got.selected, expected.selected,
            "n = {n}, f = {f}, d = {d}, seed {seed}: selected"
        );
        assert_eq!(
            got.vector, expected.vector,
            "n = {n}, f = {f}, d = {d}, seed {seed}: vector"
        );
    }
}

#[test]
fn multi_krum_selects_like_reference() {
    for (n, f, d, seed) in [(7, 2, 1_000, 61), (13, 5, 5_003, 62)] {
        let rows = clustered_rows(n, f, d, seed);
        let rule = Rule::MultiKrum { f, m: n - f };
        let expected = Engine::reference().aggregate(&rule, &rows).unwrap();
        let got = Engine::cpu().aggregate(&rule, &rows).unwrap();
        let context = format!("n = {n}, f = {f}, d = {d}, seed {seed}");
        assert_eq!(got.selected, expected.selected, "{context}: selected");
        for (c, (a, b)) in got.vector.iter().zip(&expected.vector).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "{context}: coordinate {c}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn krum_skips_non_finite_worker() {
    let (n, f, d, seed) = (9, 3, 4_000, 71);
    let mut rows = clustered_rows(n, f, d, seed);
    rows[6][100] = f32::NAN;
    let rule = Rule::Krum { f };
    let expected = Engine::reference().aggregate(&rule, &rows).unwrap();
    let got = Engine::cpu().aggregate(&rule, &rows).unwrap();
    assert_eq!(got.non_finite, vec![6], "seed {seed}: non_finite");
    assert_eq!(got.selected, expected.selected, "seed {seed}: selected");
}

#[test]
fn weighted_sums_match_f64() {
    for (n, d, seed) in [(5, 3_001, 81), (9, 70_003, 82), (1, 10, 83)] {
        let rows = random_rows(n, d, seed);
        let mut rng = Rng::seed_from_u64(seed);
        let mut weights = Array2::from_shape_fn((3, n), |_| rng.random::<f64>());
        weights[[1, 0]] = 0.0;
        for stages in levels() {
            let sums = stages.weighted_sums(&rows, &weights).unwrap();
            let context = format!("n = {n}, d = {d}, seed {seed}, {}", stages.simd().name());
            assert_eq!(sums.len(), 3, "{context}: outputs");
            for (o, sum) in sums.iter().enumerate() {
                for c in 0..d {
                    let expected: f64 = (0..n).map(|i| weights[[o, i]] * rows[i][c] as f64).sum();
                    assert!(
                        (sum[c] as f64 - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
                        "{context}: output {o}, coordinate {c}: {} vs {expected}",
                        sum[c]
                    );
                }
            }
        }
    }
}

#[test]
fn weighted_sums_ignore_zero_weight_nan() {
    let mut rows = random_rows(4, 100, 91);
    rows[2][50] = f32::NAN;
    let weights = Array2::from_shape_fn((1, 4), |(_, i)| if i == 2 { 0.0 } else { 1.0 / 3.0 });
    let sums = CpuStages::new().weighted_sums(&rows, &weights).unwrap();
    assert!(
        sums[0].iter().all(|v| v.is_finite()),
        "seed 91: a NaN leaked into the sum"
    );
}

#[test]
fn sq_distances_to_match_f64() {
    for (n, d, seed) in [(6, 5_001, 101), (3, 100_001, 102)] {
        let rows = random_rows(n, d, seed);
        let point = random_rows(1, d, seed + 1000).remove(0);
        for stages in levels() {
            let got = stages.sq_distances_to(&rows, &point).unwrap();
            for (i, row) in rows.iter().enumerate() {
                let expected: f64 = row
                    .iter()
                    .zip(&point)
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum();
                let tol = tolerance(expected, row, &point);
                assert!(
                    (got[i] - expected).abs() <= tol,
                    "n = {n}, d = {d}, seed {seed}, {}: worker {i}: {} vs {expected}",
                    stages.simd().name(),
                    got[i]
                );
            }
        }
    }
}

/// The order statistics from their definitions in `CoordinateStat`, by sorting.
fn stat_oracle(values: &[f32], stat: CoordinateStat) -> f32 {
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    match stat {
        CoordinateStat::Median => median as f32,
        CoordinateStat::TrimmedMean { trim } => {
            let kept = &sorted[trim..n - trim];
            (kept.iter().sum::<f64>() / kept.len() as f64) as f32
        }
        CoordinateStat::MeanAroundMedian { beta } => {
            // The median is rounded to f32 first, as the backends do.
            let median = median as f32 as f64;
            let mut by_closeness = sorted.clone();
            by_closeness.sort_by(|a, b| {
                (a - median)
                    .abs()
                    .total_cmp(&(b - median).abs())
                    .then(a.total_cmp(b))
            });
            (by_closeness[..beta].iter().sum::<f64>() / beta as f64) as f32
        }
    }
}

#[test]
fn coordinate_stats_match_definitions() {
    for (n, d, seed) in [
        (1, 7, 111),
        (2, 9, 112),
        (5, 3_001, 113),
        (8, 40_003, 114),
        (11, 100, 115),
    ] {
        let mut rows = random_rows(n, d, seed);
        // Repeated values, so that ties occur.
        for row in rows.iter_mut() {
            for v in row.iter_mut() {
                *v = (*v * 2.0).round() / 2.0;
            }
        }
        let mut stats = vec![
            CoordinateStat::Median,
            CoordinateStat::MeanAroundMedian {
                beta: n.div_ceil(2),
            },
        ];
        stats.extend((0..n.div_ceil(2)).map(|trim| CoordinateStat::TrimmedMean { trim }));
        let stages = CpuStages::new();
        for stat in stats {
            let got = stages.coordinate_stat(&rows, stat).unwrap();
            for c in 0..d {
                let values: Vec<f32> = rows.iter().map(|r| r[c]).collect();
                let expected = stat_oracle(&values, stat);
                assert!(
                    (got[c] - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
                    "n = {n}, d = {d}, seed {seed}, {stat:?}: coordinate {c}: {} vs {expected} from {values:?}",
                    got[c]
                );
            }
        }
    }
}

#[test]
fn coordinate_stat_rejects_overtrimming() {
    let rows = random_rows(4, 10, 121);
    let result = CpuStages::new().coordinate_stat(&rows, CoordinateStat::TrimmedMean { trim: 2 });
    assert!(result.is_err(), "trimming 2 of 4 at each end was accepted");
}

fn byzagg() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_byzagg"))
}

#[test]
fn cli_bench_prints_json() {
    let output = byzagg()
        .args([
            "bench",
            "--n",
            "7",
            "--d",
            "3000",
            "--repeats",
            "2",
            "--json",
        ])
        .args(["--backends", "memory,reference,cpu,gpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["n"], 7);
    assert_eq!(report["d"], 3000);
    assert_eq!(report["rule"], "krum");
    assert_eq!(report["f"], 2);
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["memory", "reference", "cpu", "gpu"]);
    for row in &rows[..3] {
        assert!(row["median_s"].as_f64().unwrap() > 0.0, "no time in {row}");
        assert!(row["gb_per_s"].as_f64().unwrap() > 0.0, "no GB/s in {row}");
    }
    assert!(
        rows[2]["gflop_per_s"].as_f64().unwrap() > 0.0,
        "no GFLOP/s in {}",
        rows[2]
    );
    assert!(
        rows[2]["speedup_vs_reference"].as_f64().unwrap() > 0.0,
        "no speed-up in {}",
        rows[2]
    );
    assert_eq!(
        rows[1]["selected"], rows[2]["selected"],
        "reference and cpu selections differ"
    );
    // The GPU either ran or reports why not.
    let gpu = &rows[3];
    assert!(
        gpu["median_s"].is_f64() || gpu["unavailable"].is_string(),
        "gpu row is neither timed nor unavailable: {gpu}"
    );
}

#[test]
fn cli_bench_rejects_too_few_workers() {
    let output = byzagg()
        .args(["bench", "--n", "2", "--d", "10", "--rule", "krum"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "n = 2 was accepted for Krum");
    assert!(stderr.contains("n > 2f + 2"), "unclear message: {stderr}");
}

#[test]
fn cli_bench_rejects_zero_dimension() {
    let output = byzagg().args(["bench", "--d", "0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "d = 0 was accepted");
    assert!(stderr.contains("d = 0"), "unclear message: {stderr}");
}

#[test]
fn cli_bench_rejects_unknown_backend() {
    let output = byzagg()
        .args(["bench", "--backends", "cpu,tpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "backend tpu was accepted");
    assert!(stderr.contains("tpu"), "unclear message: {stderr}");
}

#[test]
fn cli_bench_rejects_oversized_gradients() {
    let output = byzagg()
        .args([
            "bench",
            "--n",
            "1000000",
            "--d",
            "1000000000",
            "--backends",
            "cpu",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "4 PB of gradients were accepted");
    assert!(stderr.contains("lower n or d"), "unclear message: {stderr}");
    assert!(
        stderr.contains("n × d"),
        "the message blames one of n and d: {stderr}"
    );
}

#[test]
fn cli_bench_rejects_unknown_rule() {
    let output = byzagg()
        .args(["bench", "--rule", "krum2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "rule krum2 was accepted");
    assert!(
        stderr.contains("unknown rule \"krum2\""),
        "unclear message: {stderr}"
    );
    assert!(
        stderr.contains("multi-krum"),
        "no valid rules listed: {stderr}"
    );
}
