//! The reference path: every rule written directly from its definition and
//! accumulated in f64, for obviousness rather than speed.
//!
//! It reads each worker's whole gradient into host memory, so it is meant for
//! tests and for checking the fast backends, not for very large d.

use ndarray::Array2;

use crate::cpu::{krum_scores, select_lowest};
use crate::gradients::validate_shape;
use crate::{Aggregation, Error, GradientSource, PreAggregation, Result, Rule};

/// Reads every worker's gradient as f64.
fn load_rows(grads: &dyn GradientSource) -> Result<Vec<Vec<f64>>> {
    let (n, d) = validate_shape(grads)?;
    let mut buffer = vec![0f32; d];
    (0..n)
        .map(|worker| {
            grads.read_into(worker, 0, &mut buffer)?;
            Ok(buffer.iter().map(|&v| v as f64).collect())
        })
        .collect()
}

fn is_finite_row(row: &[f64]) -> bool {
    row.iter().all(|v| v.is_finite())
}

/// Squared distance Σ_c (x[c] − y[c])², from the differences, in f64.
pub fn sq_distance(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// The n×n squared-distance matrix; rows and columns of non-finite workers,
/// diagonal included, are +Inf.
pub fn sq_distances(grads: &dyn GradientSource) -> Result<Array2<f64>> {
    let rows = load_rows(grads)?;
    Ok(distance_matrix(&rows))
}

fn distance_matrix(rows: &[Vec<f64>]) -> Array2<f64> {
    let n = rows.len();
    let finite: Vec<bool> = rows.iter().map(|r| is_finite_row(r)).collect();
    Array2::from_shape_fn((n, n), |(i, j)| {
        if !finite[i] || !finite[j] {
            f64::INFINITY
        } else {
            sq_distance(&rows[i], &rows[j])
        }
    })
}

fn check_non_finite(rows: &[Vec<f64>], f: usize) -> Result<Vec<usize>> {
    let workers: Vec<usize> = (0..rows.len())
        .filter(|&i| !is_finite_row(&rows[i]))
        .collect();
    if workers.len() > f {
        return Err(Error::TooManyNonFinite { workers, f });
    }
    Ok(workers)
}

fn mean_f64(rows: &[Vec<f64>], indices: &[usize], d: usize) -> Vec<f64> {
    let mut sum = vec![0f64; d];
    for &i in indices {
        for (s, v) in sum.iter_mut().zip(&rows[i]) {
            *s += v;
        }
    }
    sum.iter().map(|s| s / indices.len() as f64).collect()
}

fn mean_of(rows: &[Vec<f64>], indices: &[usize], d: usize) -> Vec<f32> {
    mean_f64(rows, indices, d)
        .iter()
        .map(|&v| v as f32)
        .collect()
}

/// Aggregates with `rule`, after the optional pre-aggregation step.
pub fn aggregate(
    rule: &Rule,
    pre: Option<PreAggregation>,
    grads: &dyn GradientSource,
) -> Result<Aggregation> {
    let (n, d) = validate_shape(grads)?;
    rule.validate(n, d)?;
    let rows = load_rows(grads)?;
    let non_finite = check_non_finite(&rows, rule.f())?;
    let rows = match pre {
        None => rows,
        Some(PreAggregation::Nnm) => nearest_neighbour_mixing(&rows, rule.f()),
    };
    let finite: Vec<usize> = (0..n).filter(|i| !non_finite.contains(i)).collect();
    let mut out = Aggregation {
        vector: Vec::new(),
        selected: Vec::new(),
        scores: None,
        non_finite,
        iterations: None,
    };
    match rule {
        Rule::Mean { .. } => {
            out.vector = mean_of(&rows, &finite, d);
        }
        Rule::Krum { f } => {
            let scores = krum_scores(&distance_matrix(&rows), n - f - 2);
            let best = select_lowest(&scores, 1)[0];
            out.vector = rows[best].iter().map(|&v| v as f32).collect();
            out.selected = vec![best];
            out.scores = Some(scores);
        }
        Rule::MultiKrum { f, m } => {
            let scores = krum_scores(&distance_matrix(&rows), n - f - 2);
            let chosen = select_lowest(&scores, *m);
            check_chosen_finite(rule, *m, &chosen, &out.non_finite, n)?;
            out.vector = mean_of(&rows, &chosen, d);
            out.selected = chosen;
            out.scores = Some(scores);
        }
        _ => {
            return Err(Error::InvalidParameter {
                rule: rule.name(),
                name: "rule",
                value: rule.name().to_string(),
                fix: "this rule has no reference implementation yet".to_string(),
            })
        }
    }
    Ok(out)
}

/// Multi-Krum may not average a non-finite worker: m must not exceed the
/// number of finite workers.
pub(crate) fn check_chosen_finite(
    rule: &Rule,
    m: usize,
    chosen: &[usize],
    non_finite: &[usize],
    n: usize,
) -> Result<()> {
    if chosen.iter().any(|i| non_finite.contains(i)) {
        return Err(Error::InvalidParameter {
            rule: rule.name(),
            name: "m",
            value: m.to_string(),
            fix: format!(
                "workers {non_finite:?} are non-finite, so choose m ≤ {}, the number of finite workers",
                n - non_finite.len()
            ),
        });
    }
    Ok(())
}

/// Nearest-neighbour mixing: each finite x_i becomes the mean of its n − f
/// nearest vectors (itself included, ties by lowest index); non-finite
/// vectors stay as they are.
fn nearest_neighbour_mixing(rows: &[Vec<f64>], f: usize) -> Vec<Vec<f64>> {
    let n = rows.len();
    let d = rows[0].len();
    let distances = distance_matrix(rows);
    (0..n)
        .map(|i| {
            if !distances[[i, i]].is_finite() {
                return rows[i].clone();
            }
            let row: Vec<f64> = (0..n).map(|j| distances[[i, j]]).collect();
            let nearest = select_lowest(&row, n - f);
            mean_f64(rows, &nearest, d)
        })
        .collect()
}
