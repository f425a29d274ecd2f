//! The fast CPU path: multithreaded with rayon, f32 inner loops accumulated
//! in f64.

use ndarray::Array2;
use rayon::prelude::*;

use crate::gradients::validate_shape;
use crate::stages::{CoordinateStat, Stages};
use crate::{GradientSource, Result};

/// Coordinates read per worker at a time when a row is not contiguous.
const SLICE: usize = 1 << 16;

/// The fast CPU implementation of the pipeline stages.
#[derive(Clone, Debug, Default)]
pub struct CpuStages {}

impl CpuStages {
    /// A CPU backend using rayon's global thread pool.
    pub fn new() -> Self {
        Self {}
    }
}

/// Calls `visit(start, slices)` for consecutive coordinate slices, with the
/// slice of every worker; borrowed rows are used without a copy.
fn for_each_slice(
    grads: &dyn GradientSource,
    mut visit: impl FnMut(usize, &[&[f32]]) -> Result<()>,
) -> Result<()> {
    let (n, d) = validate_shape(grads)?;
    let rows: Vec<Option<&[f32]>> = (0..n).map(|i| grads.row(i)).collect();
    let mut buffers: Vec<Vec<f32>> = vec![Vec::new(); n];
    let mut start = 0;
    while start < d {
        let end = (start + SLICE).min(d);
        for (i, buffer) in buffers.iter_mut().enumerate() {
            if rows[i].is_none() {
                buffer.resize(end - start, 0.0);
                grads.read_into(i, start, buffer)?;
            }
        }
        let slices: Vec<&[f32]> = (0..n)
            .map(|i| match rows[i] {
                Some(row) => &row[start..end],
                None => &buffers[i][..],
            })
            .collect();
        visit(start, &slices)?;
        start = end;
    }
    Ok(())
}

fn slice_sq_distance(x: &[f32], y: &[f32]) -> f64 {
    x.chunks(1024)
        .zip(y.chunks(1024))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(p, q)| {
                    let diff = p - q;
                    diff * diff
                })
                .sum::<f32>() as f64
        })
        .sum()
}

impl Stages for CpuStages {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn adapter(&self) -> Option<String> {
        None
    }

    fn non_finite(&self, grads: &dyn GradientSource) -> Result<Vec<usize>> {
        let n = grads.workers();
        let mut finite = vec![true; n];
        for_each_slice(grads, |_, slices| {
            let flags: Vec<bool> = slices
                .par_iter()
                .map(|s| s.iter().all(|v| v.is_finite()))
                .collect();
            for (f, ok) in finite.iter_mut().zip(flags) {
                *f &= ok;
            }
            Ok(())
        })?;
        Ok((0..n).filter(|&i| !finite[i]).collect())
    }

    fn sq_distances(&self, grads: &dyn GradientSource) -> Result<Array2<f64>> {
        let n = grads.workers();
        let non_finite = self.non_finite(grads)?;
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect();
        let mut sums = vec![0f64; pairs.len()];
        for_each_slice(grads, |_, slices| {
            sums.par_iter_mut().zip(&pairs).for_each(|(sum, &(i, j))| {
                *sum += slice_sq_distance(slices[i], slices[j]);
            });
            Ok(())
        })?;
        let mut matrix = Array2::zeros((n, n));
        for (&(i, j), &sum) in pairs.iter().zip(&sums) {
            matrix[[i, j]] = sum;
            matrix[[j, i]] = sum;
        }
        for &i in &non_finite {
            matrix.row_mut(i).fill(f64::INFINITY);
            matrix.column_mut(i).fill(f64::INFINITY);
        }
        Ok(matrix)
    }

    fn scores(&self, sq_distances: &Array2<f64>, neighbours: usize) -> Result<Vec<f64>> {
        Ok(crate::cpu::krum_scores(sq_distances, neighbours))
    }

    fn weighted_sums(
        &self,
        grads: &dyn GradientSource,
        weights: &Array2<f64>,
    ) -> Result<Vec<Vec<f32>>> {
        let (_, d) = validate_shape(grads)?;
        let mut outputs = vec![vec![0f32; d]; weights.nrows()];
        for_each_slice(grads, |start, slices| {
            outputs.par_iter_mut().enumerate().for_each(|(o, output)| {
                let len = slices[0].len();
                let mut acc = vec![0f64; len];
                for (i, slice) in slices.iter().enumerate() {
                    let w = weights[[o, i]];
                    // A zero weight skips the worker, so a non-finite worker
                    // with weight 0 cannot poison the sum.
                    if w == 0.0 {
                        continue;
                    }
                    for (a, &v) in acc.iter_mut().zip(slice.iter()) {
                        *a += w * v as f64;
                    }
                }
                for (dst, a) in output[start..start + len].iter_mut().zip(acc) {
                    *dst = a as f32;
                }
            });
            Ok(())
        })?;
        Ok(outputs)
    }

    fn coordinate_stat(
        &self,
        grads: &dyn GradientSource,
        stat: CoordinateStat,
    ) -> Result<Vec<f32>> {
        let (n, d) = validate_shape(grads)?;
        let mut output = vec![0f32; d];
        for_each_slice(grads, |start, slices| {
            let len = slices[0].len();
            output[start..start + len]
                .par_iter_mut()
                .enumerate()
                .for_each_init(
                    || vec![0f32; n],
                    |values, (c, dst)| {
                        for (v, slice) in values.iter_mut().zip(slices) {
                            *v = slice[c];
                        }
                        *dst = order_stat(values, stat);
                    },
                );
            Ok(())
        })?;
        Ok(output)
    }

    fn sq_distances_to(&self, grads: &dyn GradientSource, point: &[f32]) -> Result<Vec<f64>> {
        let n = grads.workers();
        let mut sums = vec![0f64; n];
        for_each_slice(grads, |start, slices| {
            let len = slices[0].len();
            let z = &point[start..start + len];
            sums.par_iter_mut()
                .zip(slices.par_iter())
                .for_each(|(sum, slice)| *sum += slice_sq_distance(slice, z));
            Ok(())
        })?;
        Ok(sums)
    }
}

/// One coordinate's order statistic over `values` (reordered in place).
pub(crate) fn order_stat(values: &mut [f32], stat: CoordinateStat) -> f32 {
    values.sort_by(f32::total_cmp);
    let n = values.len();
    match stat {
        CoordinateStat::Median => median_of_sorted(values) as f32,
        CoordinateStat::TrimmedMean { trim } => {
            let kept = &values[trim..n - trim];
            (kept.iter().map(|&v| v as f64).sum::<f64>() / kept.len() as f64) as f32
        }
        CoordinateStat::MeanAroundMedian { beta } => {
            let median = median_of_sorted(values);
            let mut by_closeness: Vec<f32> = values.to_vec();
            by_closeness.sort_by(|a, b| {
                let da = (*a as f64 - median).abs();
                let db = (*b as f64 - median).abs();
                da.total_cmp(&db).then(a.total_cmp(b))
            });
            let kept = &by_closeness[..beta];
            (kept.iter().map(|&v| v as f64).sum::<f64>() / beta as f64) as f32
        }
    }
}

/// The median in f64, which holds the mean of two f32 values exactly, so
/// that Bulyan's distances to it are not moved by rounding the median to f32.
fn median_of_sorted(values: &[f32]) -> f64 {
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2] as f64
    } else {
        (values[n / 2 - 1] as f64 + values[n / 2] as f64) / 2.0
    }
}
