//! The conformance suite: every kernel and rule of an engine against the f64
//! reference, on the edge cases that break naive implementations.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::{Aggregation, Engine, Error, PreAggregation, Rule};

/// Relative tolerance of distances and scores against the reference.
pub const DISTANCE_TOLERANCE: f64 = 1e-4;

/// Outcome of one conformance check.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The engine agreed with the reference.
    Pass,
    /// The engine disagreed; the message names the value and the tolerance.
    Fail(String),
    /// The engine cannot run this check, for the reason given.
    Unsupported(String),
}

/// One row of the conformance table.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// Short name of the check, for example `distances/offset`.
    pub name: &'static str,
    /// Pass, fail or unsupported.
    pub outcome: Outcome,
    /// Largest relative error seen against the reference (0 when exact).
    pub worst_relative_error: f64,
    /// Wall time of the check on the engine under test, in seconds.
    pub seconds: f64,
}

/// A check: its name and the function that runs it on an engine.
type Check = (&'static str, fn(&Engine) -> Result<f64, Outcome>);

/// Returns every check of the suite, in the order they run.
pub fn checks() -> Vec<Check> {
    vec![
        ("distances/random", check_distances_random),
        ("distances/slice-boundaries", check_distances_boundaries),
        ("distances/common-offset", check_distances_offset),
        ("distances/overflow", check_overflow),
        ("scores/random", check_scores),
        ("selection/ties", check_ties),
        ("selection/non-finite", check_non_finite),
        ("selection/multi-krum-m", check_multi_krum_m),
        ("rule/mean", |e| {
            check_rule(e, Rule::Mean { f: 1 }, None, 1e-5)
        }),
        ("rule/krum", |e| {
            check_rule(e, Rule::Krum { f: 2 }, None, 0.0)
        }),
        ("rule/multi-krum", |e| {
            check_rule(e, Rule::MultiKrum { f: 2, m: 9 }, None, 1e-5)
        }),
        ("rule/median", |e| {
            check_rule(e, Rule::Median { f: 2 }, None, 1e-6)
        }),
        ("rule/trimmed-mean", |e| {
            check_rule(e, Rule::TrimmedMean { f: 2 }, None, 1e-5)
        }),
        ("rule/bulyan", |e| {
            check_rule(e, Rule::Bulyan { f: 2 }, None, 1e-5)
        }),
        ("rule/geometric-median", |e| {
            let rule = Rule::GeometricMedian {
                f: 2,
                nu: 1e-6,
                max_iters: 100,
                tol: 1e-7,
            };
            check_rule(e, rule, None, 1e-3)
        }),
        ("rule/centered-clipping", |e| {
            let rule = Rule::CenteredClipping {
                f: 2,
                tau: 5.0,
                iters: 3,
                center: None,
            };
            check_rule(e, rule, None, 1e-4)
        }),
        ("rule/nnm-krum", |e| {
            check_rule(e, Rule::Krum { f: 2 }, Some(PreAggregation::Nnm), 1e-5)
        }),
    ]
}

/// Runs every check on `engine` and returns one result per check.
pub fn run(engine: &Engine) -> Vec<CheckResult> {
    checks()
        .into_iter()
        .map(|(name, check)| {
            let started = Instant::now();
            let (outcome, worst_relative_error) = match check(engine) {
                Ok(worst) => (Outcome::Pass, worst),
                Err(outcome) => (outcome, f64::NAN),
            };
            CheckResult {
                name,
                outcome,
                worst_relative_error,
                seconds: started.elapsed().as_secs_f64(),
            }
        })
        .collect()
}

/// Returns whether `error` is at most `limit`, which is false when `error` is NaN.
fn within(error: f64, limit: f64) -> bool {
    error <= limit
}

fn fail(message: String) -> Outcome {
    Outcome::Fail(message)
}

/// Turns an engine error into a failure, or into "unsupported" when the
/// device cannot run the kernel at all.
fn engine_error(error: Error) -> Outcome {
    if matches!(
        error,
        Error::ShaderCompilation { .. } | Error::RequestDevice { .. }
    ) {
        Outcome::Unsupported(error.to_string())
    } else {
        Outcome::Fail(error.to_string())
    }
}

fn random_rows(seed: u64, n: usize, d: usize, scale: f32) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| scale * (rng.random::<f32>() - 0.5))
                .collect()
        })
        .collect()
}

/// Compares squared distances with the reference under the accuracy
/// contract: relative 1e-4, absolute floor 1e-6 · (|x_i|² + |x_j|²).
fn compare_distances(engine: &Engine, rows: &[Vec<f32>]) -> Result<f64, Outcome> {
    let expected = Engine::reference()
        .pairwise_sq_distances(rows)
        .map_err(|e| fail(format!("reference failed: {e}")))?;
    let computed = engine.pairwise_sq_distances(rows).map_err(engine_error)?;
    let norms: Vec<f64> = rows
        .iter()
        .map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum())
        .collect();
    let mut worst = 0f64;
    for ((i, j), &exact) in expected.indexed_iter() {
        let got = computed[[i, j]];
        if exact.is_infinite() || got.is_infinite() {
            if exact != got {
                return Err(fail(format!("D[{i}][{j}] = {got}, reference {exact}")));
            }
            continue;
        }
        let floor = 1e-6 * (norms[i] + norms[j]);
        let tolerance = (DISTANCE_TOLERANCE * exact.abs()).max(floor);
        let diff = (got - exact).abs();
        if !within(diff, tolerance) {
            return Err(fail(format!(
                "D[{i}][{j}] = {got}, reference {exact}, tolerance {tolerance}"
            )));
        }
        if exact != 0.0 {
            worst = worst.max(diff / exact.abs());
        }
    }
    Ok(worst)
}

fn check_distances_random(engine: &Engine) -> Result<f64, Outcome> {
    compare_distances(engine, &random_rows(1, 7, 1000, 2.0))
}

fn check_distances_boundaries(engine: &Engine) -> Result<f64, Outcome> {
    // Sizes one past common workgroup, slice and buffer boundaries.
    let mut worst = 0f64;
    for d in [1, 63, 65, 257, 4097, (1 << 16) + 3] {
        worst = worst.max(compare_distances(
            engine,
            &random_rows(d as u64, 5, d, 1.0),
        )?);
    }
    Ok(worst)
}

fn check_distances_offset(engine: &Engine) -> Result<f64, Outcome> {
    // Coordinates near 1000 that differ by about 1e-3: the Gram form
    // |x|² + |y|² − 2⟨x, y⟩ in f32 loses every digit here.
    let rows: Vec<Vec<f32>> = random_rows(2, 9, 512, 2e-3)
        .into_iter()
        .map(|r| r.into_iter().map(|v| 1000.0 + v).collect())
        .collect();
    let worst = compare_distances(engine, &rows)?;
    same_selection(engine, &Rule::Krum { f: 2 }, &rows)?;
    Ok(worst)
}

fn check_overflow(engine: &Engine) -> Result<f64, Outcome> {
    // Finite workers about 1e19 apart: every squared distance exceeds
    // f32::MAX, so an engine that sums in f32 gets +Inf everywhere, while the
    // reference's f64 scores are finite and separated.
    let rows: Vec<Vec<f32>> = random_rows(3, 8, 64, 1.0)
        .into_iter()
        .map(|r| r.into_iter().map(|v| v * 4.0e19).collect())
        .collect();
    let worst = compare_distances(engine, &rows)?;
    same_selection(engine, &Rule::Krum { f: 2 }, &rows)?;
    same_selection(engine, &Rule::MultiKrum { f: 2, m: 5 }, &rows)?;
    Ok(worst)
}

fn check_scores(engine: &Engine) -> Result<f64, Outcome> {
    let rows = random_rows(4, 12, 300, 1.0);
    let rule = Rule::Krum { f: 3 };
    let expected = reference(&rule, None, &rows)?;
    let got = engine.aggregate(&rule, &rows).map_err(engine_error)?;
    let (Some(expected), Some(got)) = (expected.scores, got.scores) else {
        return Err(fail("Krum returned no scores".to_string()));
    };
    let mut worst = 0f64;
    for (i, (&e, &g)) in expected.iter().zip(&got).enumerate() {
        let relative = (g - e).abs() / e.abs().max(f64::MIN_POSITIVE);
        if !within(relative, DISTANCE_TOLERANCE) {
            return Err(fail(format!("score {i} = {g}, reference {e}")));
        }
        worst = worst.max(relative);
    }
    Ok(worst)
}

fn check_ties(engine: &Engine) -> Result<f64, Outcome> {
    // Workers 2 and 5 are identical and closest to the rest, so their scores
    // tie and the lower index must win.
    let mut rows = random_rows(5, 7, 40, 1.0);
    rows[2] = vec![0.0; 40];
    rows[5] = vec![0.0; 40];
    let out = engine
        .aggregate(&Rule::Krum { f: 1 }, &rows)
        .map_err(engine_error)?;
    if out.selected != [2] {
        return Err(fail(format!(
            "selected {:?}, expected [2] by lowest index",
            out.selected
        )));
    }
    Ok(0.0)
}

fn check_non_finite(engine: &Engine) -> Result<f64, Outcome> {
    let mut rows = random_rows(6, 9, 100, 1.0);
    rows[1][7] = f32::NAN;
    rows[4][0] = f32::INFINITY;
    rows[8][99] = f32::NEG_INFINITY;
    let rule = Rule::Krum { f: 3 };
    same_selection(engine, &rule, &rows)?;
    let out = engine.aggregate(&rule, &rows).map_err(engine_error)?;
    if out.non_finite != [1, 4, 8] {
        return Err(fail(format!(
            "non-finite {:?}, expected [1, 4, 8]",
            out.non_finite
        )));
    }
    match engine.aggregate(&Rule::Krum { f: 2 }, &rows) {
        Err(Error::TooManyNonFinite { workers, .. }) if workers == [1, 4, 8] => Ok(0.0),
        other => Err(fail(format!(
            "with f = 2, expected TooManyNonFinite, got {other:?}"
        ))),
    }
}

fn check_multi_krum_m(engine: &Engine) -> Result<f64, Outcome> {
    let rows = random_rows(7, 11, 80, 1.0);
    let mut worst = 0f64;
    for m in [1, 8, 11] {
        let rule = Rule::MultiKrum { f: 3, m };
        same_selection(engine, &rule, &rows)?;
        worst = worst.max(compare_vectors(engine, &rule, None, &rows, 1e-5)?);
    }
    Ok(worst)
}

/// Nine honest workers around 1 and three outliers, one of them NaN.
fn rule_input() -> Vec<Vec<f32>> {
    let mut rows = random_rows(8, 12, 333, 1.0);
    for row in rows.iter_mut().take(9) {
        row.iter_mut().for_each(|v| *v += 1.0);
    }
    rows[9] = vec![50.0; 333];
    rows[10] = vec![-30.0; 333];
    rows[11][5] = f32::NAN;
    rows
}

fn check_rule(
    engine: &Engine,
    rule: Rule,
    pre: Option<PreAggregation>,
    tolerance: f64,
) -> Result<f64, Outcome> {
    let rows = rule_input();
    if !matches!(
        rule,
        Rule::GeometricMedian { .. } | Rule::CenteredClipping { .. }
    ) {
        same_selection_with(engine, &rule, pre, &rows)?;
    }
    compare_vectors(engine, &rule, pre, &rows, tolerance)
}

fn reference(
    rule: &Rule,
    pre: Option<PreAggregation>,
    rows: &[Vec<f32>],
) -> Result<Aggregation, Outcome> {
    Engine::reference()
        .aggregate_with(rule, pre, rows)
        .map_err(|e| fail(format!("reference failed: {e}")))
}

fn same_selection(engine: &Engine, rule: &Rule, rows: &[Vec<f32>]) -> Result<(), Outcome> {
    same_selection_with(engine, rule, None, rows)
}

fn same_selection_with(
    engine: &Engine,
    rule: &Rule,
    pre: Option<PreAggregation>,
    rows: &[Vec<f32>],
) -> Result<(), Outcome> {
    let expected = reference(rule, pre, rows)?;
    let got = engine
        .aggregate_with(rule, pre, rows)
        .map_err(engine_error)?;
    if got.selected != expected.selected {
        return Err(fail(format!(
            "{} selected {:?}, reference {:?}",
            rule.name(),
            got.selected,
            expected.selected
        )));
    }
    Ok(())
}

/// Compares output vectors coordinate by coordinate, relative to the
/// largest reference coordinate so that values near zero do not dominate.
fn compare_vectors(
    engine: &Engine,
    rule: &Rule,
    pre: Option<PreAggregation>,
    rows: &[Vec<f32>],
    tolerance: f64,
) -> Result<f64, Outcome> {
    let expected = reference(rule, pre, rows)?;
    let got = engine
        .aggregate_with(rule, pre, rows)
        .map_err(engine_error)?;
    let scale = expected
        .vector
        .iter()
        .map(|v| v.abs() as f64)
        .fold(f64::MIN_POSITIVE, f64::max);
    let mut worst = 0f64;
    for (c, (&e, &g)) in expected.vector.iter().zip(&got.vector).enumerate() {
        let relative = (g as f64 - e as f64).abs() / scale;
        if !within(relative, tolerance.max(f32::EPSILON as f64)) {
            return Err(fail(format!(
                "{} coordinate {c} = {g}, reference {e}, relative error {relative:.2e} above {tolerance:.0e}",
                rule.name()
            )));
        }
        worst = worst.max(relative);
    }
    Ok(worst)
}
