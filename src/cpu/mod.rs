//! CPU backends: the f64 reference (the test oracle) and the fast path.

pub mod fast;
pub mod reference;

pub use fast::CpuStages;

/// Indices of the `m` lowest scores in ascending score order, ties by lowest
/// index. NaN scores sort after +Inf.
pub fn select_lowest(scores: &[f64], m: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        total_key(scores[a])
            .total_cmp(&total_key(scores[b]))
            .then(a.cmp(&b))
    });
    order.truncate(m);
    order
}

/// Maps NaN to +Inf so that a NaN score is never preferred to a number.
fn total_key(score: f64) -> f64 {
    if score.is_nan() {
        f64::INFINITY
    } else {
        score
    }
}

/// Krum scores from a squared-distance matrix: for each row the sum of its
/// `neighbours` smallest off-diagonal entries, in f64.
pub fn krum_scores(sq_distances: &ndarray::Array2<f64>, neighbours: usize) -> Vec<f64> {
    let n = sq_distances.nrows();
    (0..n)
        .map(|i| {
            let mut row: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| total_key(sq_distances[[i, j]]))
                .collect();
            row.sort_by(f64::total_cmp);
            row.iter().take(neighbours).sum()
        })
        .collect()
}
