//! The four pipeline stages every fast backend implements, and the rules
//! written once on top of them.
//!
//! The f64 reference in [`crate::cpu::reference`] does not use this module: it
//! implements each rule directly from its definition, so that it can check
//! the compositions here.

use ndarray::Array2;

use crate::{GradientSource, Result};

/// A per-coordinate order statistic over the workers of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinateStat {
    /// The median; the mean of the two middle values for an even count.
    Median,
    /// The mean after dropping the `trim` largest and `trim` smallest values.
    TrimmedMean {
        /// Values dropped at each end.
        trim: usize,
    },
    /// The mean of the `beta` values closest to the median (Bulyan's second
    /// phase), ties by lower value.
    MeanAroundMedian {
        /// Number of values averaged.
        beta: usize,
    },
}

/// Returns `weights` as the 1 × n matrix that [`Stages::weighted_sums`]
/// takes.
pub(crate) fn one_row(weights: &[f64]) -> Array2<f64> {
    Array2::from_shape_fn((1, weights.len()), |(_, i)| weights[i])
}

/// The stages of the aggregation pipeline, one implementation per backend.
///
/// Inputs are always finite except where a method's documentation states otherwise: the
/// pipeline drops non-finite workers before the order statistics and the
/// weighted sums.
pub trait Stages: Send + Sync {
    /// Backend name used in reports: `cpu` or `gpu`.
    fn name(&self) -> &'static str;

    /// Adapter name, for GPU backends.
    fn adapter(&self) -> Option<String>;

    /// Indices of the workers with any NaN or ±Inf coordinate, ascending.
    fn non_finite(&self, grads: &dyn GradientSource) -> Result<Vec<usize>>;

    /// The n×n matrix of squared distances, computed from differences.
    ///
    /// Rows and columns of non-finite workers, diagonal included, are +Inf;
    /// the diagonal of finite workers is 0. Any worker may be non-finite here.
    fn sq_distances(&self, grads: &dyn GradientSource) -> Result<Array2<f64>>;

    /// Krum scores: for each row, the sum of its `neighbours` smallest
    /// off-diagonal entries (+Inf entries included as +Inf).
    fn scores(&self, sq_distances: &Array2<f64>, neighbours: usize) -> Result<Vec<f64>>;

    /// Indices of the `m` lowest scores in ascending score order, ties by
    /// lowest index.
    fn select_lowest(&self, scores: &[f64], m: usize) -> Result<Vec<usize>> {
        Ok(crate::cpu::select_lowest(scores, m))
    }

    /// For each row w of `weights` (outputs × n), the vector Σ_i w_i x_i.
    fn weighted_sums(
        &self,
        grads: &dyn GradientSource,
        weights: &Array2<f64>,
    ) -> Result<Vec<Vec<f32>>>;

    /// Writes the one vector Σ_i weights[i] x_i into `out`. A backend that can
    /// write in place keeps `out`'s memory when it already contains d values.
    /// The default allocates through [`Stages::weighted_sums`].
    fn weighted_sum_into(
        &self,
        grads: &dyn GradientSource,
        weights: &[f64],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        *out = self.weighted_sums(grads, &one_row(weights))?.swap_remove(0);
        Ok(())
    }

    /// A per-coordinate order statistic over all workers of `grads`.
    fn coordinate_stat(&self, grads: &dyn GradientSource, stat: CoordinateStat)
        -> Result<Vec<f32>>;

    /// Writes [`Stages::coordinate_stat`] into `out`, keeping its memory where
    /// the backend can, as [`Stages::weighted_sum_into`] does.
    fn coordinate_stat_into(
        &self,
        grads: &dyn GradientSource,
        stat: CoordinateStat,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        *out = self.coordinate_stat(grads, stat)?;
        Ok(())
    }

    /// |x_i − z|² for each worker i.
    fn sq_distances_to(&self, grads: &dyn GradientSource, point: &[f32]) -> Result<Vec<f64>>;
}
