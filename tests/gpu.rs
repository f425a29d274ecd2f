//! The GPU backend against the f64 reference, on whatever adapter wgpu finds
//! (lavapipe on machines without a GPU).
//!
//! Without an adapter every test prints a skip message and passes, unless the
//! environment sets REQUIRE_GPU=1, which turns the skip into a failure.
//! Tolerances: distances within a relative 1e-4 of the reference with an
//! absolute floor of 1e-6·(|x_i|² + |x_j|²); selections identical whenever
//! the reference's scores are separated by more than that.

use std::sync::{Arc, OnceLock};

use byzagg::gpu::{AdapterFilter, GpuContext, GpuOptions, GpuStages};
use byzagg::stages::Stages;
use byzagg::{Engine, Rule};
use ndarray::Array2;

/// Slice cap of the streaming engine: small and not a multiple of any
/// workgroup or span size, so that every slice boundary falls mid-span.
const SMALL_SLICE: usize = 1000;

struct Gpu {
    context: Arc<GpuContext>,
    engine: Engine,
}

fn build(options: GpuOptions) -> Option<Gpu> {
    let required = std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1");
    match GpuContext::with_options(&AdapterFilter::from_env(), options) {
        Ok(context) => {
            let context = Arc::new(context);
            let engine = Engine::with_context(Arc::clone(&context));
            Some(Gpu { context, engine })
        }
        Err(error) if !required => {
            eprintln!("skipping GPU test: {error} (set REQUIRE_GPU=1 to fail instead)");
            None
        }
        Err(error) => panic!("REQUIRE_GPU=1 but no GPU engine: {error}"),
    }
}

/// Returns the GPU engine with the default options, shared by the tests.
fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| build(GpuOptions::default())).as_ref()
}

/// Returns a GPU engine whose slices hold at most [`SMALL_SLICE`] coordinates.
fn streaming_gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        build(GpuOptions {
            max_slice_len: Some(SMALL_SLICE),
            ..GpuOptions::default()
        })
    })
    .as_ref()
}

/// SplitMix64, so the data depends on the seed alone.
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// n honest gradients around a common centre plus `outliers` far away, the
/// outliers last.
fn clustered(seed: u64, n: usize, d: usize, outliers: usize) -> Vec<Vec<f32>> {
    let mut random = Random(seed);
    let centre: Vec<f32> = (0..d).map(|_| random.unit()).collect();
    (0..n)
        .map(|i| {
            let spread = if i >= n - outliers {
                20.0
            } else {
                0.1 + 0.01 * i as f32
            };
            centre.iter().map(|&c| c + spread * random.unit()).collect()
        })
        .collect()
}

fn sq_norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum()
}

/// Asserts that `got` matches the reference distances within the contract.
fn assert_distances(label: &str, grads: &[Vec<f32>], got: &Array2<f64>, want: &Array2<f64>) {
    let n = grads.len();
    assert_eq!(got.dim(), (n, n), "{label}: matrix shape");
    for i in 0..n {
        for j in 0..n {
            let (g, w) = (got[[i, j]], want[[i, j]]);
            if !w.is_finite() {
                assert_eq!(g, w, "{label}: D[{i}][{j}] gpu {g} reference {w}");
                continue;
            }
            let tolerance = 1e-4 * w.abs() + 1e-6 * (sq_norm(&grads[i]) + sq_norm(&grads[j]));
            assert!(
                (g - w).abs() <= tolerance,
                "{label}: D[{i}][{j}] gpu {g} reference {w} differ by {} > tolerance {tolerance}",
                (g - w).abs()
            );
        }
    }
}

/// Asserts that the reference's lowest `m` scores are separated from the
/// next one by more than the tolerance, or tie exactly (as the closest pair
/// does for n = 3), so that the selection must match.
fn assert_separated(label: &str, scores: &[f64], m: usize) {
    let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if m < sorted.len() {
        let gap = sorted[m] - sorted[m - 1];
        assert!(
            gap == 0.0 || gap > 1e-4 * sorted[m].abs(),
            "{label}: test data has reference scores {} and {} too close to compare selections",
            sorted[m - 1],
            sorted[m]
        );
    }
}

/// Asserts |got − want| ≤ 1e-5 · Σ_i |w_i x_i[c]| for every coordinate of an
/// average of `chosen`.
fn assert_mean(label: &str, grads: &[Vec<f32>], chosen: &[usize], got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{label}: output length");
    for c in 0..want.len() {
        let magnitude: f64 = chosen
            .iter()
            .map(|&i| (grads[i][c] as f64).abs())
            .sum::<f64>()
            / chosen.len() as f64;
        let tolerance = 1e-5 * magnitude + f32::MIN_POSITIVE as f64;
        let difference = (got[c] as f64 - want[c] as f64).abs();
        assert!(
            difference <= tolerance,
            "{label}: coordinate {c} gpu {} reference {} differ by {difference} > {tolerance}",
            got[c],
            want[c]
        );
    }
}

fn check_krum(label: &str, engine: &Engine, grads: &[Vec<f32>], f: usize) {
    let rule = Rule::Krum { f };
    let want = Engine::reference()
        .aggregate(&rule, grads)
        .expect("reference Krum");
    let got = engine.aggregate(&rule, grads).expect("GPU Krum");
    let want_scores = want.scores.as_ref().expect("reference scores");
    assert_separated(label, want_scores, 1);
    assert_eq!(got.selected, want.selected, "{label}: Krum selection");
    assert_eq!(got.vector, want.vector, "{label}: Krum output");
    assert_eq!(
        got.non_finite, want.non_finite,
        "{label}: non-finite workers"
    );
}

#[test]
fn distances_across_shapes() {
    for (name, gpu) in [("default", gpu()), ("streaming", streaming_gpu())] {
        let Some(gpu) = gpu else { return };
        for (seed, &n) in [3usize, 4, 9, 17, 33].iter().enumerate() {
            for &d in &[
                1usize, 7, 63, 64, 65, 999, 1000, 1001, 4095, 4096, 4097, 9000,
            ] {
                let seed = seed as u64 * 1000 + d as u64;
                let label = format!("{name} engine, n = {n}, d = {d}, seed {seed}");
                let grads = clustered(seed, n, d, 1);
                let want = Engine::reference()
                    .pairwise_sq_distances(&grads)
                    .expect("reference");
                let got = gpu
                    .engine
                    .pairwise_sq_distances(&grads)
                    .expect("GPU distances");
                assert_distances(&label, &grads, &got, &want);
            }
        }
    }
}

#[test]
fn krum_across_shapes() {
    for (name, gpu) in [("default", gpu()), ("streaming", streaming_gpu())] {
        let Some(gpu) = gpu else { return };
        for &(n, f) in &[(3usize, 0usize), (5, 1), (7, 2), (16, 6), (40, 10)] {
            for &d in &[1usize, 64, 4097, 12_000] {
                let seed = (n * 100_000 + d) as u64;
                let label = format!("{name} engine, n = {n}, f = {f}, d = {d}, seed {seed}");
                let grads = clustered(seed, n, d, f);
                check_krum(&label, &gpu.engine, &grads, f);
            }
        }
    }
}

#[test]
fn krum_with_hundreds_of_workers() {
    let Some(gpu) = gpu() else { return };
    for &(n, f, d) in &[(300usize, 100usize, 64usize), (257, 60, 700)] {
        let seed = n as u64;
        let grads = clustered(seed, n, d, f);
        let label = format!("n = {n}, f = {f}, d = {d}, seed {seed}");
        let want = Engine::reference()
            .pairwise_sq_distances(&grads)
            .expect("reference");
        let got = gpu
            .engine
            .pairwise_sq_distances(&grads)
            .expect("GPU distances");
        assert_distances(&label, &grads, &got, &want);
        check_krum(&label, &gpu.engine, &grads, f);
    }
}

#[test]
fn multi_krum_and_mean() {
    let Some(gpu) = gpu() else { return };
    let (n, f, d) = (11, 3, 5000);
    let grads = clustered(7, n, d, f);
    for m in [1, n - f, n] {
        let label = format!("Multi-Krum n = {n}, f = {f}, m = {m}, d = {d}, seed 7");
        let rule = Rule::MultiKrum { f, m };
        let want = Engine::reference()
            .aggregate(&rule, &grads)
            .expect("reference");
        let got = gpu.engine.aggregate(&rule, &grads).expect("GPU Multi-Krum");
        assert_separated(&label, want.scores.as_ref().expect("scores"), m);
        assert_eq!(got.selected, want.selected, "{label}: selection");
        assert_mean(&label, &grads, &want.selected, &got.vector, &want.vector);
    }
    let rule = Rule::Mean { f };
    let all: Vec<usize> = (0..n).collect();
    let want = Engine::reference()
        .aggregate(&rule, &grads)
        .expect("reference");
    let got = gpu.engine.aggregate(&rule, &grads).expect("GPU mean");
    assert_mean("mean, seed 7", &grads, &all, &got.vector, &want.vector);
}

#[test]
fn streaming_multi_krum_and_mean() {
    let Some(gpu) = streaming_gpu() else { return };
    let (n, f, d) = (9, 2, 4321);
    let grads = clustered(11, n, d, f);
    let rule = Rule::MultiKrum { f, m: n - f };
    let want = Engine::reference()
        .aggregate(&rule, &grads)
        .expect("reference");
    let got = gpu.engine.aggregate(&rule, &grads).expect("GPU Multi-Krum");
    assert_eq!(
        got.selected, want.selected,
        "streaming Multi-Krum selection"
    );
    assert_mean(
        "streaming Multi-Krum",
        &grads,
        &want.selected,
        &got.vector,
        &want.vector,
    );
    let all: Vec<usize> = (0..n).collect();
    let want = Engine::reference()
        .aggregate(&Rule::Mean { f }, &grads)
        .expect("reference");
    let got = gpu
        .engine
        .aggregate(&Rule::Mean { f }, &grads)
        .expect("GPU mean");
    assert_mean("streaming mean", &grads, &all, &got.vector, &want.vector);
}

#[test]
fn non_finite_rows() {
    let Some(gpu) = gpu() else { return };
    let (n, f, d) = (9, 3, 5000);
    let mut grads = clustered(21, n, d, 0);
    grads[2][17] = f32::NAN;
    grads[5][d - 1] = f32::INFINITY;
    grads[7][0] = f32::NEG_INFINITY;
    let label = "NaN, +Inf and -Inf rows, seed 21";

    let want = Engine::reference()
        .pairwise_sq_distances(&grads)
        .expect("reference");
    let got = gpu
        .engine
        .pairwise_sq_distances(&grads)
        .expect("GPU distances");
    assert_distances(label, &grads, &got, &want);
    for i in [2, 5, 7] {
        assert_eq!(
            got[[i, i]],
            f64::INFINITY,
            "{label}: diagonal of non-finite worker {i}"
        );
    }
    assert_eq!(got[[0, 0]], 0.0, "{label}: diagonal of finite worker 0");

    check_krum(label, &gpu.engine, &grads, f);
    let rule = Rule::MultiKrum { f, m: n - f };
    let want = Engine::reference()
        .aggregate(&rule, &grads)
        .expect("reference");
    let got = gpu.engine.aggregate(&rule, &grads).expect("GPU Multi-Krum");
    assert_eq!(got.selected, want.selected, "{label}: Multi-Krum selection");
    assert_mean(label, &grads, &want.selected, &got.vector, &want.vector);

    let finite: Vec<usize> = (0..n).filter(|i| ![2, 5, 7].contains(i)).collect();
    let want = Engine::reference()
        .aggregate(&Rule::Mean { f }, &grads)
        .expect("reference");
    let got = gpu
        .engine
        .aggregate(&Rule::Mean { f }, &grads)
        .expect("GPU mean");
    assert_eq!(
        got.non_finite,
        vec![2, 5, 7],
        "{label}: mean's non-finite workers"
    );
    assert_mean(label, &grads, &finite, &got.vector, &want.vector);

    let too_many = gpu.engine.aggregate(&Rule::Krum { f: 2 }, &grads);
    assert!(
        matches!(too_many, Err(byzagg::Error::TooManyNonFinite { .. })),
        "{label}: f = 2 with three non-finite workers gave {too_many:?}"
    );
}

#[test]
fn identical_rows_tie_to_lowest_index() {
    let Some(gpu) = gpu() else { return };
    let (n, f, d) = (8, 2, 3000);
    let mut grads = clustered(31, n, d, f);
    // Workers 1 and 4 are both the mean of the other honest workers, so
    // they tie for the best score.
    let honest = [0, 2, 3, 5];
    let best: Vec<f32> = (0..d)
        .map(|c| honest.iter().map(|&i| grads[i][c]).sum::<f32>() / honest.len() as f32)
        .collect();
    grads[1] = best.clone();
    grads[4] = best;
    let rule = Rule::Krum { f };
    let want = Engine::reference()
        .aggregate(&rule, &grads)
        .expect("reference");
    let got = gpu.engine.aggregate(&rule, &grads).expect("GPU Krum");
    let scores = got.scores.as_ref().expect("GPU scores");
    assert_eq!(
        scores[1], scores[4],
        "identical rows 1 and 4 score the same on the GPU"
    );
    assert_eq!(want.selected, vec![1], "reference picks the lower index");
    assert_eq!(got.selected, vec![1], "GPU picks the lower index");

    let rule = Rule::MultiKrum { f, m: 2 };
    let want = Engine::reference()
        .aggregate(&rule, &grads)
        .expect("reference");
    let got = gpu.engine.aggregate(&rule, &grads).expect("GPU Multi-Krum");
    assert_eq!(got.selected, want.selected, "Multi-Krum m = 2 with a tie");
}

#[test]
fn large_common_offset() {
    let Some(gpu) = gpu() else { return };
    let (n, f, d) = (7, 2, 20_000);
    let mut random = Random(41);
    let grads: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let spread = if i >= n - f {
                1e-2
            } else {
                1e-3 * (1.0 + 0.1 * i as f32)
            };
            (0..d).map(|_| 1000.0 + spread * random.unit()).collect()
        })
        .collect();
    let label = "coordinates near 1000, differences near 1e-3, seed 41";
    let want = Engine::reference()
        .pairwise_sq_distances(&grads)
        .expect("reference");
    let got = gpu
        .engine
        .pairwise_sq_distances(&grads)
        .expect("GPU distances");
    // The contract's absolute floor would be 1e-6·(|x_i|² + |x_j|²) ≈ 4e4,
    // far above these distances, so check the relative error alone.
    for i in 0..n {
        for j in 0..n {
            let (g, w) = (got[[i, j]], want[[i, j]]);
            let tolerance = 1e-4 * w;
            assert!(
                (g - w).abs() <= tolerance,
                "{label}: D[{i}][{j}] gpu {g} reference {w} differ by more than {tolerance}"
            );
        }
    }
    check_krum(label, &gpu.engine, &grads, f);
}

#[test]
fn f32_overflow_of_distances_and_scores() {
    let Some(gpu) = gpu() else { return };
    // Differences near 4e19 square to 1.6e39, beyond f32::MAX ≈ 3.4e38,
    // while f64 represents them.
    let grads: Vec<Vec<f32>> = vec![
        vec![0.0, 1e19],
        vec![1.0e19, 0.0],
        vec![-2.0e19, 1.5e19],
        vec![3.0e19, -2e19],
        vec![1.2e19, 0.7e19],
    ];
    let label = "distances overflowing f32";
    let want = Engine::reference()
        .pairwise_sq_distances(&grads)
        .expect("reference");
    let got = gpu
        .engine
        .pairwise_sq_distances(&grads)
        .expect("GPU distances");
    assert_distances(label, &grads, &got, &want);
    check_krum(label, &gpu.engine, &grads, 1);

    // Scaled basis vectors: every distance s_i² + s_j² ≈ 2e38 fits f32, but
    // each score, the sum of n − f − 2 = 2 of them, does not.
    let n = 5;
    let grads: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let mut row = vec![0f32; n];
            row[i] = 1.0e19 * (1.0 + 0.01 * i as f32);
            row
        })
        .collect();
    let label = "scores overflowing f32";
    let want = Engine::reference()
        .aggregate(&Rule::Krum { f: 1 }, &grads)
        .expect("reference");
    let got = gpu
        .engine
        .aggregate(&Rule::Krum { f: 1 }, &grads)
        .expect("GPU Krum");
    let want_scores = want.scores.as_ref().expect("reference scores");
    let got_scores = got.scores.as_ref().expect("GPU scores");
    for i in 0..n {
        assert!(
            want_scores[i] > f32::MAX as f64,
            "{label}: reference score {i} must overflow f32"
        );
        let difference = (got_scores[i] - want_scores[i]).abs();
        assert!(
            difference <= 1e-4 * want_scores[i],
            "{label}: score {i} gpu {} reference {}",
            got_scores[i],
            want_scores[i]
        );
    }
    check_krum(label, &gpu.engine, &grads, 1);
}

#[test]
fn stages_match_f64() {
    let Some(gpu) = streaming_gpu() else { return };
    let stages = GpuStages::new(Arc::clone(&gpu.context));
    let (n, d) = (6, 2500);
    let grads = clustered(51, n, d, 1);

    let point: Vec<f32> = (0..d).map(|c| grads[0][c] * 0.5 + 0.25).collect();
    let got = stages
        .sq_distances_to(&grads, &point)
        .expect("GPU distances to a point");
    for i in 0..n {
        let want: f64 = grads[i]
            .iter()
            .zip(&point)
            .map(|(&x, &z)| (x as f64 - z as f64).powi(2))
            .sum();
        let tolerance = 1e-4 * want + 1e-6 * (sq_norm(&grads[i]) + sq_norm(&point));
        assert!(
            (got[i] - want).abs() <= tolerance,
            "|x_{i} − z|² gpu {} f64 {want}",
            got[i]
        );
    }

    let weights = Array2::from_shape_fn((3, n), |(o, i)| ((o + 1) * (i + 2)) as f64 / 10.0);
    let sums = stages
        .weighted_sums(&grads, &weights)
        .expect("GPU weighted sums");
    assert_eq!(sums.len(), 3, "one weighted sum per weight row");
    for (o, sum) in sums.iter().enumerate() {
        for c in 0..d {
            let want: f64 = (0..n).map(|i| weights[[o, i]] * grads[i][c] as f64).sum();
            let magnitude: f64 = (0..n)
                .map(|i| (weights[[o, i]] * grads[i][c] as f64).abs())
                .sum();
            let difference = (sum[c] as f64 - want).abs();
            assert!(
                difference <= 1e-5 * magnitude + 1e-30,
                "output {o} coordinate {c}: gpu {} f64 {want}",
                sum[c]
            );
        }
    }

    let scores = [3.0, 1.0, f64::NAN, 1.0, f64::INFINITY, 0.5, 1.0 + 1e-12];
    for m in 0..=scores.len() {
        let got = stages.select_lowest(&scores, m).expect("GPU selection");
        assert_eq!(
            got,
            byzagg::cpu::select_lowest(&scores, m),
            "select_lowest m = {m}"
        );
    }

    let mut with_nan = grads.clone();
    with_nan[3][d / 2] = f32::NAN;
    with_nan[4][d - 1] = f32::NEG_INFINITY;
    let flagged = stages.non_finite(&with_nan).expect("GPU non-finite check");
    assert_eq!(flagged, vec![3, 4], "non-finite workers");
}

/// One worker's row alone is larger than lavapipe's 128 MiB storage-binding
/// limit, so each row is split across slices.
#[test]
fn row_larger_than_storage_binding() {
    let Some(gpu) = gpu() else { return };
    let d = (1usize << 25) + 4097;
    let mut random = Random(61);
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|i| (0..d).map(|_| i as f32 * 0.01 + random.unit()).collect())
        .collect();
    let got = gpu
        .engine
        .pairwise_sq_distances(&grads)
        .expect("GPU distances");
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        let want: f64 = grads[i]
            .iter()
            .zip(&grads[j])
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let tolerance = 1e-4 * want + 1e-6 * (sq_norm(&grads[i]) + sq_norm(&grads[j]));
        assert!(
            (got[[i, j]] - want).abs() <= tolerance,
            "d = {d}, seed 61: D[{i}][{j}] gpu {} f64 {want}",
            got[[i, j]]
        );
    }
    let out = gpu
        .engine
        .aggregate(&Rule::Krum { f: 0 }, &grads)
        .expect("GPU Krum");
    let scores = out.scores.as_ref().expect("scores");
    let want_best = byzagg::cpu::select_lowest(scores, 1);
    assert_eq!(out.selected, want_best, "Krum on d = {d}");
}

/// A memory budget smaller than the input streams it in slices; one too
/// small for a single coordinate is a typed error.
#[test]
fn memory_budget_bounds_slices() {
    let budget = 1 << 20;
    let Some(gpu) = build(GpuOptions {
        memory_budget: Some(budget),
        ..GpuOptions::default()
    }) else {
        return;
    };
    let (n, f, d) = (5, 1, 200_000);
    let grads = clustered(71, n, d, f);
    assert!(
        (n * d * 4) as u64 > budget,
        "the input must exceed the budget"
    );
    let label = format!("budget {budget} bytes, n = {n}, d = {d}, seed 71");
    let want = Engine::reference()
        .pairwise_sq_distances(&grads)
        .expect("reference");
    let got = gpu
        .engine
        .pairwise_sq_distances(&grads)
        .expect("GPU distances");
    assert_distances(&label, &grads, &got, &want);
    check_krum(&label, &gpu.engine, &grads, f);

    let Some(tiny) = build(GpuOptions {
        memory_budget: Some(1024),
        ..GpuOptions::default()
    }) else {
        return;
    };
    let result = tiny.engine.pairwise_sq_distances(&grads);
    assert!(
        matches!(result, Err(byzagg::Error::MemoryBudget { .. })),
        "a 1 KiB budget gave {result:?}"
    );
}

/// Median, trimmed mean and the mean around the median on the GPU against the
/// CPU path, whose f64 means are the definition here because the reference
/// does not implement these rules.
#[test]
fn coordinate_stats_match_cpu() {
    use byzagg::stages::CoordinateStat;

    let Some(gpu) = streaming_gpu() else { return };
    let stages = GpuStages::new(Arc::clone(&gpu.context));
    let cpu = byzagg::cpu::CpuStages::new();
    for &(n, d) in &[(3usize, 1usize), (4, 2500), (7, 1001), (10, 64)] {
        let seed = (n * 10_000 + d) as u64;
        let mut grads = clustered(seed, n, d, 1);
        // Repeated values exercise the ties.
        grads[1][0] = grads[0][0];
        let mut stats = vec![CoordinateStat::Median];
        for trim in 0..n.div_ceil(2) {
            if n > 2 * trim {
                stats.push(CoordinateStat::TrimmedMean { trim });
            }
        }
        for beta in 1..=n {
            stats.push(CoordinateStat::MeanAroundMedian { beta });
        }
        for stat in stats {
            let label = format!("{stat:?}, n = {n}, d = {d}, seed {seed}");
            let got = stages.coordinate_stat(&grads, stat).expect("GPU statistic");
            let want = cpu.coordinate_stat(&grads, stat).expect("CPU statistic");
            assert_eq!(got.len(), d, "{label}: output length");
            for c in 0..d {
                let magnitude = (0..n).map(|i| grads[i][c].abs()).fold(0f32, f32::max) as f64;
                let difference = (got[c] as f64 - want[c] as f64).abs();
                assert!(
                    difference <= 1e-6 * magnitude,
                    "{label}: coordinate {c} gpu {} cpu {} differ by {difference}",
                    got[c],
                    want[c]
                );
            }
        }
    }

    let (n, f, d) = (11, 2, 3000);
    let grads = clustered(81, n, d, f);
    for rule in [
        Rule::Median { f },
        Rule::TrimmedMean { f },
        Rule::Bulyan { f },
    ] {
        let label = format!("{rule:?}, n = {n}, d = {d}, seed 81");
        let got = gpu.engine.aggregate(&rule, &grads).expect("GPU rule");
        let want = Engine::cpu().aggregate(&rule, &grads).expect("CPU rule");
        assert_eq!(got.selected, want.selected, "{label}: selection");
        for c in 0..d {
            let difference = (got.vector[c] - want.vector[c]).abs();
            assert!(
                difference <= 1e-6 * want.vector[c].abs().max(1.0),
                "{label}: coordinate {c} gpu {} cpu {}",
                got.vector[c],
                want.vector[c]
            );
        }
    }
}

/// The mean around the median on values drawn from a small set, so that many
/// values are equal or lie at equal distance from the median, for odd and even
/// counts: the GPU must keep the same values as the CPU, ties going to the
/// lower value, and the exact sums make the means equal.
#[test]
fn mean_around_median_ties_match_cpu_exactly() {
    use byzagg::stages::CoordinateStat;

    const VALUES: [f32; 14] = [
        -1024.0, -4.0, -2.5, -1.0, -0.5, -0.0, 0.0, 0.25, 0.5, 1.0, 1.5, 3.0, 1e-3, 2048.5,
    ];
    let Some(gpu) = streaming_gpu() else { return };
    let stages = GpuStages::new(Arc::clone(&gpu.context));
    let cpu = byzagg::cpu::CpuStages::new();
    let d = 300;
    for n in 1..=9usize {
        let seed = 7_000 + n as u64;
        // A fixed linear congruential sequence picks the values.
        let mut state = seed;
        let mut pick = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            VALUES[(state >> 33) as usize % VALUES.len()]
        };
        let grads: Vec<Vec<f32>> = (0..n).map(|_| (0..d).map(|_| pick()).collect()).collect();
        for beta in 1..=n {
            let stat = CoordinateStat::MeanAroundMedian { beta };
            let label = format!("{stat:?}, n = {n}, d = {d}, seed {seed}");
            let got = stages.coordinate_stat(&grads, stat).expect("GPU statistic");
            let want = cpu.coordinate_stat(&grads, stat).expect("CPU statistic");
            assert_eq!(got.len(), d, "{label}: output length");
            for c in 0..d {
                let column: Vec<f32> = grads.iter().map(|row| row[c]).collect();
                assert!(
                    got[c] == want[c],
                    "{label}: coordinate {c} values {column:?} gpu {} cpu {}",
                    got[c],
                    want[c]
                );
            }
        }
        for beta in [0, n + 1] {
            let result = stages.coordinate_stat(&grads, CoordinateStat::MeanAroundMedian { beta });
            assert!(
                matches!(result, Err(byzagg::Error::InvalidParameter { .. })),
                "beta = {beta} of n = {n} gave {result:?}"
            );
        }
    }
}

/// Values spanning more than 2^29 within a coordinate, where the CPU path's
/// f64 median and distances round: an exact tie can become a strict order or
/// the other way round, and the GPU must keep the same values. No column lets
/// large values cancel, so the f32 means hide the rounding of the CPU path's
/// f64 sums.
#[test]
fn mean_around_median_rounds_like_cpu() {
    use byzagg::stages::CoordinateStat;

    let Some(gpu) = streaming_gpu() else { return };
    let stages = GpuStages::new(Arc::clone(&gpu.context));
    let cpu = byzagg::cpu::CpuStages::new();
    // Columns, one per coordinate; rows are workers.
    let columns: [[f32; 4]; 5] = [
        [-9.529_983_3e-7, 1.716_242_5e-22, 1.0, -1.0],
        [1e-12, -3.0, 5.0, 2e-12],
        [2e6, 1e-8, 3e-8, -1e6],
        [1.0, 1e-10, -1e-10, 1.0 + f32::EPSILON],
        [-f32::MIN_POSITIVE, 1e-45, 3e-45, -1e-30],
    ];
    for n in 2..=4usize {
        let grads: Vec<Vec<f32>> = (0..n)
            .map(|i| columns.iter().map(|column| column[i]).collect())
            .collect();
        for beta in 1..=n {
            let stat = CoordinateStat::MeanAroundMedian { beta };
            let got = stages.coordinate_stat(&grads, stat).expect("GPU statistic");
            let want = cpu.coordinate_stat(&grads, stat).expect("CPU statistic");
            for (c, column) in columns.iter().enumerate() {
                assert!(
                    got[c] == want[c],
                    "{stat:?}: values {:?} gpu {} cpu {}",
                    &column[..n],
                    got[c],
                    want[c]
                );
            }
        }
    }
}

#[test]
fn adapter_filter_without_match() {
    let filter = AdapterFilter {
        index: None,
        name: Some("no-such-adapter-name".to_string()),
        allow_software: true,
    };
    let result = GpuContext::new(&filter);
    assert!(
        matches!(result, Err(byzagg::Error::NoAdapter { .. })),
        "a filter matching no adapter gave {:?}",
        result.err()
    );
}

/// A context built on the caller's own device and queue computes the same
/// distances as one built by the library.
#[test]
fn context_from_callers_device() {
    let Some(gpu) = gpu() else { return };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let wanted = gpu.context.adapter_info();
    let adapter = adapters
        .into_iter()
        .find(|a| {
            let info = a.get_info();
            info.name == wanted.name && info.backend == wanted.backend
        })
        .expect("the library's adapter is enumerated again");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("device with default limits");
    let context = GpuContext::from_device(device, queue, adapter.get_info(), GpuOptions::default())
        .expect("context from the caller's device");
    let engine = Engine::with_context(Arc::new(context));
    let grads = clustered(91, 6, 3000, 1);
    let want = Engine::reference()
        .pairwise_sq_distances(&grads)
        .expect("reference");
    let got = engine.pairwise_sq_distances(&grads).expect("GPU distances");
    assert_distances(
        "caller's device, n = 6, d = 3000, seed 91",
        &grads,
        &got,
        &want,
    );
}
