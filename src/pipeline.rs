//! Every rule composed from the [`Stages`] of a fast backend.

use ndarray::Array2;

use crate::cpu::reference::m_exceeds_finite;
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

/// Weights (one per worker of n) that average `indices` with equal weight.
fn mean_weights(n: usize, indices: &[usize]) -> Vec<f64> {
    let mut weights = vec![0.0; n];
    for &i in indices {
        weights[i] = 1.0 / indices.len() as f64;
    }
    weights
}

/// Aggregates `grads` with `rule` on `stages`, after the optional
/// pre-aggregation step. The result's vector is written into `vector` where
/// the rule and backend allow, reusing its memory, and then moved into the
/// result. On error `vector` keeps memory for the next call.
pub fn aggregate(
    stages: &dyn Stages,
    rule: &Rule,
    pre: Option<PreAggregation>,
    grads: &dyn GradientSource,
    vector: &mut Vec<f32>,
) -> Result<Aggregation> {
    let (n, d) = validate_shape(grads)?;
    rule.validate(n, d)?;
    match pre {
        None => aggregate_rule(stages, rule, grads, vector),
        Some(PreAggregation::Nnm) => {
            let mixed = nearest_neighbour_mixing(stages, rule.f(), grads)?;
            aggregate_rule(stages, rule, &mixed, vector)
        }
    }
}

/// Nearest-neighbour mixing: each finite x_i becomes the mean of its n − f
/// nearest vectors, itself included; non-finite vectors become NaN so that
/// the rule still treats them as non-finite.
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
        // Non-finite workers are skipped by index, not only by their +Inf
        // distance, which a finite worker's overflowing distance can equal.
        let nearest = crate::cpu::select_lowest(&row, n)
            .into_iter()
            .filter(|j| !non_finite.contains(j))
            .take(n - f);
        for j in nearest {
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
    vector: &mut Vec<f32>,
) -> Result<Aggregation> {
    match rule {
        Rule::Krum { f } => {
            let (sq_distances, mut out) = distances_within_budget(stages, grads, *f)?;
            let n = sq_distances.nrows();
            let scores = stages.scores(&sq_distances, n - f - 2)?;
            // At least n − f ≥ f + 3 workers are finite, so a choice exists.
            let chosen = lowest_finite(stages, rule, &scores, &out.non_finite, 1)?;
            match grads.row(chosen[0]) {
                Some(row) => crate::vectors::copy_into(row, vector),
                None => {
                    crate::vectors::reuse(vector, grads.len_of(0));
                    grads.read_into(chosen[0], 0, vector)?;
                }
            }
            out.vector = std::mem::take(vector);
            out.selected = chosen;
            out.scores = Some(scores);
            Ok(out)
        }
        Rule::MultiKrum { f, m } => {
            let (sq_distances, mut out) = distances_within_budget(stages, grads, *f)?;
            let n = sq_distances.nrows();
            let scores = stages.scores(&sq_distances, n - f - 2)?;
            let chosen = lowest_finite(stages, rule, &scores, &out.non_finite, *m)?;
            stages.weighted_sum_into(grads, &mean_weights(n, &chosen), vector)?;
            out.vector = std::mem::take(vector);
            out.selected = chosen;
            out.scores = Some(scores);
            Ok(out)
        }
        Rule::Bulyan { f } => {
            let (sq_distances, mut out) = distances_within_budget(stages, grads, *f)?;
            let chosen = bulyan_selection(stages, rule, &sq_distances, &out.non_finite, *f)?;
            let beta = chosen.len() - 2 * f;
            let subset = Subset::new(grads, chosen.clone());
            let stat = CoordinateStat::MeanAroundMedian { beta };
            stages.coordinate_stat_into(&subset, stat, vector)?;
            out.vector = std::mem::take(vector);
            out.selected = chosen;
            Ok(out)
        }
        Rule::Mean { .. } => {
            let (finite, mut out) = drop_non_finite(stages, rule, grads)?;
            let all: Vec<usize> = (0..finite.workers()).collect();
            stages.weighted_sum_into(&finite, &mean_weights(all.len(), &all), vector)?;
            out.vector = std::mem::take(vector);
            Ok(out)
        }
        Rule::Median { .. } => {
            let (finite, mut out) = drop_non_finite(stages, rule, grads)?;
            stages.coordinate_stat_into(&finite, CoordinateStat::Median, vector)?;
            out.vector = std::mem::take(vector);
            Ok(out)
        }
        Rule::TrimmedMean { f } => {
            let (finite, mut out) = drop_non_finite(stages, rule, grads)?;
            let stat = CoordinateStat::TrimmedMean { trim: *f };
            stages.coordinate_stat_into(&finite, stat, vector)?;
            out.vector = std::mem::take(vector);
            Ok(out)
        }
        Rule::GeometricMedian {
            nu, max_iters, tol, ..
        } => {
            let (finite, mut out) = drop_non_finite(stages, rule, grads)?;
            let iterations = geometric_median(stages, &finite, *nu, *max_iters, *tol, vector)?;
            out.vector = std::mem::take(vector);
            out.iterations = Some(iterations);
            Ok(out)
        }
        Rule::CenteredClipping {
            tau, iters, center, ..
        } => {
            let (finite, mut out) = drop_non_finite(stages, rule, grads)?;
            let d = finite.len_of(0);
            match center {
                Some(center) => crate::vectors::copy_into(center, vector),
                None => {
                    crate::vectors::reuse(vector, d);
                    vector.fill(0.0);
                }
            }
            centered_clipping(stages, &finite, vector, *tau, *iters)?;
            out.vector = std::mem::take(vector);
            out.iterations = Some(*iters);
            Ok(out)
        }
    }
}

/// The squared-distance matrix for the Krum family, which keeps non-finite
/// workers at +Inf distance; errors if more than `f` are non-finite.
fn distances_within_budget(
    stages: &dyn Stages,
    grads: &dyn GradientSource,
    f: usize,
) -> Result<(Array2<f64>, Aggregation)> {
    let sq_distances = stages.sq_distances(grads)?;
    let non_finite = check_budget(non_finite_from_diagonal(&sq_distances), f)?;
    Ok((sq_distances, Aggregation::empty(non_finite)))
}

/// The finite workers of `grads`, for the rules that drop the non-finite
/// ones; errors if more than f are non-finite or if the rest no longer meet
/// the rule's requirement on n.
fn drop_non_finite<'a>(
    stages: &dyn Stages,
    rule: &Rule,
    grads: &'a dyn GradientSource,
) -> Result<(Subset<'a, dyn GradientSource + 'a>, Aggregation)> {
    let (n, d) = validate_shape(grads)?;
    let non_finite = check_budget(stages.non_finite(grads)?, rule.f())?;
    rule.validate_finite(n, &non_finite, d)?;
    let finite: Vec<usize> = (0..n).filter(|i| !non_finite.contains(i)).collect();
    Ok((Subset::new(grads, finite), Aggregation::empty(non_finite)))
}

/// The `m` finite workers with the lowest scores, ties by lowest index.
///
/// A finite worker whose distances overflow has a +Inf score like the
/// non-finite ones, so the non-finite workers are filtered out by index rather
/// than left to the tie rule. Fewer than `m` finite workers is the error that
/// requests a smaller m.
fn lowest_finite(
    stages: &dyn Stages,
    rule: &Rule,
    scores: &[f64],
    non_finite: &[usize],
    m: usize,
) -> Result<Vec<usize>> {
    let chosen: Vec<usize> = stages
        .select_lowest(scores, scores.len())?
        .into_iter()
        .filter(|i| !non_finite.contains(i))
        .take(m)
        .collect();
    if chosen.len() < m {
        return Err(m_exceeds_finite(rule, m, non_finite, scores.len()));
    }
    Ok(chosen)
}

/// Bulyan's first phase: θ = n − 2f workers in the order chosen, each round
/// a full Krum with the same f over the workers not chosen yet.
///
/// NOTE: a round with r < f + 3 workers left (only for f ≤ 1) has fewer than
/// 1 neighbour by the Krum formula r − f − 2, so the number of neighbours is
/// clamped to at least 1, and to r − 1 when only one worker is left.
fn bulyan_selection(
    stages: &dyn Stages,
    rule: &Rule,
    sq_distances: &Array2<f64>,
    non_finite: &[usize],
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
        // Every round has at least r − f ≥ f + 1 finite workers left, so a
        // choice exists. `remaining` stays in ascending worker order, so the
        // lowest position is also the lowest worker index on ties.
        let non_finite_here: Vec<usize> = (0..r)
            .filter(|&a| non_finite.contains(&remaining[a]))
            .collect();
        let best = lowest_finite(stages, rule, &scores, &non_finite_here, 1)?;
        chosen.push(remaining.remove(best[0]));
    }
    Ok(chosen)
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// Smoothed Weiszfeld iterations from the mean, ending with the estimate in
/// `z`; returns the number of iterations run. The iterates alternate
/// between `z` and one more vector.
fn geometric_median(
    stages: &dyn Stages,
    grads: &dyn GradientSource,
    nu: f64,
    max_iters: usize,
    tol: f64,
    z: &mut Vec<f32>,
) -> Result<usize> {
    let n = grads.workers();
    let all: Vec<usize> = (0..n).collect();
    stages.weighted_sum_into(grads, &mean_weights(n, &all), z)?;
    let mut next = Vec::new();
    for iteration in 1..=max_iters {
        let distances = stages.sq_distances_to(grads, z)?;
        let raw: Vec<f64> = distances.iter().map(|s| 1.0 / s.sqrt().max(nu)).collect();
        let total: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|r| r / total).collect();
        stages.weighted_sum_into(grads, &weights, &mut next)?;
        let change = next
            .iter()
            .zip(z.iter())
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let converged = change <= tol * norm(z);
        std::mem::swap(z, &mut next);
        if converged {
            return Ok(iteration);
        }
    }
    Ok(max_iters)
}

/// Centered clipping: v ← v + mean_i clip(x_i − v, τ), `iters` times.
fn centered_clipping(
    stages: &dyn Stages,
    grads: &dyn GradientSource,
    v: &mut [f32],
    tau: f64,
    iters: usize,
) -> Result<()> {
    let n = grads.workers();
    let mut pulled = Vec::new();
    for _ in 0..iters {
        let distances = stages.sq_distances_to(grads, v)?;
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
        let weights: Vec<f64> = clip.iter().map(|c| c / n as f64).collect();
        stages.weighted_sum_into(grads, &weights, &mut pulled)?;
        let keep = 1.0 - clip.iter().sum::<f64>() / n as f64;
        for (old, &p) in v.iter_mut().zip(&pulled) {
            *old = (*old as f64 * keep + p as f64) as f32;
        }
    }
    Ok(())
}
