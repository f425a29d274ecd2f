//! Property tests: the fast CPU backend and the GPU backend against the f64
//! reference on random inputs.
//!
//! The agreement contract between backends: squared distances within a
//! relative 1e-4 of the reference, with an absolute floor of
//! 1e-6 × (|x_i|² + |x_j|²); identical selections whenever the reference's
//! scores are separated by more than that tolerance (within it, either worker
//! is accepted); the same error variant whenever one backend fails.
//!
//! Inputs mix every kind of worker the engine must survive: ordinary rows,
//! exact duplicates, rows with a large common offset, and NaN or ±Inf rows, up
//! to f of them and beyond. Values are scaled by 1e-6 to 1e6 in the main
//! tests. The `tiny_scale` and `huge_scale` tests use 1e-30 and 1e30, so their
//! squared differences underflow and overflow f32.
//!
//! Every run uses the fixed seed [`SEED`], and proptest records shrunk
//! failures in `proptest-regressions/properties.txt`, which later runs replay
//! first. Override the seed with `PROPTEST_RNG_SEED` to explore further.

use std::mem::discriminant;
use std::sync::OnceLock;

use byzagg::{Aggregation, Engine, Error, Rule};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};

/// The seed of every property test, printed in each failure message.
const SEED: u64 = 0xB42A_6600;

/// Relative tolerance of a squared distance.
const DISTANCE_RELATIVE: f64 = 1e-4;
/// Absolute floor of the distance tolerance, times |x_i|² + |x_j|².
const DISTANCE_FLOOR: f64 = 1e-6;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(SEED),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/properties.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// Scales of the main tests: far from f32's limits once squared.
const MODERATE: &[f32] = &[1e-6, 1.0, 1e6];
/// Scales whose squared differences underflow f32.
const TINY: &[f32] = &[1e-30];
/// Scales whose squared differences overflow f32.
const HUGE: &[f32] = &[1e30];

/// What one worker sends.
#[derive(Clone, Copy, Debug)]
enum RowKind {
    /// Random values.
    Plain,
    /// A copy of an earlier row (the selector picks which).
    Duplicate(usize),
    /// Random values with one coordinate (the selector picks which) replaced.
    NonFinite(usize, f32),
}

fn row_kind() -> impl Strategy<Value = RowKind> {
    prop_oneof![
        6 => Just(RowKind::Plain),
        2 => any::<usize>().prop_map(RowKind::Duplicate),
        1 => (
            any::<usize>(),
            prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY])
        )
            .prop_map(|(c, v)| RowKind::NonFinite(c, v)),
    ]
}

/// n workers of dimension d and the rule's f.
#[derive(Clone, Debug)]
struct Case {
    f: usize,
    rows: Vec<Vec<f32>>,
}

/// Random cases with n in 0..=max_n (rarely 0), d in 0..=6 (rarely 0) and f
/// in 0..=3, values scaled by one of `scales`, half of them around a common
/// offset of 100 × scale.
fn cases(scales: &'static [f32], max_n: usize) -> impl Strategy<Value = Case> {
    let n = prop_oneof![1 => Just(0usize), 30 => 1..=max_n];
    let d = prop_oneof![1 => Just(0usize), 30 => 1usize..=6];
    (
        n,
        d,
        0usize..=3,
        prop::sample::select(scales),
        any::<bool>(),
    )
        .prop_flat_map(|(n, d, f, scale, offset)| {
            (
                Just((d, f, scale, offset)),
                prop::collection::vec(-1.0f32..=1.0, n * d),
                prop::collection::vec(row_kind(), n),
            )
        })
        .prop_map(|((d, f, scale, offset), values, kinds)| {
            let offset = if offset { 100.0 } else { 0.0 };
            let mut rows: Vec<Vec<f32>> = Vec::with_capacity(kinds.len());
            for (i, kind) in kinds.iter().enumerate() {
                let mut row: Vec<f32> = values[i * d..(i + 1) * d]
                    .iter()
                    .map(|&v| (offset + v) * scale)
                    .collect();
                match *kind {
                    RowKind::Plain => {}
                    RowKind::Duplicate(_) if i == 0 => {}
                    RowKind::Duplicate(k) => row = rows[k % i].clone(),
                    RowKind::NonFinite(_, _) if d == 0 => {}
                    RowKind::NonFinite(c, v) => row[c % d] = v,
                }
                rows.push(row);
            }
            Case { f, rows }
        })
}

fn is_finite(row: &[f32]) -> bool {
    row.iter().all(|v| v.is_finite())
}

fn sq_norm(row: &[f32]) -> f64 {
    row.iter().map(|&v| v as f64 * v as f64).sum()
}

/// A backend may report +Inf for a distance between finite vectors that
/// overflows f32, but it must still select like the reference.
fn overflows_f32(reference: f64) -> bool {
    reference > f32::MAX as f64
}

/// Tolerance of the squared distance between x_i and x_j.
fn distance_tolerance(reference: f64, xi: &[f32], xj: &[f32]) -> f64 {
    (DISTANCE_RELATIVE * reference.abs()).max(DISTANCE_FLOOR * (sq_norm(xi) + sq_norm(xj)))
}

/// Tolerance of worker i's Krum score: the sum of the distance tolerances of
/// its neighbours, bounded above by taking every finite worker's floor.
fn score_tolerance(rows: &[Vec<f32>], i: usize, neighbours: usize, score: f64) -> f64 {
    let others: f64 = (0..rows.len())
        .filter(|&j| j != i && is_finite(&rows[j]))
        .map(|j| sq_norm(&rows[j]))
        .sum();
    (DISTANCE_RELATIVE * score.abs())
        .max(DISTANCE_FLOOR * (neighbours as f64 * sq_norm(&rows[i]) + others))
}

/// Per-coordinate tolerance of a vector computed from the values of column c
/// by sorting, selecting and averaging in f64 before one rounding to f32: a
/// few f32 ulps of the largest |value| averaged, 1e-6 of it leaves ample room
/// (f32's unit roundoff is 6e-8), plus the smallest normal f32 for columns of
/// zeros and subnormals.
fn column_tolerance(rows: &[Vec<f32>], workers: &[usize], c: usize) -> f64 {
    let largest = workers
        .iter()
        .map(|&i| (rows[i][c] as f64).abs())
        .fold(0.0, f64::max);
    1e-6 * largest + f32::MIN_POSITIVE as f64
}

fn finite_workers(rows: &[Vec<f32>]) -> Vec<usize> {
    (0..rows.len()).filter(|&i| is_finite(&rows[i])).collect()
}

/// Both backends fail with the same error variant (and the same workers for
/// [`Error::TooManyNonFinite`]), or both succeed: then the two aggregations.
fn same_outcome<'a>(
    backend: &str,
    got: &'a byzagg::Result<Aggregation>,
    want: &'a byzagg::Result<Aggregation>,
) -> Result<Option<(&'a Aggregation, &'a Aggregation)>, TestCaseError> {
    match (got, want) {
        (Ok(got), Ok(want)) => Ok(Some((got, want))),
        (Err(got), Err(want)) => {
            prop_assert!(
                discriminant(got) == discriminant(want),
                "seed {}: {} failed with `{}`, the reference with `{}`",
                SEED,
                backend,
                got,
                want
            );
            if let (
                Error::TooManyNonFinite { workers: a, .. },
                Error::TooManyNonFinite { workers: b, .. },
            ) = (got, want)
            {
                prop_assert_eq!(a, b, "seed {}: {} names other workers", SEED, backend);
            }
            Ok(None)
        }
        (Ok(_), Err(want)) => Err(TestCaseError::fail(format!(
            "seed {SEED}: {backend} succeeded but the reference failed with `{want}`"
        ))),
        (Err(got), Ok(_)) => Err(TestCaseError::fail(format!(
            "seed {SEED}: {backend} failed with `{got}` but the reference succeeded"
        ))),
    }
}

fn check_distances(backend: &str, engine: &Engine, case: &Case) -> Result<(), TestCaseError> {
    let rows = &case.rows;
    let got = engine.pairwise_sq_distances(rows);
    let want = Engine::reference().pairwise_sq_distances(rows);
    let (got, want) = match (got, want) {
        (Ok(got), Ok(want)) => (got, want),
        (Err(got), Err(want)) => {
            prop_assert!(
                discriminant(&got) == discriminant(&want),
                "seed {}: {} failed with `{}`, the reference with `{}`",
                SEED,
                backend,
                got,
                want
            );
            return Ok(());
        }
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "seed {SEED}: {backend} gave {:?}, the reference {:?}",
                got.map(|_| "a matrix"),
                want.map(|_| "a matrix")
            )))
        }
    };
    prop_assert_eq!(got.dim(), want.dim(), "seed {}: {} shape", SEED, backend);
    for ((i, j), &w) in want.indexed_iter() {
        let g = got[[i, j]];
        if w.is_infinite() {
            prop_assert!(
                g == f64::INFINITY,
                "seed {}: {} D[{}][{}] = {:e}, reference +Inf (non-finite worker)",
                SEED,
                backend,
                i,
                j,
                g
            );
            continue;
        }
        if overflows_f32(w) && g == f64::INFINITY {
            continue;
        }
        let tolerance = distance_tolerance(w, &rows[i], &rows[j]);
        prop_assert!(
            (g - w).abs() <= tolerance,
            "seed {}: {} D[{}][{}] = {:e}, reference {:e}, |difference| {:e} > tolerance {:e}",
            SEED,
            backend,
            i,
            j,
            g,
            w,
            (g - w).abs(),
            tolerance
        );
    }
    Ok(())
}

/// Scores agree within [`score_tolerance`], and +Inf exactly where the
/// reference has +Inf.
fn check_scores(
    backend: &str,
    rows: &[Vec<f32>],
    neighbours: usize,
    got: &Aggregation,
    want: &Aggregation,
) -> Result<(), TestCaseError> {
    let got = got.scores.as_ref().expect("the Krum family reports scores");
    let want = want
        .scores
        .as_ref()
        .expect("the Krum family reports scores");
    prop_assert_eq!(got.len(), want.len(), "seed {}: {} scores", SEED, backend);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_infinite() {
            prop_assert!(
                g == f64::INFINITY,
                "seed {}: {} score {} = {:e}, reference +Inf",
                SEED,
                backend,
                i,
                g
            );
            continue;
        }
        if overflows_f32(w) && g == f64::INFINITY {
            continue;
        }
        let tolerance = score_tolerance(rows, i, neighbours, w);
        prop_assert!(
            (g - w).abs() <= tolerance,
            "seed {}: {} score {} = {:e}, reference {:e}, |difference| {:e} > tolerance {:e}",
            SEED,
            backend,
            i,
            g,
            w,
            (g - w).abs(),
            tolerance
        );
    }
    Ok(())
}

/// Worker `got` may stand in for the reference's worker `want` when their
/// reference scores are within both tolerances of each other.
fn acceptable_swap(
    rows: &[Vec<f32>],
    neighbours: usize,
    scores: &[f64],
    got: usize,
    want: usize,
) -> bool {
    let gap = scores[got] - scores[want];
    gap.is_finite()
        && gap
            <= score_tolerance(rows, got, neighbours, scores[got])
                + score_tolerance(rows, want, neighbours, scores[want])
}

fn check_krum(backend: &str, engine: &Engine, case: &Case) -> Result<(), TestCaseError> {
    let rows = &case.rows;
    let rule = Rule::Krum { f: case.f };
    let got = engine.aggregate(&rule, rows);
    let want = Engine::reference().aggregate(&rule, rows);
    let Some((got, want)) = same_outcome(backend, &got, &want)? else {
        return Ok(());
    };
    let neighbours = rows.len() - case.f - 2;
    prop_assert_eq!(
        &got.non_finite,
        &want.non_finite,
        "seed {}: {}",
        SEED,
        backend
    );
    check_scores(backend, rows, neighbours, got, want)?;
    prop_assert_eq!(got.selected.len(), 1, "seed {}: {}", SEED, backend);
    let (pick, best) = (got.selected[0], want.selected[0]);
    let scores = want.scores.as_ref().expect("Krum reports scores");
    prop_assert!(
        pick == best || acceptable_swap(rows, neighbours, scores, pick, best),
        "seed {}: {} selected {} (reference score {:e}), the reference {} (score {:e}), \
         separated by more than the tolerance",
        SEED,
        backend,
        pick,
        scores[pick],
        best,
        scores[best]
    );
    prop_assert_eq!(
        &got.vector,
        &rows[pick],
        "seed {}: {} must return worker {}'s row",
        SEED,
        backend,
        pick
    );
    Ok(())
}

/// Averages `workers`' rows in f64.
fn mean_of(rows: &[Vec<f32>], workers: &[usize], d: usize) -> Vec<f64> {
    (0..d)
        .map(|c| workers.iter().map(|&i| rows[i][c] as f64).sum::<f64>() / workers.len() as f64)
        .collect()
}

/// `got` is within [`column_tolerance`] of `want` at every coordinate.
fn check_columns(
    backend: &str,
    what: &str,
    rows: &[Vec<f32>],
    workers: &[usize],
    got: &[f32],
    want: &[f64],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        got.len(),
        want.len(),
        "seed {}: {} {} length",
        SEED,
        backend,
        what
    );
    for (c, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tolerance = column_tolerance(rows, workers, c);
        prop_assert!(
            (g as f64 - w).abs() <= tolerance,
            "seed {}: {} {}[{}] = {:e}, expected {:e}, |difference| {:e} > tolerance {:e}",
            SEED,
            backend,
            what,
            c,
            g,
            w,
            (g as f64 - w).abs(),
            tolerance
        );
    }
    Ok(())
}

fn check_multi_krum(
    backend: &str,
    engine: &Engine,
    case: &Case,
    m: usize,
) -> Result<(), TestCaseError> {
    let rows = &case.rows;
    let rule = Rule::MultiKrum { f: case.f, m };
    let got = engine.aggregate(&rule, rows);
    let want = Engine::reference().aggregate(&rule, rows);
    let Some((got, want)) = same_outcome(backend, &got, &want)? else {
        return Ok(());
    };
    let neighbours = rows.len() - case.f - 2;
    prop_assert_eq!(
        &got.non_finite,
        &want.non_finite,
        "seed {}: {}",
        SEED,
        backend
    );
    check_scores(backend, rows, neighbours, got, want)?;
    prop_assert_eq!(got.selected.len(), m, "seed {}: {} selected", SEED, backend);
    let scores = want.scores.as_ref().expect("Multi-Krum reports scores");
    let boundary = want.selected[m - 1];
    for &w in got.selected.iter().filter(|w| !want.selected.contains(w)) {
        prop_assert!(
            acceptable_swap(rows, neighbours, scores, w, boundary),
            "seed {}: {} selected {:?}, the reference {:?}; worker {} (reference score {:e}) is \
             beyond the tolerance of the m-th score {:e}",
            SEED,
            backend,
            &got.selected,
            &want.selected,
            w,
            scores[w],
            scores[boundary]
        );
    }
    let d = rows[0].len();
    check_columns(
        backend,
        "multi-krum vector",
        rows,
        &got.selected,
        &got.vector,
        &mean_of(rows, &got.selected, d),
    )
}

/// Runs `rule` on both backends and compares the vectors within
/// `tolerance(c)` when both succeed.
fn check_vector_rule(
    backend: &str,
    engine: &Engine,
    case: &Case,
    rule: &Rule,
    tolerance: impl Fn(usize) -> f64,
) -> Result<(), TestCaseError> {
    let rows = &case.rows;
    let got = engine.aggregate(rule, rows);
    let want = Engine::reference().aggregate(rule, rows);
    let Some((got, want)) = same_outcome(backend, &got, &want)? else {
        return Ok(());
    };
    let name = rule.name();
    prop_assert_eq!(
        &got.non_finite,
        &want.non_finite,
        "seed {}: {} {}",
        SEED,
        backend,
        name
    );
    prop_assert_eq!(
        got.vector.len(),
        want.vector.len(),
        "seed {}: {} {} length",
        SEED,
        backend,
        name
    );
    for (c, (&g, &w)) in got.vector.iter().zip(&want.vector).enumerate() {
        let tolerance = tolerance(c);
        let difference = (g as f64 - w as f64).abs();
        prop_assert!(
            difference <= tolerance,
            "seed {}: {} {}[{}] = {:e}, reference {:e}, |difference| {:e} > tolerance {:e}",
            SEED,
            backend,
            name,
            c,
            g,
            w,
            difference,
            tolerance
        );
    }
    Ok(())
}

fn check_mean(backend: &str, engine: &Engine, case: &Case) -> Result<(), TestCaseError> {
    let finite = finite_workers(&case.rows);
    check_vector_rule(backend, engine, case, &Rule::Mean { f: case.f }, |c| {
        column_tolerance(&case.rows, &finite, c)
    })
}

/// Median and trimmed mean sort each column and average part of it in f64,
/// so [`column_tolerance`] over the finite workers applies.
fn check_order_statistics(
    backend: &str,
    engine: &Engine,
    case: &Case,
) -> Result<(), TestCaseError> {
    let finite = finite_workers(&case.rows);
    for rule in [Rule::Median { f: case.f }, Rule::TrimmedMean { f: case.f }] {
        check_vector_rule(backend, engine, case, &rule, |c| {
            column_tolerance(&case.rows, &finite, c)
        })?;
    }
    Ok(())
}

/// Bulyan chooses θ workers by iterated Krum, so a tie decided the other way
/// changes the vector. The selections must therefore match exactly unless two
/// reference distances from one worker lie within their tolerances of each
/// other (duplicate rows included). Such cases check only the errors and the
/// non-finite list. With equal selections the second phase is an order
/// statistic, held to [`column_tolerance`].
fn check_bulyan(backend: &str, engine: &Engine, case: &Case) -> Result<(), TestCaseError> {
    let rows = &case.rows;
    let rule = Rule::Bulyan { f: case.f };
    let got = engine.aggregate(&rule, rows);
    let want = Engine::reference().aggregate(&rule, rows);
    let Some((got, want)) = same_outcome(backend, &got, &want)? else {
        return Ok(());
    };
    prop_assert_eq!(
        &got.non_finite,
        &want.non_finite,
        "seed {}: {} bulyan",
        SEED,
        backend
    );
    if got.selected != want.selected {
        let distances = Engine::reference()
            .pairwise_sq_distances(rows)
            .expect("the reference aggregated these rows");
        let n = rows.len();
        let near_tie = (0..n).any(|i| {
            (0..n).any(|j| {
                (0..n).any(|k| {
                    i != j
                        && j != k
                        && i != k
                        && distances[[i, j]].is_finite()
                        && (distances[[i, j]] - distances[[i, k]]).abs()
                            <= distance_tolerance(distances[[i, j]], &rows[i], &rows[j])
                                + distance_tolerance(distances[[i, k]], &rows[i], &rows[k])
                })
            })
        });
        prop_assert!(
            near_tie,
            "seed {}: {} bulyan selected {:?}, the reference {:?}, with no tie in the distances",
            SEED,
            backend,
            &got.selected,
            &want.selected
        );
        return Ok(());
    }
    check_columns(
        backend,
        "bulyan vector",
        rows,
        &got.selected,
        &got.vector,
        &want.vector.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    )
}

/// Largest Euclidean norm of a finite worker.
fn largest_norm(rows: &[Vec<f32>]) -> f64 {
    rows.iter()
        .filter(|r| is_finite(r))
        .map(|r| sq_norm(r).sqrt())
        .fold(0.0, f64::max)
}

/// Geometric median and centered clipping run the same update on both
/// backends. The runs differ only by f32 rounding of the iterate (unit
/// roundoff 6e-8) and of the distances (relative 1e-4 at worst), and both stop
/// on the same criterion. The update damps such errors rather than amplifying
/// them, so 1e-3 of the largest worker norm bounds the gap with room to spare
/// (plus τ for clipping, whose steps are at most τ long). A different update
/// rule or a missed iteration moves the result far more.
fn check_iterative(backend: &str, engine: &Engine, case: &Case) -> Result<(), TestCaseError> {
    let scale = largest_norm(&case.rows);
    let median = Rule::GeometricMedian {
        f: case.f,
        nu: Rule::DEFAULT_NU,
        max_iters: Rule::DEFAULT_MAX_ITERS,
        tol: Rule::DEFAULT_TOL,
    };
    check_vector_rule(backend, engine, case, &median, |_| {
        1e-3 * scale + f32::MIN_POSITIVE as f64
    })?;
    for (tau, iters) in [(0.1 * scale, 3), (10.0 * scale, 1)] {
        if !(tau.is_finite() && tau > 0.0) {
            continue;
        }
        let clipping = Rule::CenteredClipping {
            f: case.f,
            tau,
            iters,
            center: None,
        };
        check_vector_rule(backend, engine, case, &clipping, |_| {
            1e-3 * (scale + tau) + f32::MIN_POSITIVE as f64
        })?;
    }
    Ok(())
}

/// Multi-Krum's m in 0..=n + 1, so that 0 and n + 1 (both invalid) occur.
fn multi_krum_cases(scales: &'static [f32]) -> impl Strategy<Value = (Case, usize)> {
    cases(scales, 12).prop_flat_map(|case| {
        let n = case.rows.len();
        (Just(case), 0..=n + 1)
    })
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn cpu_distances_match_reference(case in cases(MODERATE, 12)) {
        check_distances("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_krum_matches_reference(case in cases(MODERATE, 12)) {
        check_krum("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_multi_krum_matches_reference((case, m) in multi_krum_cases(MODERATE)) {
        check_multi_krum("cpu", &Engine::cpu(), &case, m)?;
    }

    #[test]
    fn cpu_mean_matches_reference(case in cases(MODERATE, 12)) {
        check_mean("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_median_and_trimmed_mean_match_reference(case in cases(MODERATE, 12)) {
        check_order_statistics("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_bulyan_matches_reference(case in cases(MODERATE, 16)) {
        check_bulyan("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_geometric_median_and_clipping_match_reference(case in cases(MODERATE, 12)) {
        check_iterative("cpu", &Engine::cpu(), &case)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn cpu_distances_match_reference_at_tiny_scale(case in cases(TINY, 12)) {
        check_distances("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_krum_matches_reference_at_tiny_scale(case in cases(TINY, 12)) {
        check_krum("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_multi_krum_matches_reference_at_tiny_scale((case, m) in multi_krum_cases(TINY)) {
        check_multi_krum("cpu", &Engine::cpu(), &case, m)?;
    }

    #[test]
    fn cpu_distances_match_reference_at_huge_scale(case in cases(HUGE, 12)) {
        check_distances("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_krum_matches_reference_at_huge_scale(case in cases(HUGE, 12)) {
        check_krum("cpu", &Engine::cpu(), &case)?;
    }

    #[test]
    fn cpu_multi_krum_matches_reference_at_huge_scale((case, m) in multi_krum_cases(HUGE)) {
        check_multi_krum("cpu", &Engine::cpu(), &case, m)?;
    }

    #[test]
    fn cpu_mean_matches_reference_at_extreme_scales(case in cases(&[1e-30, 1e30], 12)) {
        check_mean("cpu", &Engine::cpu(), &case)?;
    }
}

/// The GPU engine, built once: `None` (with a message on stderr) when there
/// is no adapter, unless REQUIRE_GPU=1, which makes a missing adapter fail.
fn gpu_engine() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| match Engine::gpu() {
            Ok(engine) => Some(engine),
            Err(error) => {
                assert!(
                    std::env::var("REQUIRE_GPU").as_deref() != Ok("1"),
                    "REQUIRE_GPU=1 but no GPU engine: {error}"
                );
                eprintln!("skipping the GPU property tests: {error}");
                None
            }
        })
        .as_ref()
}

/// The GPU backend against the reference on every rule. lavapipe runs WGSL on
/// the CPU and is slow, so the cases are fewer and smaller.
#[test]
fn gpu_matches_reference() {
    let Some(engine) = gpu_engine() else {
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(config(24));
    let strategy = (
        cases(MODERATE, 9),
        cases(HUGE, 9),
        0usize..=10,
        cases(MODERATE, 11),
    );
    runner
        .run(&strategy, |(case, huge, m, bulyan)| {
            for case in [&case, &huge] {
                check_distances("gpu", engine, case)?;
                check_krum("gpu", engine, case)?;
                check_multi_krum("gpu", engine, case, m.min(case.rows.len() + 1))?;
                check_mean("gpu", engine, case)?;
            }
            check_order_statistics("gpu", engine, &case)?;
            check_iterative("gpu", engine, &case)?;
            check_bulyan("gpu", engine, &bulyan)?;
            Ok(())
        })
        .unwrap();
}
