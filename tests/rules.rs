//! Every rule on the fast backends against the f64 reference, and small cases
//! worked out by hand.
//!
//! Tolerances, absolute and per coordinate c, with `scale` the largest |x_i[c]|
//! over the finite workers (and the center, for centered clipping); f32
//! epsilon is 1.2e-7:
//! - Krum, Multi-Krum, mean, median, trimmed mean and Bulyan: 2e-7 · scale.
//!   They copy an input or round an f64 result to f32 once.
//! - The same rules after NNM: 1e-6 · scale, because the fast backends round
//!   the mixed vectors to f32 before the rule runs.
//! - Centered clipping: 1e-6 · scale, for the f32 rounding of v after each of
//!   at most 3 iterations.
//! - Geometric median: 1e-6 · scale when both backends run the same number of
//!   iterations. The f32 iterate can cross the stopping test |z_{t+1} − z_t| ≤
//!   tol · |z_t| one iteration apart from the f64 one, so a count that differs
//!   by 1 is accepted, with 2 · tol · |z|₂ more.
//! - Selections and non-finite workers are identical; Krum scores agree within
//!   a relative 1e-4.
//!
//! On the data used here (seeds in each failure message) the differences
//! measured stay below 1e-7 · scale.

mod common;

use byzagg::{Aggregation, Engine, Error, PreAggregation, Rule};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Coordinates per slice of the fast CPU backend; a d above it makes every
/// stage combine two slices.
const CPU_SLICE: usize = 1 << 16;
const D_ACROSS_SLICE: usize = CPU_SLICE + 37;

const TOL_ONE_ROUNDING: f64 = 2e-7;
const TOL_AFTER_NNM: f64 = 1e-6;
const TOL_CLIPPING: f64 = 1e-6;
const TOL_GEOMETRIC_MEDIAN: f64 = 1e-6;

/// Random gradients: honest workers around a shared component, some outliers
/// far from it, and some workers with one non-finite coordinate.
#[derive(Clone, Copy, Debug)]
struct Case {
    seed: u64,
    n: usize,
    d: usize,
    outliers: usize,
    non_finite: usize,
}

impl Case {
    fn new(seed: u64, n: usize, d: usize, outliers: usize, non_finite: usize) -> Self {
        Self {
            seed,
            n,
            d,
            outliers,
            non_finite,
        }
    }

    fn gradients(&self) -> Vec<Vec<f32>> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        let common: Vec<f32> = (0..self.d).map(|_| 3.0 + normal.sample(&mut rng)).collect();
        // Each honest worker has its own noise level, so that Krum scores are
        // far apart relative to rounding.
        let mut grads: Vec<Vec<f32>> = (0..self.n)
            .map(|i| {
                let spread = 0.5 + 0.15 * i as f32;
                common
                    .iter()
                    .map(|&c| c + spread * normal.sample(&mut rng))
                    .collect()
            })
            .collect();

        let mut byzantine: Vec<usize> = (0..self.n).collect();
        for k in 0..self.outliers + self.non_finite {
            let pick = rng.random_range(k..self.n);
            byzantine.swap(k, pick);
        }
        for &i in &byzantine[..self.outliers] {
            for (x, &c) in grads[i].iter_mut().zip(&common) {
                *x = -4.0 * c + 30.0 * normal.sample(&mut rng);
            }
        }
        let bad_values = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let non_finite = &byzantine[self.outliers..self.outliers + self.non_finite];
        for (k, &i) in non_finite.iter().enumerate() {
            // The last coordinate lies in the second CPU slice when d > CPU_SLICE.
            let coordinate = if k % 2 == 0 { self.d - 1 } else { 0 };
            grads[i][coordinate] = bad_values[k % bad_values.len()];
        }
        grads
    }
}

/// Largest |x_i[c]| over the finite workers, per coordinate.
fn coordinate_scale(grads: &[Vec<f32>]) -> Vec<f64> {
    let d = grads[0].len();
    let mut scale = vec![0f64; d];
    for row in grads.iter().filter(|r| r.iter().all(|v| v.is_finite())) {
        for (s, &v) in scale.iter_mut().zip(row) {
            *s = s.max((v as f64).abs());
        }
    }
    scale
}

fn assert_vector_close(label: &str, got: &[f32], want: &[f32], tolerance: &[f64]) {
    assert_eq!(got.len(), want.len(), "{label}: output length");
    for c in 0..want.len() {
        let difference = (got[c] as f64 - want[c] as f64).abs();
        assert!(
            difference <= tolerance[c],
            "{label}: coordinate {c}: got {}, reference {}, |difference| {difference:e} > tolerance {:e}",
            got[c],
            want[c],
            tolerance[c]
        );
    }
}

fn assert_scores_close(label: &str, got: &Option<Vec<f64>>, want: &Option<Vec<f64>>) {
    let (Some(got), Some(want)) = (got, want) else {
        assert_eq!(got.is_some(), want.is_some(), "{label}: scores reported");
        return;
    };
    assert_eq!(got.len(), want.len(), "{label}: number of scores");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_infinite() {
            assert_eq!(g, w, "{label}: score of worker {i}");
            continue;
        }
        let tolerance = 1e-4 * w.abs();
        assert!(
            (g - w).abs() <= tolerance,
            "{label}: score of worker {i}: got {g}, reference {w}, tolerance {tolerance:e}"
        );
    }
}

fn l2(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// Runs `rule` (after `pre`) on `engine` and on the reference and compares
/// every field of the two aggregations. The engine writes into `got`, which
/// still contains the previous case's result, so that every rule is also
/// checked writing over a reused vector of another length or content.
fn check(
    engine: &Engine,
    rule: &Rule,
    pre: Option<PreAggregation>,
    case: Case,
    got: &mut Aggregation,
) {
    let grads = case.gradients();
    let label = format!(
        "{} with pre-aggregation {pre:?} on {} ({case:?})",
        rule.name(),
        engine.kind().name()
    );
    let want = Engine::reference()
        .aggregate_with(rule, pre, &grads)
        .unwrap_or_else(|e| panic!("{label}: reference failed: {e}"));
    engine
        .aggregate_into(rule, pre, &grads, got)
        .unwrap_or_else(|e| panic!("{label}: failed: {e}"));

    assert_eq!(
        got.non_finite, want.non_finite,
        "{label}: non-finite workers"
    );
    assert_eq!(got.selected, want.selected, "{label}: selected workers");
    assert_scores_close(&label, &got.scores, &want.scores);

    let mut scale = coordinate_scale(&grads);
    let relative = match rule {
        Rule::GeometricMedian { .. } => TOL_GEOMETRIC_MEDIAN,
        Rule::CenteredClipping { center, .. } => {
            if let Some(center) = center {
                for (s, &v) in scale.iter_mut().zip(center) {
                    *s = s.max((v as f64).abs());
                }
            }
            TOL_CLIPPING
        }
        _ if pre.is_some() => TOL_AFTER_NNM,
        _ => TOL_ONE_ROUNDING,
    };
    let mut tolerance: Vec<f64> = scale.iter().map(|s| relative * s).collect();

    match rule {
        Rule::GeometricMedian { tol, .. } => {
            let got_iterations = got.iterations.expect("geometric median reports iterations");
            let want_iterations = want.iterations.expect("reference reports iterations");
            assert!(
                got_iterations.abs_diff(want_iterations) <= 1,
                "{label}: {got_iterations} iterations, reference {want_iterations}"
            );
            if got_iterations != want_iterations {
                let stopping = 2.0 * tol * l2(&want.vector);
                for t in &mut tolerance {
                    *t += stopping;
                }
            }
        }
        _ => assert_eq!(got.iterations, want.iterations, "{label}: iterations"),
    }
    assert_vector_close(&label, &got.vector, &want.vector, &tolerance);
}

/// (rule, pre-aggregation, data) triples covering one rule: odd and even n,
/// d on both sides of the CPU slice, outliers and up to f non-finite workers.
fn cases(rule_name: &str) -> Vec<(Rule, Option<PreAggregation>, Case)> {
    let mean = |f| Rule::Mean { f };
    let median = |f| Rule::Median { f };
    let trimmed = |f| Rule::TrimmedMean { f };
    let krum = |f| Rule::Krum { f };
    let bulyan = |f| Rule::Bulyan { f };
    let geometric = |f| Rule::GeometricMedian {
        f,
        nu: Rule::DEFAULT_NU,
        max_iters: Rule::DEFAULT_MAX_ITERS,
        tol: Rule::DEFAULT_TOL,
    };
    let clipping = |f, center: Option<Vec<f32>>| Rule::CenteredClipping {
        f,
        tau: 5.0,
        iters: 3,
        center,
    };
    let d = D_ACROSS_SLICE;
    let nnm = Some(PreAggregation::Nnm);
    match rule_name {
        "mean" => vec![
            (mean(2), None, Case::new(101, 9, 64, 2, 0)),
            (mean(2), None, Case::new(102, 10, d, 0, 2)),
            (mean(1), None, Case::new(103, 4, 5, 0, 1)),
        ],
        "krum" => vec![
            (krum(2), None, Case::new(201, 9, 64, 1, 1)),
            (krum(2), None, Case::new(202, 10, d, 0, 2)),
            (
                Rule::MultiKrum { f: 2, m: 7 },
                None,
                Case::new(203, 9, 64, 2, 0),
            ),
            (
                Rule::MultiKrum { f: 2, m: 8 },
                None,
                Case::new(204, 10, d, 1, 1),
            ),
        ],
        "median" => vec![
            (median(2), None, Case::new(301, 9, 64, 2, 0)),
            (median(2), None, Case::new(302, 10, 64, 1, 1)),
            (median(2), None, Case::new(303, 9, d, 0, 2)),
            (median(1), None, Case::new(304, 8, d, 1, 0)),
        ],
        "trimmed-mean" => vec![
            (trimmed(2), None, Case::new(401, 9, 64, 2, 0)),
            (trimmed(2), None, Case::new(402, 10, 64, 1, 1)),
            (trimmed(2), None, Case::new(403, 9, d, 0, 2)),
            (trimmed(3), None, Case::new(404, 12, d, 3, 0)),
        ],
        "bulyan" => vec![
            (bulyan(1), None, Case::new(501, 7, 64, 1, 0)),
            (bulyan(1), None, Case::new(502, 8, d, 0, 1)),
            (bulyan(2), None, Case::new(503, 11, 64, 1, 1)),
            (bulyan(2), None, Case::new(504, 12, d, 0, 2)),
        ],
        "geometric-median" => vec![
            (geometric(2), None, Case::new(601, 9, 64, 2, 0)),
            (geometric(2), None, Case::new(602, 10, d, 1, 1)),
            (geometric(1), None, Case::new(603, 4, 5, 0, 1)),
        ],
        "centered-clipping" => vec![
            (clipping(2, None), None, Case::new(701, 9, 64, 2, 0)),
            (clipping(2, None), None, Case::new(702, 10, d, 1, 1)),
            (
                clipping(1, Some(vec![2.5; 64])),
                None,
                Case::new(703, 8, 64, 0, 1),
            ),
        ],
        "nnm" => vec![
            (krum(2), nnm, Case::new(801, 9, 64, 1, 1)),
            (mean(2), nnm, Case::new(802, 10, d, 2, 0)),
            (median(2), nnm, Case::new(803, 9, d, 1, 1)),
            (trimmed(2), nnm, Case::new(804, 10, 64, 0, 2)),
            (bulyan(1), nnm, Case::new(805, 8, 64, 1, 0)),
            (geometric(2), nnm, Case::new(806, 9, 64, 2, 0)),
            (clipping(2, None), nnm, Case::new(807, 10, 64, 1, 1)),
        ],
        other => panic!("no cases for {other}"),
    }
}

const CASE_GROUPS: &[&str] = &[
    "mean",
    "krum",
    "median",
    "trimmed-mean",
    "bulyan",
    "geometric-median",
    "centered-clipping",
    "nnm",
];

fn check_group(engine: &Engine, group: &str) {
    let mut got = Aggregation::default();
    for (rule, pre, case) in cases(group) {
        check(engine, &rule, pre, case, &mut got);
    }
}

#[test]
fn mean_matches_reference() {
    check_group(&Engine::cpu(), "mean");
}

#[test]
fn krum_family_matches_reference() {
    check_group(&Engine::cpu(), "krum");
}

#[test]
fn median_matches_reference() {
    check_group(&Engine::cpu(), "median");
}

#[test]
fn trimmed_mean_matches_reference() {
    check_group(&Engine::cpu(), "trimmed-mean");
}

#[test]
fn bulyan_matches_reference() {
    check_group(&Engine::cpu(), "bulyan");
}

#[test]
fn geometric_median_matches_reference() {
    check_group(&Engine::cpu(), "geometric-median");
}

#[test]
fn centered_clipping_matches_reference() {
    check_group(&Engine::cpu(), "centered-clipping");
}

#[test]
fn nnm_composed_matches_reference() {
    check_group(&Engine::cpu(), "nnm");
}

#[test]
fn gpu_rules_match_reference() {
    let filter = byzagg::gpu::AdapterFilter::from_env();
    let Some(engine) = common::gpu_engine(&filter, "the GPU rule checks") else {
        return;
    };
    for group in CASE_GROUPS {
        check_group(&engine, group);
    }
}

#[test]
fn cpu_writes_into_the_kept_vector() {
    let grads = Case::new(21, 11, D_ACROSS_SLICE, 2, 1).gradients();
    let rules = [
        Rule::Krum { f: 2 },
        Rule::MultiKrum { f: 2, m: 4 },
        Rule::Mean { f: 2 },
        Rule::Median { f: 2 },
        Rule::TrimmedMean { f: 2 },
        Rule::Bulyan { f: 2 },
        Rule::CenteredClipping {
            f: 2,
            tau: 5.0,
            iters: 2,
            center: None,
        },
    ];
    let engine = Engine::cpu();
    for rule in &rules {
        let mut out = Aggregation::default();
        engine.aggregate_into(rule, None, &grads, &mut out).unwrap();
        let memory = out.vector.as_ptr();
        let first = out.clone();
        engine.aggregate_into(rule, None, &grads, &mut out).unwrap();
        assert_eq!(
            out.vector.as_ptr(),
            memory,
            "{}: vector reallocated",
            rule.name()
        );
        assert_eq!(out.selected, first.selected, "{}: selected", rule.name());
        let tolerance = vec![1e-6; first.vector.len()];
        assert_vector_close(rule.name(), &out.vector, &first.vector, &tolerance);
    }
}

#[test]
fn aggregate_into_error_keeps_memory() {
    let grads = Case::new(22, 5, 64, 0, 0).gradients();
    let mut out = Engine::cpu()
        .aggregate(&Rule::Mean { f: 0 }, &grads)
        .unwrap();
    let error = Engine::cpu()
        .aggregate_into(&Rule::Krum { f: 2 }, None, &grads, &mut out)
        .unwrap_err();
    assert!(matches!(error, Error::TooFewWorkers { .. }), "{error}");
    assert_eq!(out, Aggregation::default());
    assert!(
        out.vector.capacity() >= 64,
        "the vector's memory was dropped"
    );
}

/// Runs `rule` on the reference and the fast CPU backend, checks that both
/// succeed with the same result, and returns the reference's.
fn both_backends(rule: &Rule, grads: &[Vec<f32>]) -> Aggregation {
    let want = Engine::reference()
        .aggregate(rule, grads)
        .unwrap_or_else(|e| panic!("{}: reference failed: {e}", rule.name()));
    let got = Engine::cpu()
        .aggregate(rule, grads)
        .unwrap_or_else(|e| panic!("{}: cpu failed: {e}", rule.name()));
    assert_eq!(got.selected, want.selected, "{}: selected", rule.name());
    assert_eq!(
        got.non_finite,
        want.non_finite,
        "{}: non-finite",
        rule.name()
    );
    assert_eq!(
        got.iterations,
        want.iterations,
        "{}: iterations",
        rule.name()
    );
    let tolerance = vec![1e-6; want.vector.len()];
    assert_vector_close(rule.name(), &got.vector, &want.vector, &tolerance);
    want
}

fn column(values: &[f32]) -> Vec<Vec<f32>> {
    values.iter().map(|&v| vec![v]).collect()
}

#[test]
fn bulyan_iterates_krum_not_multi_krum() {
    // n = 7 points on a line, f = 1: θ = n − 2f = 5 chosen, β = θ − 2f = 3.
    //   worker: 0  1  2  3  4  5  6
    //   x:      0  1  2  3  6  7  8
    //
    // Round 1, all 7 left, 4 neighbours (sums of the 4 smallest squared
    // distances to the others):
    //   0: 1+4+9+36 = 50   1: 1+1+4+25 = 31   2: 1+1+4+16 = 22
    //   3: 1+4+9+9  = 23   4: 1+4+9+16 = 30   5: 1+1+16+25 = 43
    //   6: 1+4+25+36 = 66                               → choose 2
    // One-shot Multi-Krum with m = θ = 5 keeps the 5 lowest of these:
    // 2, 3, 4, 1, 5. Iterated Krum goes on:
    // Round 2, left {0, 1, 3, 4, 5, 6} (x = 0 1 3 6 7 8), 3 neighbours:
    //   0: 1+9+36 = 46   1: 1+4+25 = 30   3: 4+9+9 = 22
    //   4: 1+4+9  = 14   5: 1+1+16 = 18   6: 1+4+25 = 30  → choose 4
    // Round 3, left {0, 1, 3, 5, 6} (x = 0 1 3 7 8), 2 neighbours:
    //   0: 1+9 = 10   1: 1+4 = 5   3: 4+9 = 13   5: 1+16 = 17   6: 1+25 = 26
    //                                                     → choose 1
    // Round 4, left {0, 3, 5, 6} (x = 0 3 7 8), 4 − 1 − 2 = 1 neighbour:
    //   0: 9   3: 9   5: 1   6: 1          → tie, lowest index: choose 5
    // Round 5, left {0, 3, 6} (x = 0 3 8), 3 − 1 − 2 = 0 clamped to 1:
    //   0: 9   3: 9   6: 25                → tie, lowest index: choose 0
    // Chosen in order: 2, 4, 1, 5, 0, so x = 2 6 1 7 0 and worker 3 (x = 3),
    // which Multi-Krum keeps, is left out.
    //
    // Second phase: the median of {0, 1, 2, 6, 7} is 2, the β = 3 values
    // closest to it are 2, 1, 0, and their mean is 1. On Multi-Krum's set
    // {1, 2, 3, 6, 7} the same phase would give the mean of 3, 2, 1 = 2.
    let grads = column(&[0.0, 1.0, 2.0, 3.0, 6.0, 7.0, 8.0]);

    let bulyan = both_backends(&Rule::Bulyan { f: 1 }, &grads);
    assert_eq!(
        bulyan.selected,
        vec![2, 4, 1, 5, 0],
        "Bulyan's chosen workers"
    );
    assert_eq!(bulyan.vector, vec![1.0], "Bulyan's output");

    let multi_krum = both_backends(&Rule::MultiKrum { f: 1, m: 5 }, &grads);
    assert_eq!(
        multi_krum.selected,
        vec![2, 3, 4, 1, 5],
        "Multi-Krum's chosen workers"
    );
}

#[test]
fn bulyan_skips_non_finite_worker() {
    // The same line with worker 6 replaced by NaN: its distances and score
    // are +Inf in every round, and the finite workers always have at least
    // as many finite distances as neighbours, so it is never chosen.
    //   round (neighbours): scores of the workers left        → choice
    //   1 (4): 0: 50  1: 31  2: 22  3: 23  4: 51  5: 78        → 2
    //   2 (3): 0: 46  1: 30  3: 22  4: 35  5: 53               → 3
    //   3 (2): 0: 37  1: 26  4: 26  5: 37          → tie, lowest: 1
    //   4 (1): 0: 36  4: 1  5: 1                   → tie, lowest: 4
    //   5 (1): 0: 49  5: 49                        → tie, lowest: 0
    // The chosen x are 2 3 1 6 0, with median 2; the 3 closest values are
    // 2, 1 and 3, whose mean is 2.
    let grads = column(&[0.0, 1.0, 2.0, 3.0, 6.0, 7.0, f32::NAN]);

    let bulyan = both_backends(&Rule::Bulyan { f: 1 }, &grads);
    assert_eq!(bulyan.non_finite, vec![6], "non-finite workers");
    assert_eq!(
        bulyan.selected,
        vec![2, 3, 1, 4, 0],
        "Bulyan's chosen workers"
    );
    assert_eq!(bulyan.vector, vec![2.0], "Bulyan's output");
}

#[test]
fn bulyan_median_not_rounded_to_f32() {
    // n = 8, f = 1: θ = 6, β = 4. With u = 2^-23 (the f32 spacing above 1),
    // the six values near 1 are chosen (the two at 1000 and 3000 are far from
    // everything) and all their squared distances are exact in f32:
    //   c' = 1 − 9u, c = 1, a = 1 + u, b = 1 + 2u, e = 1 + 12u, e2 = 1 + 100u.
    // The median is (a + b) / 2 = 1 + 1.5u, which f32 cannot hold (it rounds
    // to b). From the exact median a, b, c are closest (0.5u, 0.5u, 1.5u) and
    // c' and e tie at 10.5u, so the lower value c' is kept: the mean of
    // c', c, a, b is 1 − 1.5u. A median rounded to b would keep e instead and
    // give 1 + 3.75u.
    let u = f32::EPSILON;
    let grads = column(&[
        1.0 - 9.0 * u,
        1.0,
        1.0 + u,
        1.0 + 2.0 * u,
        1.0 + 12.0 * u,
        1.0 + 100.0 * u,
        1000.0,
        3000.0,
    ]);
    for engine in [Engine::reference(), Engine::cpu()] {
        let name = engine.kind().name();
        let out = engine.aggregate(&Rule::Bulyan { f: 1 }, &grads).unwrap();
        let mut chosen = out.selected.clone();
        chosen.sort();
        assert_eq!(chosen, vec![0, 1, 2, 3, 4, 5], "{name}: chosen workers");
        assert_eq!(out.vector, vec![1.0 - 1.5 * u], "{name}: output");
    }
}

#[test]
fn krum_never_selects_non_finite_on_overflow() {
    // A backend that squares differences in f32, as the fast CPU backend does
    // today, finds +Inf distances between these finite workers, so every
    // score is +Inf like the NaN worker's. The NaN worker must still not be
    // chosen.
    let grads = column(&[f32::NAN, 1e20, -1e20, 2e20, 3e20]);
    let krum = Engine::cpu()
        .aggregate(&Rule::Krum { f: 1 }, &grads)
        .unwrap();
    assert_eq!(krum.non_finite, vec![0], "non-finite workers");
    assert_ne!(krum.selected, vec![0], "Krum chose the NaN worker");
    assert!(krum.vector[0].is_finite(), "Krum output {:?}", krum.vector);

    let rule = Rule::MultiKrum { f: 1, m: 4 };
    let multi_krum = Engine::cpu().aggregate(&rule, &grads).unwrap();
    assert!(
        !multi_krum.selected.contains(&0),
        "Multi-Krum chose {:?}",
        multi_krum.selected
    );
}

#[test]
fn nnm_never_mixes_non_finite_on_overflow() {
    // As above, every distance of a finite worker may be +Inf, like its
    // distance to the NaN worker; the mixing must still leave that worker out.
    let grads = column(&[f32::NAN, 1e20, -1e20, 2e20, 3e20]);
    let out = Engine::cpu()
        .aggregate_with(&Rule::Median { f: 1 }, Some(PreAggregation::Nnm), &grads)
        .unwrap();
    assert_eq!(out.non_finite, vec![0], "non-finite workers after mixing");
    assert!(out.vector[0].is_finite(), "median output {:?}", out.vector);
}

#[test]
fn median_drops_nan_worker() {
    let grads = vec![
        vec![1.0, 10.0],
        vec![f32::NAN, 0.0],
        vec![3.0, 30.0],
        vec![2.0, 20.0],
    ];
    let out = both_backends(&Rule::Median { f: 1 }, &grads);
    assert_eq!(out.non_finite, vec![1], "non-finite workers");
    assert_eq!(out.vector, vec![2.0, 20.0], "median of workers 0, 2 and 3");
}

#[test]
fn median_of_even_count() {
    let grads = column(&[1.0, 4.0, 2.0, 10.0]);
    let out = both_backends(&Rule::Median { f: 0 }, &grads);
    assert_eq!(out.vector, vec![3.0], "mean of the middle values 2 and 4");
}

#[test]
fn median_rejects_too_many_non_finite() {
    let grads = column(&[1.0, f32::NAN, f32::INFINITY, 2.0]);
    for engine in [Engine::reference(), Engine::cpu()] {
        let result = engine.aggregate(&Rule::Median { f: 1 }, &grads);
        let Err(Error::TooManyNonFinite { workers, f }) = result else {
            panic!(
                "{}: expected TooManyNonFinite, got {result:?}",
                engine.kind().name()
            );
        };
        assert_eq!(
            workers,
            vec![1, 2],
            "{}: workers named",
            engine.kind().name()
        );
        assert_eq!(f, 1, "{}: f named", engine.kind().name());
    }
}

#[test]
fn trimmed_mean_drops_extremes() {
    let grads = column(&[1.0, 100.0, 2.0, -50.0, 3.0]);
    let out = both_backends(&Rule::TrimmedMean { f: 1 }, &grads);
    assert_eq!(out.vector, vec![2.0], "mean of 1, 2, 3");
}

/// Checks that `rule` on `grads` fails on both backends with TooFewWorkers
/// naming the rule, n, f and the requirement.
fn assert_too_few_workers(rule: &Rule, grads: &[Vec<f32>], n: usize, requirement: &str) {
    for engine in [Engine::reference(), Engine::cpu()] {
        let label = format!("{} on {}", rule.name(), engine.kind().name());
        let result = engine.aggregate(rule, grads);
        let Err(error) = result else {
            panic!("{label}: expected TooFewWorkers, got {result:?}");
        };
        let message = error.to_string();
        let Error::TooFewWorkers {
            rule: name,
            requirement: stated,
            n: got_n,
            f,
            ..
        } = error
        else {
            panic!("{label}: expected TooFewWorkers, got {error:?}");
        };
        assert_eq!(name, rule.name(), "{label}: rule in the error");
        assert_eq!(stated, requirement, "{label}: requirement in the error");
        assert_eq!(got_n, n, "{label}: n in the error");
        assert_eq!(f, rule.f(), "{label}: f in the error");
        for part in [
            rule.name().to_string(),
            requirement.to_string(),
            format!("n = {n}"),
            format!("f = {}", rule.f()),
        ] {
            assert!(
                message.contains(&part),
                "{label}: {part:?} missing from {message:?}"
            );
        }
    }
}

#[test]
fn trimmed_mean_rejects_small_n() {
    let grads = column(&[1.0, 2.0, 3.0, 4.0]);
    assert_too_few_workers(&Rule::TrimmedMean { f: 2 }, &grads, 4, "n > 2f");
}

#[test]
fn trimmed_mean_rejects_small_n_after_dropping() {
    // Three workers meet n > 2f for f = 1, but the NaN worker is dropped and
    // the two left do not.
    let rule = Rule::TrimmedMean { f: 1 };
    let grads = column(&[1.0, f32::NAN, 3.0]);
    for engine in [Engine::reference(), Engine::cpu()] {
        let label = format!("trimmed-mean on {}", engine.kind().name());
        let result = engine.aggregate(&rule, &grads);
        let Err(error) = result else {
            panic!("{label}: expected TooFewFiniteWorkers, got {result:?}");
        };
        let message = error.to_string();
        let Error::TooFewFiniteWorkers {
            rule: name,
            requirement,
            n,
            finite,
            non_finite,
            f,
            min_n,
        } = error
        else {
            panic!("{label}: expected TooFewFiniteWorkers, got {error:?}");
        };
        assert_eq!(name, "trimmed-mean", "{label}: rule in the error");
        assert_eq!(requirement, "n > 2f", "{label}: requirement in the error");
        assert_eq!(n, 3, "{label}: n in the error");
        assert_eq!(finite, 2, "{label}: finite workers in the error");
        assert_eq!(
            non_finite,
            vec![1],
            "{label}: non-finite workers in the error"
        );
        assert_eq!(f, 1, "{label}: f in the error");
        assert_eq!(min_n, 3, "{label}: smallest n in the error");
        for part in ["trimmed-mean", "n > 2f", "2 of n = 3", "[1]", "f = 1"] {
            assert!(
                message.contains(part),
                "{label}: {part:?} missing from {message:?}"
            );
        }
    }
}

#[test]
fn bulyan_rejects_small_n() {
    let grads = column(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_too_few_workers(&Rule::Bulyan { f: 1 }, &grads, 6, "n ≥ 4f + 3");
}

fn geometric_median(f: usize) -> Rule {
    Rule::GeometricMedian {
        f,
        nu: Rule::DEFAULT_NU,
        max_iters: Rule::DEFAULT_MAX_ITERS,
        tol: Rule::DEFAULT_TOL,
    }
}

#[test]
fn geometric_median_of_collinear_points() {
    // Points a + t·u for t = 0, 1, 10 with |u| = 1: the geometric median of
    // an odd number of points on a line is the middle one, t = 1, far from
    // the mean t = 11/3 where the iterations start.
    let a = [1.0f32, -2.0, 0.5];
    let u = [0.6f32, 0.8, 0.0];
    let grads: Vec<Vec<f32>> = [0.0f32, 1.0, 10.0]
        .iter()
        .map(|&t| a.iter().zip(&u).map(|(p, q)| p + t * q).collect())
        .collect();
    let middle = &grads[1];
    for engine in [Engine::reference(), Engine::cpu()] {
        let name = engine.kind().name();
        let out = engine.aggregate(&geometric_median(0), &grads).unwrap();
        let iterations = out.iterations.expect("iterations reported");
        assert!(
            iterations < Rule::DEFAULT_MAX_ITERS,
            "{name}: {iterations} iterations"
        );
        assert_vector_close(name, &out.vector, middle, &[1e-5; 3]);
    }
}

#[test]
fn geometric_median_of_equilateral_triangle() {
    // The centre of an equilateral triangle is its geometric median and its
    // mean, so the first step from the mean does not move: one iteration.
    let h = 3f32.sqrt();
    let grads = vec![vec![0.0, 0.0], vec![2.0, 0.0], vec![1.0, h]];
    let centre = [1.0, h / 3.0];
    for engine in [Engine::reference(), Engine::cpu()] {
        let name = engine.kind().name();
        let out = engine.aggregate(&geometric_median(0), &grads).unwrap();
        assert_eq!(out.iterations, Some(1), "{name}: iterations");
        assert_vector_close(name, &out.vector, &centre, &[1e-6; 2]);
    }
}

#[test]
fn centered_clipping_one_step() {
    // From v = 0 with τ = 1: x − v = (3, 4) has norm 5 and is scaled to
    // (0.6, 0.8); (0.5, 0) has norm 0.5 and is kept; (0, −2) is scaled to
    // (0, −1). v becomes their mean, (1.1 / 3, −0.2 / 3).
    let grads = vec![vec![3.0, 4.0], vec![0.5, 0.0], vec![0.0, -2.0]];
    let rule = Rule::CenteredClipping {
        f: 0,
        tau: 1.0,
        iters: 1,
        center: None,
    };
    let out = both_backends(&rule, &grads);
    assert_eq!(out.iterations, Some(1), "iterations");
    assert_vector_close(
        "centered clipping",
        &out.vector,
        &[1.1 / 3.0, -0.2 / 3.0],
        &[1e-6; 2],
    );
}

#[test]
fn centered_clipping_from_center() {
    // From v = (3, 4) with τ = 1: x − v = (0, 0) is kept, (0, 2) is scaled to
    // (0, 1), (3, 4) to (0.6, 0.8); their mean (0.2, 0.6) moves v to
    // (3.2, 4.6). The NaN worker is dropped first.
    let grads = vec![
        vec![3.0, 4.0],
        vec![3.0, 6.0],
        vec![f32::NAN, 0.0],
        vec![6.0, 8.0],
    ];
    let rule = Rule::CenteredClipping {
        f: 1,
        tau: 1.0,
        iters: 1,
        center: Some(vec![3.0, 4.0]),
    };
    let out = both_backends(&rule, &grads);
    assert_eq!(out.non_finite, vec![2], "non-finite workers");
    assert_vector_close("centered clipping", &out.vector, &[3.2, 4.6], &[1e-6; 2]);
}
