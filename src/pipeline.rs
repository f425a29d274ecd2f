//! Every rule composed from the [`Stages`] of a fast backend.

use ndarray::Array2;

use crate::cpu::reference::check_chosen_finite;
use crate::gradients::{validate_shape, Subset};
use crate::stages::{CoordinateStat, Stages};
use crate::{Aggregation, Error, GradientSource, PreAggregation, Result, Rule};

/// Workers whose diagonal entry is not 0 are the non-finite ones.
fn non_finite_from_diagonal(sq_distances: &Array2<f64>) -> Vec<usize> {
    (0..sq_distances.nrows())
        .filter(|&i| sq_distances[[i, i]] != 0.0)
        .collect()
}

fn check_budget(non_finite: Vec<usize>, f: usize) -> Result<Vec<usize>> {
    if non_finite.len() > f {
        return Err(Error::TooManyNonFinite {
            workers: non_finite,
            f,
        });
    }
    Ok(non_finite)
}

/// Weights (1 × n) that average `indices` with equal weight.
fn mean_weights(n: usize, indices: &[usize]) -> Array2<f64> {
    let mut weights = Array2::zeros((1, n));
    for &i in indices {
        weights[[0, i]] = 1.0 / indices.len() as f64;
    }
    weights
}

fn single(mut sums: Vec<Vec<f32>>) -> Vec<f32> {
    sums.swap_remove(0)
}

/// Aggregates `grads` with `rule` on `stages`, after the optional
/// pre-aggregation step.
pub fn aggregate(
    stages: &dyn Stages,
    rule: &Rule,
    pre: Option<PreAggregation>,
    grads: &dyn GradientSource,
) -> Result<Aggregation> {
    let (n, d) = validate_shape(grads)?;
    rule.validate(n, d)?;
    match pre {
        None => aggregate_rule(stages, rule, grads),
        Some(PreAggregation::Nnm) => {
            let mixed = nearest_neighbour_mixing(stages, rule.f(), grads)?;
            aggregate_rule(stages, rule, &mixed)
        }
    }
}

/// Nearest-neighbour mixing: each finite x_i becomes the mean of its n − f
/// nearest vectors, itself included; non-finite vectors become NaN so that
/// the rule still sees them as non-finite.
fn nearest_neighbour_mixing(
    stages: &dyn Stages,
    f: usize,
    grads: &dyn GradientSource,
) -> Result<Vec<Vec<f32>>> {
    let (n, d) = validate_shape(grads)?;
    let sq_distances = stages.sq_distances(grads)?;
    let non_finite = check_budget(non_finite_from_diagonal(&sq_distances), f)?;
    let mut weights = Array2::zeros((n, n));
    for i in (0..n).filter(|i| !non_finite.contains(i)) {
        let row: Vec<f64> = sq_distances.row(i).to_vec();
        for j in crate::cpu::select_lowest(&row, n - f) {
            weights[[i, j]] = 1.0 / (n - f) as f64;
        }
    }
    let mut mixed = stages.weighted_sums(grads, &weights)?;
    for &i in &non_finite {
        mixed[i] = vec![f32::NAN; d];
    }
    Ok(mixed)
}

fn aggregate_rule(
    stages: &dyn Stages,
    rule: &Rule,
    grads: &dyn GradientSource,
) -> Result<Aggregation> {
    let (n, d) = validate_shape(grads)?;
    let f = rule.f();
    match rule {
        Rule::Krum { .. } | Rule::MultiKrum { .. } | Rule::Bulyan { .. } => {
            let sq_distances = stages.sq_distances(grads)?;
            let non_finite = check_budget(non_finite_from_diagonal(&sq_distances), f)?;
            let mut out = Aggregation::empty(non_finite);
            match rule {
                Rule::Krum { .. } => {
                    let scores = stages.scores(&sq_distances, n - f - 2)?;
                    let best = stages.select_lowest(&scores, 1)?[0];
                    let mut vector = vec![0f32; d];
                    grads.read_into(best, 0, &mut vector)?;
                    out.vector = vector;
                    out.selected = vec![best];
                    out.scores = Some(scores);
                }
                Rule::MultiKrum { m, .. } => {
                    let scores = stages.scores(&sq_distances, n - f - 2)?;
                    let chosen = stages.select_lowest(&scores, *m)?;
                    check_chosen_finite(rule, *m, &chosen, &out.non_finite, n)?;
                    out.vector = single(stages.weighted_sums(grads, &mean_weights(n, &chosen))?);
                    out.selected = chosen;
                    out.scores = Some(scores);
                }
                _ => {
                    let chosen = bulyan_selection(stages, &sq_distances, f)?;
                    let theta = chosen.len();
                    let subset = Subset::new(grads, chosen.clone());
                    out.vector = stages.coordinate_stat(
                        &subset,
                        CoordinateStat::MeanAroundMedian {
                            beta: theta - 2 * f,
                        },
                    )?;
                    out.selected = chosen;
                }
            }
            Ok(out)
        }
        _ => {
            let non_finite = check_budget(stages.non_finite(grads)?, f)?;
            let finite: Vec<usize> = (0..n).filter(|i| !non_finite.contains(i)).collect();
            // The rule runs on the finite workers alone, so it must still
            // meet its requirement on n after they are dropped.
            rule.validate(finite.len(), d)?;
            let subset = Subset::new(grads, finite.clone());
            let mut out = Aggregation::empty(non_finite);
            match rule {
                Rule::Mean { .. } => {
                    out.vector = single(stages.weighted_sums(
                        &subset,
                        &mean_weights(finite.len(), &(0..finite.len()).collect::<Vec<_>>()),
                    )?);
                }
                Rule::Median { .. } => {
                    out.vector = stages.coordinate_stat(&subset, CoordinateStat::Median)?;
                }
                Rule::TrimmedMean { f } => {
                    out.vector = stages
                        .coordinate_stat(&subset, CoordinateStat::TrimmedMean { trim: *f })?;
                }
                Rule::GeometricMedian {
                    nu, max_iters, tol, ..
                } => {
                    let (vector, iterations) =
                        geometric_median(stages, &subset, *nu, *max_iters, *tol)?;
                    out.vector = vector;
                    out.iterations = Some(iterations);
                }
                Rule::CenteredClipping {
                    tau, iters, center, ..
                } => {
                    let start = center.clone().unwrap_or_else(|| vec![0f32; d]);
                    out.vector = centered_clipping(stages, &subset, start, *tau, *iters)?;
                    out.iterations = Some(*iters);
                }
                _ => unreachable!("distance-based rules are handled above"),
            }
            Ok(out)
        }
    }
}

/// Bulyan's first phase: θ = n − 2f workers, each round a Krum over the
/// workers not chosen yet, with the same f.
///
/// NOTE: the last rounds have fewer than 2f + 3 workers left, so the number of
/// neighbours r − f − 2 is clamped to at least 1 (a round with one worker
/// left chooses it).
fn bulyan_selection(
    stages: &dyn Stages,
    sq_distances: &Array2<f64>,
    f: usize,
) -> Result<Vec<usize>> {
    let n = sq_distances.nrows();
    let theta = n - 2 * f;
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut chosen = Vec::with_capacity(theta);
    while chosen.len() < theta {
        let r = remaining.len();
        let sub =
            Array2::from_shape_fn((r, r), |(a, b)| sq_distances[[remaining[a], remaining[b]]]);
        let neighbours = r.saturating_sub(f + 2).max(1).min(r - 1);
        let scores = stages.scores(&sub, neighbours)?;
        let best = stages.select_lowest(&scores, 1)?[0];
        chosen.push(remaining.remove(best));
    }
    Ok(chosen)
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// Smoothed Weiszfeld iterations from the mean; returns the estimate and the
/// number of iterations run.
fn geometric_median(
    stages: &dyn Stages,
    grads: &dyn GradientSource,
    nu: f64,
    max_iters: usize,
    tol: f64,
) -> Result<(Vec<f32>, usize)> {
    let n = grads.workers();
    let all: Vec<usize> = (0..n).collect();
    let mut z = single(stages.weighted_sums(grads, &mean_weights(n, &all))?);
    for iteration in 1..=max_iters {
        let distances = stages.sq_distances_to(grads, &z)?;
        let raw: Vec<f64> = distances.iter().map(|s| 1.0 / s.sqrt().max(nu)).collect();
        let total: f64 = raw.iter().sum();
        let weights = Array2::from_shape_fn((1, n), |(_, i)| raw[i] / total);
        let next = single(stages.weighted_sums(grads, &weights)?);
        let change: Vec<f32> = next.iter().zip(&z).map(|(a, b)| a - b).collect();
        let converged = norm(&change) <= tol * norm(&z);
        z = next;
        if converged {
            return Ok((z, iteration));
        }
    }
    Ok((z, max_iters))
}

/// Centered clipping: v ← v + mean_i clip(x_i − v, τ), `iters` times.
fn centered_clipping(
    stages: &dyn Stages,
    grads: &dyn GradientSource,
    mut v: Vec<f32>,
    tau: f64,
    iters: usize,
) -> Result<Vec<f32>> {
    let n = grads.workers();
    for _ in 0..iters {
        let distances = stages.sq_distances_to(grads, &v)?;
        // clip(x_i − v, τ) = c_i (x_i − v) with c_i = min(1, τ / |x_i − v|),
        // so the update is v (1 − Σ c_i / n) + Σ (c_i / n) x_i.
        let clip: Vec<f64> = distances
            .iter()
            .map(|s| {
                let distance = s.sqrt();
                if distance > tau {
                    tau / distance
                } else {
                    1.0
                }
            })
            .collect();
        let weights = Array2::from_shape_fn((1, n), |(_, i)| clip[i] / n as f64);
        let pulled = single(stages.weighted_sums(grads, &weights)?);
        let keep = 1.0 - clip.iter().sum::<f64>() / n as f64;
        v = v
            .iter()
            .zip(&pulled)
            .map(|(&old, &p)| (old as f64 * keep + p as f64) as f32)
            .collect();
    }
    Ok(v)
}
