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
    to_f32(&mean_f64(rows, indices, d))
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
    let mut out = Aggregation::empty(non_finite);
    match rule {
        Rule::Krum { f } => {
            let scores = krum_scores(&distance_matrix(&rows), n - f - 2);
            let best = select_lowest(&scores, 1)[0];
            out.vector = to_f32(&rows[best]);
            out.selected = vec![best];
            out.scores = Some(scores);
        }
        Rule::MultiKrum { f, m } => {
            let scores = krum_scores(&distance_matrix(&rows), n - f - 2);
            let chosen = select_lowest(&scores, *m);
            if chosen.iter().any(|i| out.non_finite.contains(i)) {
                return Err(m_exceeds_finite(rule, *m, &out.non_finite, n));
            }
            out.vector = mean_of(&rows, &chosen, d);
            out.selected = chosen;
            out.scores = Some(scores);
        }
        Rule::Bulyan { f } => {
            let chosen = bulyan_selection(&rows, *f);
            let beta = chosen.len() - 2 * f;
            out.vector = per_coordinate(&rows, &chosen, |values| mean_around_median(values, beta));
            out.selected = chosen;
        }
        Rule::Mean { .. } => {
            let finite = finite_workers(rule, &out.non_finite, n, d)?;
            out.vector = mean_of(&rows, &finite, d);
        }
        Rule::Median { .. } => {
            let finite = finite_workers(rule, &out.non_finite, n, d)?;
            out.vector = per_coordinate(&rows, &finite, median);
        }
        Rule::TrimmedMean { f } => {
            let finite = finite_workers(rule, &out.non_finite, n, d)?;
            out.vector = per_coordinate(&rows, &finite, |values| trimmed_mean(values, *f));
        }
        Rule::GeometricMedian {
            nu, max_iters, tol, ..
        } => {
            let finite = finite_workers(rule, &out.non_finite, n, d)?;
            let points: Vec<&[f64]> = finite.iter().map(|&i| &rows[i][..]).collect();
            let (z, iterations) = geometric_median(&points, *nu, *max_iters, *tol);
            out.vector = to_f32(&z);
            out.iterations = Some(iterations);
        }
        Rule::CenteredClipping {
            tau, iters, center, ..
        } => {
            let finite = finite_workers(rule, &out.non_finite, n, d)?;
            let points: Vec<&[f64]> = finite.iter().map(|&i| &rows[i][..]).collect();
            let start: Vec<f64> = match center {
                Some(center) => center.iter().map(|&v| v as f64).collect(),
                None => vec![0.0; d],
            };
            out.vector = to_f32(&centered_clipping(&points, start, *tau, *iters));
            out.iterations = Some(*iters);
        }
    }
    Ok(out)
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The workers left once the non-finite ones are dropped, checked against the
/// rule's requirement on n.
fn finite_workers(rule: &Rule, non_finite: &[usize], n: usize, d: usize) -> Result<Vec<usize>> {
    rule.validate_finite(n, non_finite, d)?;
    Ok((0..n).filter(|i| !non_finite.contains(i)).collect())
}

/// The error for a Multi-Krum m that would average a non-finite worker: m
/// must not exceed the number of finite workers.
pub(crate) fn m_exceeds_finite(rule: &Rule, m: usize, non_finite: &[usize], n: usize) -> Error {
    Error::InvalidParameter {
        rule: rule.name(),
        name: "m",
        value: m.to_string(),
        fix: format!(
            "workers {non_finite:?} are non-finite, so choose m ≤ {}, the number of finite workers",
            n - non_finite.len()
        ),
    }
}

/// Applies `stat` to each coordinate's values over the workers `indices`.
fn per_coordinate(
    rows: &[Vec<f64>],
    indices: &[usize],
    stat: impl Fn(&mut [f64]) -> f64,
) -> Vec<f32> {
    let d = rows[0].len();
    let mut values = vec![0f64; indices.len()];
    (0..d)
        .map(|c| {
            for (v, &i) in values.iter_mut().zip(indices) {
                *v = rows[i][c];
            }
            stat(&mut values) as f32
        })
        .collect()
}

/// The median of `values` (reordered); the mean of the two middle values for
/// an even count.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let k = values.len();
    if k % 2 == 1 {
        values[k / 2]
    } else {
        (values[k / 2 - 1] + values[k / 2]) / 2.0
    }
}

/// The mean of `values` (reordered) without the `trim` largest and the `trim`
/// smallest.
fn trimmed_mean(values: &mut [f64], trim: usize) -> f64 {
    values.sort_by(f64::total_cmp);
    let kept = &values[trim..values.len() - trim];
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// The mean of the `beta` values (reordered) closest to their median, ties by
/// lower value.
fn mean_around_median(values: &mut [f64], beta: usize) -> f64 {
    let centre = median(values);
    values.sort_by(|a, b| {
        let da = (a - centre).abs();
        let db = (b - centre).abs();
        da.total_cmp(&db).then(a.total_cmp(b))
    });
    values[..beta].iter().sum::<f64>() / beta as f64
}

/// Bulyan's first phase: θ = n − 2f workers in the order chosen, each round
/// a Krum with the same f over the workers not chosen yet, ties by lowest
/// index. A round with r workers left uses r − f − 2 neighbours, at least 1
/// and at most r − 1.
fn bulyan_selection(rows: &[Vec<f64>], f: usize) -> Vec<usize> {
    let n = rows.len();
    let distances = distance_matrix(rows);
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut chosen = Vec::new();
    while chosen.len() < n - 2 * f {
        let r = remaining.len();
        let neighbours = r.saturating_sub(f + 2).max(1).min(r - 1);
        let score = |i: usize| -> f64 {
            let mut to_others: Vec<f64> = remaining
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| distances[[i, j]])
                .collect();
            to_others.sort_by(f64::total_cmp);
            to_others[..neighbours].iter().sum()
        };
        // `remaining` is in ascending index order and only a strictly lower
        // score replaces the best, so ties go to the lowest index.
        let mut best = 0;
        let mut best_score = score(remaining[0]);
        for (position, &worker) in remaining.iter().enumerate().skip(1) {
            let s = score(worker);
            if s < best_score {
                best = position;
                best_score = s;
            }
        }
        chosen.push(remaining.remove(best));
    }
    chosen
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Smoothed Weiszfeld iterations started from the mean:
/// z ← Σ_i w_i x_i / Σ_i w_i with w_i = 1 / max(ν, |z − x_i|), until
/// |z_{t+1} − z_t| ≤ tol · |z_t| or `max_iters`. Returns z and the number of
/// iterations run.
fn geometric_median(points: &[&[f64]], nu: f64, max_iters: usize, tol: f64) -> (Vec<f64>, usize) {
    let d = points[0].len();
    let mut z = vec![0f64; d];
    for x in points {
        for (zc, xc) in z.iter_mut().zip(x.iter()) {
            *zc += xc / points.len() as f64;
        }
    }
    for iteration in 1..=max_iters {
        let weights: Vec<f64> = points
            .iter()
            .map(|x| 1.0 / sq_distance(x, &z).sqrt().max(nu))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut next = vec![0f64; d];
        for (x, w) in points.iter().zip(&weights) {
            for (nc, xc) in next.iter_mut().zip(x.iter()) {
                *nc += w * xc;
            }
        }
        for nc in &mut next {
            *nc /= total;
        }
        let converged = sq_distance(&next, &z).sqrt() <= tol * norm(&z);
        z = next;
        if converged {
            return (z, iteration);
        }
    }
    (z, max_iters)
}

/// Centered clipping: v ← v + mean_i clip(x_i − v, τ), `iters` times, where
/// clip(u, τ) = u · min(1, τ / |u|).
fn centered_clipping(points: &[&[f64]], mut v: Vec<f64>, tau: f64, iters: usize) -> Vec<f64> {
    let k = points.len() as f64;
    for _ in 0..iters {
        let mut step = vec![0f64; v.len()];
        for x in points {
            let diff: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a - b).collect();
            let length = norm(&diff);
            let scale = if length > tau { tau / length } else { 1.0 };
            for (s, u) in step.iter_mut().zip(&diff) {
                *s += scale * u / k;
            }
        }
        for (vc, s) in v.iter_mut().zip(&step) {
            *vc += s;
        }
    }
    v
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
