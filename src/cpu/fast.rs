//! The fast CPU path: multithreaded with rayon, cache-blocked, with SIMD f32
//! inner loops accumulated in f64.
//!
//! The coordinates are cut into blocks small enough that one block of all n
//! rows stays in the L2 cache. Every pair of workers is computed on a block
//! while it is there, so each gradient is read from memory once per call. Blocks are spread over rayon's thread pool, each thread summing its
//! own n×n partial matrix in f64, and the partial matrices are added at the
//! end. Within a block the kernels in [`kernels`] use 4×4 tiles of worker
//! pairs and f32 lanes that are summed in f64 every
//! [`CHUNK`](kernels::CHUNK) coordinates.
//!
//! Accuracy: the f32 error of one chunk is bounded by the chunk length, not
//! by d, and the chunk sums are added in f64, whose error is about
//! (d / CHUNK) · 2⁻⁵³ relative (1e-10 for d = 10⁹). A block whose f32 sum
//! overflows on finite input is recomputed in f64.

mod kernels;

use std::ops::Range;

use ndarray::Array2;
use rayon::prelude::*;

pub use kernels::SimdLevel;

use crate::gradients::validate_shape;
use crate::stages::{CoordinateStat, Stages};
use crate::{Error, GradientSource, Result};

/// Bytes of one block across all n rows. 512 KiB fits in the L2 cache of
/// recent server cores (1 MiB on AMD Zen 4 and Arm Neoverse N1, 2 MiB on
/// Intel Sapphire Rapids) with room for the next block's prefetch. For
/// n > 64 the minimum block of one chunk is larger than this.
const BLOCK_BYTES: usize = 512 * 1024;

/// Upper bound on the coordinates of one block, so that small n still gives
/// every thread several blocks.
const MAX_BLOCK: usize = 1 << 16;

/// Coordinates of the f64 accumulator of the weighted sums, per output.
const SUM_CHUNK: usize = 1024;

/// The fast CPU implementation of the pipeline stages.
#[derive(Clone, Debug)]
pub struct CpuStages {
    simd: SimdLevel,
}

impl Default for CpuStages {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuStages {
    /// Creates a CPU backend on rayon's global thread pool with the best SIMD
    /// level this CPU supports.
    pub fn new() -> Self {
        Self {
            simd: SimdLevel::detect(),
        }
    }

    /// Creates a CPU backend whose kernels use `simd`, or returns `None` if
    /// this CPU lacks it. Meant for tests and benchmarks that compare levels.
    pub fn with_simd(simd: SimdLevel) -> Option<Self> {
        simd.is_supported().then_some(Self { simd })
    }

    /// Returns the SIMD level the kernels run with.
    pub fn simd(&self) -> SimdLevel {
        self.simd
    }
}

/// Coordinates per block for `n` workers: a multiple of the kernel chunk
/// such that the block of all n rows fits in [`BLOCK_BYTES`].
fn block_len(n: usize) -> usize {
    let fit = BLOCK_BYTES / (n.max(1) * std::mem::size_of::<f32>());
    (fit / kernels::CHUNK * kernels::CHUNK).clamp(kernels::CHUNK, MAX_BLOCK)
}

/// A source cut into coordinate blocks. Borrowed rows are used in place;
/// rows the source cannot lend are copied block by block into a per-thread
/// scratch buffer.
struct Blocks<'a> {
    grads: &'a dyn GradientSource,
    rows: Vec<Option<&'a [f32]>>,
    d: usize,
    len: usize,
}

impl<'a> Blocks<'a> {
    fn new(grads: &'a dyn GradientSource) -> Result<Self> {
        let (n, d) = validate_shape(grads)?;
        Ok(Self {
            grads,
            // A lent row of the wrong length is read through read_into
            // instead, so that slicing it cannot panic.
            rows: (0..n)
                .map(|i| grads.row(i).filter(|row| row.len() == d))
                .collect(),
            d,
            len: block_len(n),
        })
    }

    fn count(&self) -> usize {
        self.d.div_ceil(self.len)
    }

    fn range(&self, block: usize) -> Range<usize> {
        let start = block * self.len;
        start..(start + self.len).min(self.d)
    }

    /// Returns every worker's coordinates of `block`.
    fn slices<'s>(&'s self, block: usize, scratch: &'s mut Vec<f32>) -> Result<Vec<&'s [f32]>> {
        let range = self.range(block);
        let len = range.len();
        let copied = self.rows.iter().filter(|row| row.is_none()).count();
        scratch.resize(copied * len, 0.0);
        let mut buffers = scratch.chunks_exact_mut(len.max(1));
        let mut owned = Vec::with_capacity(copied);
        for (worker, row) in self.rows.iter().enumerate() {
            if row.is_none() {
                let buffer = buffers.next().expect("one scratch buffer per copied row");
                self.grads.read_into(worker, range.start, buffer)?;
                owned.push(&*buffer);
            }
        }
        let mut owned = owned.into_iter();
        Ok(self
            .rows
            .iter()
            .map(|row| match row {
                Some(row) => &row[range.clone()],
                None => owned.next().expect("one copied slice per unborrowed row"),
            })
            .collect())
    }

    /// Folds every block into a per-thread state with `visit(state, range,
    /// slices)` and merges the states with `merge`.
    fn fold<T: Send>(
        &self,
        init: impl Fn() -> T + Sync + Send,
        visit: impl Fn(&mut T, Range<usize>, &[&[f32]]) -> Result<()> + Sync + Send,
        merge: impl Fn(T, T) -> T + Sync + Send,
    ) -> Result<T> {
        (0..self.count())
            .into_par_iter()
            .try_fold(
                || (init(), Vec::new()),
                |(mut state, mut scratch), block| {
                    let slices = self.slices(block, &mut scratch)?;
                    visit(&mut state, self.range(block), &slices)?;
                    Ok((state, scratch))
                },
            )
            .map(|folded: Result<(T, Vec<f32>)>| folded.map(|(state, _)| state))
            .try_reduce(&init, |a, b| Ok(merge(a, b)))
    }
}

/// Σ values with the best SIMD level of this CPU: the inner loop of the
/// streaming read benchmark.
pub(crate) fn sum(values: &[f32]) -> f64 {
    kernels::sum(SimdLevel::detect(), values)
}

/// Block sums below this may have lost squares that underflowed f32: a
/// block of at most 2^16 squares below f32's smallest normal (1.2e-38) loses
/// at most 7.7e-34, a relative 1e-6 of this bound.
const UNDERFLOW_GUARD: f64 = 1e-27;

/// Whether the f32 block sum of squared differences of `x` and `y` must be
/// recomputed in f64: it overflowed, or it is so small that squares may have
/// underflowed. Identical slices are exactly 0 and need no recomputation.
fn needs_f64(sum: f64, x: &[f32], y: &[f32]) -> bool {
    !sum.is_finite() || (sum < UNDERFLOW_GUARD && x != y)
}

/// Σ_c (x[c] − y[c])² computed in f64, for the blocks where the f32 kernel
/// overflowed or underflowed on finite input.
fn sq_distance_f64(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| {
            let diff = a as f64 - b as f64;
            diff * diff
        })
        .sum()
}

/// Per-thread state of the distance pass.
struct PairSums {
    /// Upper triangle (i < j) of the n×n sums, row-major.
    sums: Vec<f64>,
    /// Whether each worker was finite in every block seen.
    finite: Vec<bool>,
    /// The current block's sums, before the overflow check.
    block: Vec<f64>,
    /// Whether each worker is finite in the current block.
    block_finite: Vec<bool>,
}

impl PairSums {
    fn new(n: usize) -> Self {
        Self {
            sums: vec![0.0; n * n],
            finite: vec![true; n],
            block: vec![0.0; n * n],
            block_finite: vec![true; n],
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        for (a, b) in self.finite.iter_mut().zip(&other.finite) {
            *a &= b;
        }
        self
    }
}

fn invalid_stat(rule: &'static str, name: &'static str, value: usize, fix: String) -> Error {
    Error::InvalidParameter {
        rule,
        name,
        value: value.to_string(),
        fix,
    }
}

/// Checks that `stat` is defined for `n` values.
fn check_stat(stat: CoordinateStat, n: usize) -> Result<()> {
    match stat {
        CoordinateStat::Median => Ok(()),
        CoordinateStat::TrimmedMean { trim } if 2 * trim >= n => Err(invalid_stat(
            "trimmed-mean",
            "f",
            trim,
            format!(
                "trimming f values at each end of {n} needs n > 2f, so choose f < {}",
                n.div_ceil(2)
            ),
        )),
        CoordinateStat::MeanAroundMedian { beta } if beta == 0 || beta > n => Err(invalid_stat(
            "bulyan",
            "beta",
            beta,
            format!("average between 1 and {n} values around the median"),
        )),
        _ => Ok(()),
    }
}

/// Maps a value to an integer whose order is f32's total order
/// (`f32::total_cmp`). The magnitude bits of negative values are flipped so
/// that they sort below.
fn order_key(value: f32) -> i32 {
    let bits = value.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// Inverts [`order_key`] (the transform is its own inverse).
fn from_order_key(key: i32) -> f32 {
    f32::from_bits((key ^ (((key >> 31) as u32) >> 1) as i32) as u32)
}

/// One coordinate's order statistic over the [`order_key`]s of its values,
/// by selection rather than sorting, with the semantics of [`order_stat`].
/// `values` is scratch space of the same length.
///
/// TODO: for a few dozen workers std's selection costs over 100 ns per
/// coordinate because its branches mispredict. A sorting network would bring
/// the median closer to the memory bound.
fn select_stat(keys: &mut [i32], values: &mut [f32], stat: CoordinateStat) -> f32 {
    let n = keys.len();
    match stat {
        CoordinateStat::Median => {
            let (lower, middle, _) = keys.select_nth_unstable(n / 2);
            let upper = from_order_key(*middle);
            if n % 2 == 1 {
                return upper;
            }
            let below = lower.iter().copied().max().map_or(upper, from_order_key);
            ((below as f64 + upper as f64) / 2.0) as f32
        }
        CoordinateStat::TrimmedMean { trim } => {
            let kept_len = n - 2 * trim;
            let rest = if trim > 0 {
                keys.select_nth_unstable(trim - 1).2
            } else {
                keys
            };
            if kept_len < rest.len() {
                rest.select_nth_unstable(kept_len);
            }
            let sum: f64 = rest[..kept_len]
                .iter()
                .map(|&k| from_order_key(k) as f64)
                .sum();
            (sum / kept_len as f64) as f32
        }
        CoordinateStat::MeanAroundMedian { .. } => {
            for (v, &k) in values.iter_mut().zip(keys.iter()) {
                *v = from_order_key(k);
            }
            order_stat(values, stat)
        }
    }
}

fn check_length(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(Error::InvalidParameter {
        rule: "cpu",
        name: what,
        value: format!("of length {got}"),
        fix: format!(
            "pass {expected} values, one per {}",
            if what == "point" {
                "coordinate"
            } else {
                "worker"
            }
        ),
    })
}

impl CpuStages {
    /// For each row w of `weights`, Σ_i w_i x_i into the output of the same
    /// index, keeping the memory of outputs that already contain d values.
    fn write_weighted_sums(
        &self,
        grads: &dyn GradientSource,
        weights: &Array2<f64>,
        outputs: &mut [Vec<f32>],
    ) -> Result<()> {
        let blocks = Blocks::new(grads)?;
        let (n, d) = (grads.workers(), blocks.d);
        check_length("weights", weights.ncols(), n)?;
        let weight_rows: Vec<Vec<f64>> = weights.rows().into_iter().map(|w| w.to_vec()).collect();
        for output in outputs.iter_mut() {
            crate::vectors::reuse(output, d);
        }
        // Each block owns its range of every output.
        let mut per_block: Vec<Vec<&mut [f32]>> = (0..blocks.count()).map(|_| Vec::new()).collect();
        for output in outputs.iter_mut() {
            for (block, range) in output.chunks_mut(blocks.len).enumerate() {
                per_block[block].push(range);
            }
        }
        per_block.into_par_iter().enumerate().try_for_each_init(
            Vec::new,
            |scratch, (block, mut targets)| -> Result<()> {
                let slices = blocks.slices(block, scratch)?;
                let mut sub_slices = Vec::with_capacity(n);
                let len = slices[0].len();
                let mut acc = [0f64; SUM_CHUNK];
                for (target, w) in targets.iter_mut().zip(&weight_rows) {
                    let mut start = 0;
                    while start < len {
                        let end = (start + SUM_CHUNK).min(len);
                        let acc = &mut acc[..end - start];
                        acc.fill(0.0);
                        sub_slices.clear();
                        sub_slices.extend(slices.iter().map(|s| &s[start..end]));
                        kernels::weighted(self.simd, &sub_slices, w, acc);
                        for (dst, &a) in target[start..end].iter_mut().zip(acc.iter()) {
                            *dst = a as f32;
                        }
                        start = end;
                    }
                }
                Ok(())
            },
        )
    }
}

impl Stages for CpuStages {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn adapter(&self) -> Option<String> {
        None
    }

    fn non_finite(&self, grads: &dyn GradientSource) -> Result<Vec<usize>> {
        let blocks = Blocks::new(grads)?;
        let n = grads.workers();
        let finite = blocks.fold(
            || vec![true; n],
            |finite, _, slices| {
                for (flag, slice) in finite.iter_mut().zip(slices) {
                    *flag = *flag && kernels::finite(self.simd, slice);
                }
                Ok(())
            },
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x &= y;
                }
                a
            },
        )?;
        Ok((0..n).filter(|&i| !finite[i]).collect())
    }

    fn sq_distances(&self, grads: &dyn GradientSource) -> Result<Array2<f64>> {
        let blocks = Blocks::new(grads)?;
        let n = grads.workers();
        let state = blocks.fold(
            || PairSums::new(n),
            |state, _, slices| {
                kernels::pair_sums(self.simd, slices, &mut state.block);
                // A NaN or ±Inf coordinate makes every sum of its row
                // non-finite, so only the rows of non-finite sums (and a lone
                // worker, which has no pairs) need the explicit check, and
                // the common case reads the block once.
                let finite = &mut state.block_finite;
                finite.fill(true);
                for i in 0..n {
                    let suspect = n == 1
                        || (0..n)
                            .any(|j| j != i && !state.block[i.min(j) * n + i.max(j)].is_finite());
                    if suspect {
                        finite[i] = kernels::finite(self.simd, slices[i]);
                    }
                }
                for i in 0..n {
                    state.finite[i] &= finite[i];
                    for j in i + 1..n {
                        let mut sum = std::mem::take(&mut state.block[i * n + j]);
                        // NOTE: differences or squares beyond f32's range
                        // (|x_i − x_j| > 1.8e19) overflow in the f32 kernel, and
                        // squares below it (|x_i − x_j| < 1e-19) underflow, so
                        // such a block is recomputed in f64.
                        if finite[i] && finite[j] && needs_f64(sum, slices[i], slices[j]) {
                            sum = sq_distance_f64(slices[i], slices[j]);
                        }
                        state.sums[i * n + j] += sum;
                    }
                }
                Ok(())
            },
            PairSums::merge,
        )?;
        let mut matrix = Array2::zeros((n, n));
        for i in 0..n {
            for j in i + 1..n {
                let sum = state.sums[i * n + j];
                matrix[[i, j]] = sum;
                matrix[[j, i]] = sum;
            }
        }
        for i in (0..n).filter(|&i| !state.finite[i]) {
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
        let mut outputs = vec![Vec::new(); weights.nrows()];
        self.write_weighted_sums(grads, weights, &mut outputs)?;
        Ok(outputs)
    }

    fn weighted_sum_into(
        &self,
        grads: &dyn GradientSource,
        weights: &[f64],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let weights = crate::stages::one_row(weights);
        self.write_weighted_sums(grads, &weights, std::slice::from_mut(out))
    }

    fn coordinate_stat(
        &self,
        grads: &dyn GradientSource,
        stat: CoordinateStat,
    ) -> Result<Vec<f32>> {
        let mut output = Vec::new();
        self.coordinate_stat_into(grads, stat, &mut output)?;
        Ok(output)
    }

    fn coordinate_stat_into(
        &self,
        grads: &dyn GradientSource,
        stat: CoordinateStat,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let blocks = Blocks::new(grads)?;
        let n = grads.workers();
        check_stat(stat, n)?;
        crate::vectors::reuse(out, blocks.d);
        out.par_chunks_mut(blocks.len)
            .enumerate()
            .try_for_each_init(
                || (Vec::new(), Vec::new(), vec![0f32; n]),
                |(scratch, columns, values), (block, target)| -> Result<()> {
                    let slices = blocks.slices(block, scratch)?;
                    // Transposed to one contiguous column of n keys per
                    // coordinate, reading each row sequentially.
                    columns.resize(target.len() * n, 0i32);
                    for (i, slice) in slices.iter().enumerate() {
                        for (c, &v) in slice.iter().enumerate() {
                            columns[c * n + i] = order_key(v);
                        }
                    }
                    for (dst, column) in target.iter_mut().zip(columns.chunks_exact_mut(n)) {
                        *dst = select_stat(column, values, stat);
                    }
                    Ok(())
                },
            )
    }

    fn sq_distances_to(&self, grads: &dyn GradientSource, point: &[f32]) -> Result<Vec<f64>> {
        let blocks = Blocks::new(grads)?;
        let n = grads.workers();
        check_length("point", point.len(), blocks.d)?;
        blocks.fold(
            || vec![0f64; n],
            |sums, range, slices| {
                let z = &point[range];
                let mut block = vec![0f64; n];
                kernels::point_sums(self.simd, slices, z, &mut block);
                for ((sum, partial), slice) in sums.iter_mut().zip(block).zip(slices) {
                    // The same f64 recomputation as for pairs.
                    *sum += if needs_f64(partial, slice, z) {
                        sq_distance_f64(slice, z)
                    } else {
                        partial
                    };
                }
                Ok(())
            },
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                a
            },
        )
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

/// The median in f64, which represents the mean of two f32 values exactly, so
/// that Bulyan's distances to it are not moved by rounding the median to f32.
fn median_of_sorted(values: &[f32]) -> f64 {
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2] as f64
    } else {
        (values[n / 2 - 1] as f64 + values[n / 2] as f64) / 2.0
    }
}
