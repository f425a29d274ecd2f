//! The pipeline stages on a [`GpuContext`].

use std::sync::Arc;

use ndarray::Array2;

use super::kernels::{Kernel, PAIR_SPAN, PAIR_TILE, ROW_SPAN, WORKGROUP_SIZE};
use super::pool::{pooled_size, PooledBuffer};
use super::stream::{stream, SliceWork, SlotBytes};
use super::GpuContext;
use crate::gradients::validate_shape;
use crate::stages::{CoordinateStat, Stages};
use crate::{Error, GradientSource, Result};

const INPUT: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST);
const OUTPUT: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC);
const READBACK: wgpu::BufferUsages =
    wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);
const PARAMS: wgpu::BufferUsages = wgpu::BufferUsages::UNIFORM.union(wgpu::BufferUsages::COPY_DST);
/// Every shader's uniform block is four u32.
const PARAMS_BYTES: u64 = 16;
/// Coordinates read at a time when the host recomputes a distance in f64.
const HOST_CHUNK: usize = 1 << 16;

/// The pipeline stages on a [`GpuContext`].
pub struct GpuStages {
    context: Arc<GpuContext>,
}

impl GpuStages {
    /// Stages running on `context`.
    pub fn new(context: Arc<GpuContext>) -> Self {
        Self { context }
    }

    /// Returns the context these stages run on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.context
    }
}

fn bytes_of(values: usize) -> u64 {
    values as u64 * 4
}

/// Two buffers from the pool, one per slot.
fn pair_of<'a>(
    context: &'a GpuContext,
    label: &'static str,
    usage: wgpu::BufferUsages,
    bytes: u64,
) -> Result<[PooledBuffer<'a>; 2]> {
    let device = &context.device;
    Ok([
        context.pool.take(device, label, usage, bytes)?,
        context.pool.take(device, label, usage, bytes)?,
    ])
}

/// Σ_c (a[c] − b[c])² in f64, for one coordinate slice.
fn f64_sq_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let difference = x as f64 - y as f64;
            difference * difference
        })
        .sum()
}

/// |x_i − x_j|² on the host in f64, for pairs whose f32 sum overflowed.
fn host_pair_sq_distance(grads: &dyn GradientSource, i: usize, j: usize, d: usize) -> Result<f64> {
    let mut a = vec![0f32; HOST_CHUNK.min(d)];
    let mut b = vec![0f32; HOST_CHUNK.min(d)];
    let mut sum = 0.0;
    for start in (0..d).step_by(HOST_CHUNK) {
        let len = HOST_CHUNK.min(d - start);
        grads.read_into(i, start, &mut a[..len])?;
        grads.read_into(j, start, &mut b[..len])?;
        sum += f64_sq_distance(&a[..len], &b[..len]);
    }
    Ok(sum)
}

/// |x_i − z|² on the host in f64, for workers whose f32 sum overflowed.
fn host_point_sq_distance(grads: &dyn GradientSource, i: usize, point: &[f32]) -> Result<f64> {
    let d = point.len();
    let mut a = vec![0f32; HOST_CHUNK.min(d)];
    let mut sum = 0.0;
    for start in (0..d).step_by(HOST_CHUNK) {
        let len = HOST_CHUNK.min(d - start);
        grads.read_into(i, start, &mut a[..len])?;
        sum += f64_sq_distance(&a[..len], &point[start..start + len]);
    }
    Ok(sum)
}

/// Key whose unsigned order is the order of the f64 values, NaN as +Inf.
fn order_key(score: f64) -> u64 {
    let score = if score.is_nan() { f64::INFINITY } else { score };
    let bits = score.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Slice work of [`Stages::sq_distances`]: the non-finite flags and the
/// pairwise partial sums of each slice.
struct PairWork<'a> {
    context: &'a GpuContext,
    n: usize,
    tiles: u32,
    inputs: [PooledBuffer<'a>; 2],
    partials: [PooledBuffer<'a>; 2],
    readbacks: [PooledBuffer<'a>; 2],
    pair_params: [PooledBuffer<'a>; 2],
    row_params: [PooledBuffer<'a>; 2],
    flags: PooledBuffer<'a>,
    /// Sums over the slices so far, for i < j at i · n + j.
    sums: Vec<f64>,
}

impl SliceWork for PairWork<'_> {
    fn input(&self, slot: usize) -> &wgpu::Buffer {
        &self.inputs[slot]
    }

    fn encode(
        &mut self,
        slot: usize,
        encoder: &mut wgpu::CommandEncoder,
        _start: usize,
        len: usize,
    ) -> Result<()> {
        let context = self.context;
        let kernels = &context.kernels;
        let n = self.n;
        let row_spans = context.check_dispatch("non-finite check", len.div_ceil(ROW_SPAN))?;
        let pair_spans = context.check_dispatch("pairwise distances", len.div_ceil(PAIR_SPAN))?;
        context.write(
            &self.row_params[slot],
            &[n as u32, len as u32, row_spans, 0],
        );
        context.write(
            &self.pair_params[slot],
            &[n as u32, len as u32, self.tiles, pair_spans],
        );
        let input = (&*self.inputs[slot], bytes_of(n * len));
        let partial_bytes = bytes_of(pair_spans as usize * n * n);

        let flags_group = context.bind_group(
            &kernels.non_finite.layout,
            &[
                (&self.row_params[slot], PARAMS_BYTES),
                input,
                (&self.flags, bytes_of(n)),
            ],
        );
        context.dispatch(
            encoder,
            &kernels.non_finite,
            &flags_group,
            [row_spans, n as u32, 1],
        );
        let pair_group = context.bind_group(
            &kernels.distances.layout,
            &[
                (&self.pair_params[slot], PARAMS_BYTES),
                input,
                (&self.partials[slot], partial_bytes),
            ],
        );
        context.dispatch(
            encoder,
            &kernels.distances,
            &pair_group,
            [self.tiles, self.tiles, pair_spans],
        );
        encoder.copy_buffer_to_buffer(
            &self.partials[slot],
            0,
            &self.readbacks[slot],
            0,
            partial_bytes,
        );
        Ok(())
    }

    fn finish(&mut self, slot: usize, _start: usize, len: usize) -> Result<()> {
        let n = self.n;
        let spans = len.div_ceil(PAIR_SPAN);
        let sums = &mut self.sums;
        self.context.read_mapped::<f32>(
            &self.readbacks[slot],
            bytes_of(spans * n * n),
            |partials| {
                for span in partials.chunks_exact(n * n) {
                    for i in 0..n {
                        for j in i + 1..n {
                            sums[i * n + j] += span[i * n + j] as f64;
                        }
                    }
                }
            },
        )
    }
}

impl GpuStages {
    /// Reads back a u32 flag per worker and returns the indices of those set.
    fn flagged(&self, flags: &wgpu::Buffer, n: usize) -> Result<Vec<usize>> {
        let context = &*self.context;
        let readback =
            context
                .pool
                .take(&context.device, "flags readback", READBACK, bytes_of(n))?;
        let mut encoder = context.encoder();
        encoder.copy_buffer_to_buffer(flags, 0, &readback, 0, bytes_of(n));
        context.queue.submit([encoder.finish()]);
        let mut set = Vec::new();
        context.read_mapped::<u32>(&readback, bytes_of(n), |values| {
            set = (0..n).filter(|&i| values[i] != 0).collect();
        })?;
        Ok(set)
    }

    fn gpu_sq_distances(&self, grads: &dyn GradientSource) -> Result<Array2<f64>> {
        let context = &*self.context;
        let (n, d) = validate_shape(grads)?;
        let max_groups = context.limits.max_compute_workgroups_per_dimension as usize;
        let tiles = context.check_dispatch("pairwise distances", n.div_ceil(PAIR_TILE as usize))?;
        context.check_dispatch("non-finite check", n)?;
        let slot_bytes = |len: usize| {
            let input = bytes_of(n * len);
            let partial = bytes_of(len.div_ceil(PAIR_SPAN) * n * n);
            SlotBytes {
                total: pooled_size(input)
                    + 2 * pooled_size(partial)
                    + 2 * pooled_size(PARAMS_BYTES),
                largest_binding: input.max(partial),
            }
        };
        let len = context.plan_slice_len(
            "pairwise distances",
            d,
            PAIR_SPAN,
            max_groups * PAIR_SPAN.min(ROW_SPAN),
            2 * pooled_size(bytes_of(n)),
            slot_bytes,
        )?;

        let device = &context.device;
        let partial_bytes = bytes_of(len.div_ceil(PAIR_SPAN) * n * n);
        let flags =
            context
                .pool
                .take(device, "non-finite flags", OUTPUT.union(INPUT), bytes_of(n))?;
        context.write(&flags, &vec![0u32; n]);
        let mut work = PairWork {
            context,
            n,
            tiles,
            inputs: pair_of(context, "gradient slice", INPUT, bytes_of(n * len))?,
            partials: pair_of(context, "distance partials", OUTPUT, partial_bytes)?,
            readbacks: pair_of(context, "distance readback", READBACK, partial_bytes)?,
            pair_params: pair_of(context, "params", PARAMS, PARAMS_BYTES)?,
            row_params: pair_of(context, "params", PARAMS, PARAMS_BYTES)?,
            flags,
            sums: vec![0.0; n * n],
        };
        stream(context, grads, d, len, &mut work)?;
        let non_finite = self.flagged(&work.flags, n)?;

        let mut matrix = Array2::zeros((n, n));
        let mut overflowed = 0;
        for i in 0..n {
            for j in i + 1..n {
                let mut sum = work.sums[i * n + j];
                if !sum.is_finite() && !non_finite.contains(&i) && !non_finite.contains(&j) {
                    // The f32 partials overflowed although both rows are
                    // finite: the f64 value is finite or a true +Inf.
                    sum = host_pair_sq_distance(grads, i, j, d)?;
                    overflowed += 1;
                }
                matrix[[i, j]] = sum;
                matrix[[j, i]] = sum;
            }
        }
        if overflowed > 0 {
            log::debug!("recomputed {overflowed} pair distances in f64 after f32 overflow");
        }
        for &i in &non_finite {
            matrix.row_mut(i).fill(f64::INFINITY);
            matrix.column_mut(i).fill(f64::INFINITY);
        }
        Ok(matrix)
    }
}

/// Slice work of [`Stages::non_finite`]: sets a flag per worker.
struct FlagWork<'a> {
    context: &'a GpuContext,
    n: usize,
    inputs: [PooledBuffer<'a>; 2],
    params: [PooledBuffer<'a>; 2],
    flags: PooledBuffer<'a>,
}

impl SliceWork for FlagWork<'_> {
    fn input(&self, slot: usize) -> &wgpu::Buffer {
        &self.inputs[slot]
    }

    fn encode(
        &mut self,
        slot: usize,
        encoder: &mut wgpu::CommandEncoder,
        _start: usize,
        len: usize,
    ) -> Result<()> {
        let context = self.context;
        let n = self.n;
        let spans = context.check_dispatch("non-finite check", len.div_ceil(ROW_SPAN))?;
        context.write(&self.params[slot], &[n as u32, len as u32, spans, 0]);
        let group = context.bind_group(
            &context.kernels.non_finite.layout,
            &[
                (&self.params[slot], PARAMS_BYTES),
                (&self.inputs[slot], bytes_of(n * len)),
                (&self.flags, bytes_of(n)),
            ],
        );
        context.dispatch(
            encoder,
            &context.kernels.non_finite,
            &group,
            [spans, n as u32, 1],
        );
        Ok(())
    }

    fn finish(&mut self, _slot: usize, _start: usize, _len: usize) -> Result<()> {
        Ok(())
    }
}

/// Slice work of [`Stages::sq_distances_to`]: per-worker partial sums of
/// |x_i − z|² over each slice.
struct PointWork<'a> {
    context: &'a GpuContext,
    n: usize,
    point: &'a [f32],
    inputs: [PooledBuffer<'a>; 2],
    points: [PooledBuffer<'a>; 2],
    partials: [PooledBuffer<'a>; 2],
    readbacks: [PooledBuffer<'a>; 2],
    params: [PooledBuffer<'a>; 2],
    sums: Vec<f64>,
}

impl SliceWork for PointWork<'_> {
    fn input(&self, slot: usize) -> &wgpu::Buffer {
        &self.inputs[slot]
    }

    fn encode(
        &mut self,
        slot: usize,
        encoder: &mut wgpu::CommandEncoder,
        start: usize,
        len: usize,
    ) -> Result<()> {
        let context = self.context;
        let n = self.n;
        let spans = context.check_dispatch("distances to a point", len.div_ceil(ROW_SPAN))?;
        context.write(&self.params[slot], &[n as u32, len as u32, spans, 0]);
        context.write(&self.points[slot], &self.point[start..start + len]);
        let partial_bytes = bytes_of(spans as usize * n);
        let group = context.bind_group(
            &context.kernels.distances_to.layout,
            &[
                (&self.params[slot], PARAMS_BYTES),
                (&self.inputs[slot], bytes_of(n * len)),
                (&self.points[slot], bytes_of(len)),
                (&self.partials[slot], partial_bytes),
            ],
        );
        context.dispatch(
            encoder,
            &context.kernels.distances_to,
            &group,
            [spans, n as u32, 1],
        );
        encoder.copy_buffer_to_buffer(
            &self.partials[slot],
            0,
            &self.readbacks[slot],
            0,
            partial_bytes,
        );
        Ok(())
    }

    fn finish(&mut self, slot: usize, _start: usize, len: usize) -> Result<()> {
        let n = self.n;
        let spans = len.div_ceil(ROW_SPAN);
        let sums = &mut self.sums;
        self.context
            .read_mapped::<f32>(&self.readbacks[slot], bytes_of(spans * n), |partials| {
                for span in partials.chunks_exact(n) {
                    for (sum, &partial) in sums.iter_mut().zip(span) {
                        *sum += partial as f64;
                    }
                }
            })
    }
}

/// Slice work of [`Stages::weighted_sums`]: every output's slice.
struct CombineWork<'a> {
    context: &'a GpuContext,
    n: usize,
    outputs: Vec<Vec<f32>>,
    weights: PooledBuffer<'a>,
    inputs: [PooledBuffer<'a>; 2],
    results: [PooledBuffer<'a>; 2],
    readbacks: [PooledBuffer<'a>; 2],
    params: [PooledBuffer<'a>; 2],
}

impl SliceWork for CombineWork<'_> {
    fn input(&self, slot: usize) -> &wgpu::Buffer {
        &self.inputs[slot]
    }

    fn encode(
        &mut self,
        slot: usize,
        encoder: &mut wgpu::CommandEncoder,
        _start: usize,
        len: usize,
    ) -> Result<()> {
        let context = self.context;
        let n = self.n;
        let outputs = self.outputs.len();
        context.write(
            &self.params[slot],
            &[n as u32, len as u32, outputs as u32, 0],
        );
        let result_bytes = bytes_of(outputs * len);
        let group = context.bind_group(
            &context.kernels.combine.layout,
            &[
                (&self.params[slot], PARAMS_BYTES),
                (&self.inputs[slot], bytes_of(n * len)),
                (&self.weights, bytes_of(outputs * n)),
                (&self.results[slot], result_bytes),
            ],
        );
        let groups = context.grid("weighted sums", len.div_ceil(WORKGROUP_SIZE as usize))?;
        context.dispatch(encoder, &context.kernels.combine, &group, groups);
        encoder.copy_buffer_to_buffer(
            &self.results[slot],
            0,
            &self.readbacks[slot],
            0,
            result_bytes,
        );
        Ok(())
    }

    fn finish(&mut self, slot: usize, start: usize, len: usize) -> Result<()> {
        let count = self.outputs.len();
        let outputs = &mut self.outputs;
        self.context
            .read_mapped::<f32>(&self.readbacks[slot], bytes_of(count * len), |values| {
                for (output, values) in outputs.iter_mut().zip(values.chunks_exact(len)) {
                    output[start..start + len].copy_from_slice(values);
                }
            })
    }
}

/// Slice work of [`Stages::coordinate_stat`]: one statistic per coordinate.
struct StatWork<'a> {
    context: &'a GpuContext,
    n: usize,
    stat: CoordinateStat,
    kernel: &'a Kernel,
    /// `kind` and `count` of the shader's parameters.
    params_tail: [u32; 2],
    output: Vec<f32>,
    inputs: [PooledBuffer<'a>; 2],
    results: [PooledBuffer<'a>; 2],
    readbacks: [PooledBuffer<'a>; 2],
    params: [PooledBuffer<'a>; 2],
}

impl SliceWork for StatWork<'_> {
    fn input(&self, slot: usize) -> &wgpu::Buffer {
        &self.inputs[slot]
    }

    fn encode(
        &mut self,
        slot: usize,
        encoder: &mut wgpu::CommandEncoder,
        _start: usize,
        len: usize,
    ) -> Result<()> {
        let context = self.context;
        let n = self.n;
        let [kind, count] = self.params_tail;
        context.write(&self.params[slot], &[n as u32, len as u32, kind, count]);
        let result_bytes = bytes_of(stat_words(self.stat) * len);
        let group = context.bind_group(
            &self.kernel.layout,
            &[
                (&self.params[slot], PARAMS_BYTES),
                (&self.inputs[slot], bytes_of(n * len)),
                (&self.results[slot], result_bytes),
            ],
        );
        let groups = context.grid(self.kernel.name, len.div_ceil(WORKGROUP_SIZE as usize))?;
        context.dispatch(encoder, self.kernel, &group, groups);
        encoder.copy_buffer_to_buffer(
            &self.results[slot],
            0,
            &self.readbacks[slot],
            0,
            result_bytes,
        );
        Ok(())
    }

    fn finish(&mut self, slot: usize, start: usize, len: usize) -> Result<()> {
        let output = &mut self.output[start..start + len];
        let bytes = bytes_of(stat_words(self.stat) * len);
        match self.stat {
            CoordinateStat::MeanAroundMedian { beta } => {
                self.context
                    .read_mapped::<[u32; 4]>(&self.readbacks[slot], bytes, |sums| {
                        for (out, sum) in output.iter_mut().zip(sums) {
                            *out = (wide_sum(*sum) / beta as f64) as f32;
                        }
                    })
            }
            _ => self
                .context
                .read_mapped::<f32>(&self.readbacks[slot], bytes, |values| {
                    output.copy_from_slice(&values[..len]);
                }),
        }
    }
}

/// 32-bit words of `order_stats.wgsl` or `mean_around_median.wgsl` output
/// per coordinate.
fn stat_words(stat: CoordinateStat) -> usize {
    match stat {
        CoordinateStat::MeanAroundMedian { .. } => 4,
        _ => 1,
    }
}

/// Converts a sum written by `mean_around_median.wgsl` to f64: the top three
/// 32-bit words of its magnitude in units of 2^-150, after a word holding the
/// sign and the index of the top word. The words it drops weigh under 2^-64
/// of the sum.
fn wide_sum([head, a, b, c]: [u32; 4]) -> f64 {
    let top = (head & 0x7fff_ffff) as i32;
    let magnitude = (a as f64 * 2f64.powi(64) + b as f64 * 2f64.powi(32) + c as f64)
        * 2f64.powi(32 * (top - 2) - 150);
    if head >> 31 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

impl GpuStages {
    fn gpu_coordinate_stat(
        &self,
        grads: &dyn GradientSource,
        stat: CoordinateStat,
    ) -> Result<Vec<f32>> {
        let context = &*self.context;
        let (n, d) = validate_shape(grads)?;
        let (kernel, params_tail) = match stat {
            CoordinateStat::Median => (&context.kernels.order_stats, [0, 0]),
            CoordinateStat::TrimmedMean { trim } => (
                &context.kernels.order_stats,
                [1, u32::try_from(trim).unwrap_or(u32::MAX)],
            ),
            CoordinateStat::MeanAroundMedian { beta } if beta == 0 || beta > n => {
                return Err(Error::InvalidParameter {
                    rule: "bulyan",
                    name: "beta",
                    value: beta.to_string(),
                    fix: format!("average between 1 and {n} values around the median"),
                });
            }
            CoordinateStat::MeanAroundMedian { beta } => (
                &context.kernels.mean_around_median,
                [0, u32::try_from(beta).unwrap_or(u32::MAX)],
            ),
        };
        let words = stat_words(stat);
        let max_groups = context.limits.max_compute_workgroups_per_dimension as usize;
        let len = context.plan_slice_len(
            "order statistics",
            d,
            WORKGROUP_SIZE as usize,
            max_groups
                .saturating_mul(max_groups)
                .saturating_mul(WORKGROUP_SIZE as usize),
            0,
            |len| {
                let input = bytes_of(n * len);
                SlotBytes {
                    total: pooled_size(input)
                        + 2 * pooled_size(bytes_of(words * len))
                        + pooled_size(PARAMS_BYTES),
                    largest_binding: input,
                }
            },
        )?;

        let mut work = StatWork {
            context,
            n,
            stat,
            kernel,
            params_tail,
            output: crate::vectors::zeros(d),
            inputs: pair_of(context, "gradient slice", INPUT, bytes_of(n * len))?,
            results: pair_of(context, "order statistics", OUTPUT, bytes_of(words * len))?,
            readbacks: pair_of(
                context,
                "order statistics readback",
                READBACK,
                bytes_of(words * len),
            )?,
            params: pair_of(context, "params", PARAMS, PARAMS_BYTES)?,
        };
        stream(context, grads, d, len, &mut work)?;
        Ok(work.output)
    }

    fn gpu_non_finite(&self, grads: &dyn GradientSource) -> Result<Vec<usize>> {
        let context = &*self.context;
        let (n, d) = validate_shape(grads)?;
        context.check_dispatch("non-finite check", n)?;
        let max_groups = context.limits.max_compute_workgroups_per_dimension as usize;
        let len = context.plan_slice_len(
            "non-finite check",
            d,
            ROW_SPAN,
            max_groups * ROW_SPAN,
            2 * pooled_size(bytes_of(n)),
            |len| SlotBytes {
                total: pooled_size(bytes_of(n * len)) + pooled_size(PARAMS_BYTES),
                largest_binding: bytes_of(n * len),
            },
        )?;
        let flags = context.pool.take(
            &context.device,
            "non-finite flags",
            OUTPUT.union(INPUT),
            bytes_of(n),
        )?;
        context.write(&flags, &vec![0u32; n]);
        let mut work = FlagWork {
            context,
            n,
            inputs: pair_of(context, "gradient slice", INPUT, bytes_of(n * len))?,
            params: pair_of(context, "params", PARAMS, PARAMS_BYTES)?,
            flags,
        };
        stream(context, grads, d, len, &mut work)?;
        self.flagged(&work.flags, n)
    }

    fn gpu_sq_distances_to(&self, grads: &dyn GradientSource, point: &[f32]) -> Result<Vec<f64>> {
        let context = &*self.context;
        let (n, d) = validate_shape(grads)?;
        if point.len() != d {
            return Err(Error::ShapeMismatch {
                worker: n,
                expected: d,
                got: point.len(),
            });
        }
        context.check_dispatch("distances to a point", n)?;
        let max_groups = context.limits.max_compute_workgroups_per_dimension as usize;
        let len = context.plan_slice_len(
            "distances to a point",
            d,
            ROW_SPAN,
            max_groups * ROW_SPAN,
            0,
            |len| {
                let input = bytes_of(n * len);
                let partial = bytes_of(len.div_ceil(ROW_SPAN) * n);
                SlotBytes {
                    total: pooled_size(input)
                        + pooled_size(bytes_of(len))
                        + 2 * pooled_size(partial)
                        + pooled_size(PARAMS_BYTES),
                    largest_binding: input.max(partial),
                }
            },
        )?;
        let partial_bytes = bytes_of(len.div_ceil(ROW_SPAN) * n);
        let mut work = PointWork {
            context,
            n,
            point,
            inputs: pair_of(context, "gradient slice", INPUT, bytes_of(n * len))?,
            points: pair_of(context, "point slice", INPUT, bytes_of(len))?,
            partials: pair_of(context, "point partials", OUTPUT, partial_bytes)?,
            readbacks: pair_of(context, "point readback", READBACK, partial_bytes)?,
            params: pair_of(context, "params", PARAMS, PARAMS_BYTES)?,
            sums: vec![0.0; n],
        };
        stream(context, grads, d, len, &mut work)?;
        let mut sums = work.sums;
        for (i, sum) in sums.iter_mut().enumerate() {
            if !sum.is_finite() {
                // An f32 overflow or a non-finite row. The f64 sum is the
                // correct value in both cases.
                *sum = host_point_sq_distance(grads, i, point)?;
            }
        }
        Ok(sums)
    }

    fn gpu_weighted_sums(
        &self,
        grads: &dyn GradientSource,
        weights: &Array2<f64>,
    ) -> Result<Vec<Vec<f32>>> {
        let context = &*self.context;
        let (n, d) = validate_shape(grads)?;
        let outputs = weights.nrows();
        if weights.ncols() != n {
            return Err(Error::Gpu {
                message: format!(
                    "the weight matrix has {} columns for {n} workers; pass one weight per worker",
                    weights.ncols()
                ),
            });
        }
        if outputs == 0 {
            return Ok(Vec::new());
        }
        let max_groups = context.limits.max_compute_workgroups_per_dimension as usize;
        let weight_bytes = bytes_of(outputs * n);
        if weight_bytes > context.max_binding() {
            return Err(Error::MemoryBudget {
                what: format!("the {outputs}×{n} weight matrix"),
                needed: weight_bytes,
                budget: context.max_binding(),
            });
        }
        let len = context.plan_slice_len(
            "weighted sums",
            d,
            WORKGROUP_SIZE as usize,
            max_groups
                .saturating_mul(max_groups)
                .saturating_mul(WORKGROUP_SIZE as usize),
            pooled_size(weight_bytes),
            |len| {
                let input = bytes_of(n * len);
                let result = bytes_of(outputs * len);
                SlotBytes {
                    total: pooled_size(input) + 2 * pooled_size(result) + pooled_size(PARAMS_BYTES),
                    largest_binding: input.max(result),
                }
            },
        )?;
        let weights_f32: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
        let weight_buffer = context
            .pool
            .take(&context.device, "weights", INPUT, weight_bytes)?;
        context.write(&weight_buffer, &weights_f32);
        let result_bytes = bytes_of(outputs * len);
        let mut work = CombineWork {
            context,
            n,
            outputs: (0..outputs).map(|_| crate::vectors::zeros(d)).collect(),
            weights: weight_buffer,
            inputs: pair_of(context, "gradient slice", INPUT, bytes_of(n * len))?,
            results: pair_of(context, "weighted sums", OUTPUT, result_bytes)?,
            readbacks: pair_of(context, "weighted sums readback", READBACK, result_bytes)?,
            params: pair_of(context, "params", PARAMS, PARAMS_BYTES)?,
        };
        stream(context, grads, d, len, &mut work)?;
        Ok(work.outputs)
    }

    /// Runs `krum_scores.wgsl`. Returns `None` when the f32 matrix does not
    /// fit one binding or the memory budget.
    fn gpu_scores(
        &self,
        sq_distances: &Array2<f64>,
        neighbours: usize,
    ) -> Result<Option<Vec<f64>>> {
        let context = &*self.context;
        let n = sq_distances.nrows();
        let matrix_bytes = bytes_of(n * n);
        let needed =
            pooled_size(matrix_bytes) + 2 * pooled_size(bytes_of(n)) + pooled_size(PARAMS_BYTES);
        if matrix_bytes > context.max_binding() || needed > context.pool.budget() {
            return Ok(None);
        }
        let groups = context.check_dispatch("Krum scores", n)?;
        let device = &context.device;
        let params = context.pool.take(device, "params", PARAMS, PARAMS_BYTES)?;
        let matrix = context
            .pool
            .take(device, "distance matrix", INPUT, matrix_bytes)?;
        let scores = context.pool.take(device, "scores", OUTPUT, bytes_of(n))?;
        let readback = context
            .pool
            .take(device, "scores readback", READBACK, bytes_of(n))?;
        let values: Vec<f32> = sq_distances.iter().map(|&v| v as f32).collect();
        let neighbours = u32::try_from(neighbours).unwrap_or(u32::MAX);
        context.write(&params, &[n as u32, neighbours, 0, 0]);
        context.write(&matrix, &values);
        let group = context.bind_group(
            &context.kernels.krum_scores.layout,
            &[
                (&params, PARAMS_BYTES),
                (&matrix, matrix_bytes),
                (&scores, bytes_of(n)),
            ],
        );
        let mut encoder = context.encoder();
        context.dispatch(
            &mut encoder,
            &context.kernels.krum_scores,
            &group,
            [groups, 1, 1],
        );
        encoder.copy_buffer_to_buffer(&scores, 0, &readback, 0, bytes_of(n));
        context.queue.submit([encoder.finish()]);
        let mut result = Vec::new();
        context.read_mapped::<f32>(&readback, bytes_of(n), |values| {
            result = values[..n].iter().map(|&v| v as f64).collect();
        })?;
        Ok(Some(result))
    }

    fn gpu_select_lowest(&self, scores: &[f64], m: usize) -> Result<Vec<usize>> {
        let context = &*self.context;
        let n = scores.len();
        let m = m.min(n);
        if m == 0 {
            return Ok(Vec::new());
        }
        let keys: Vec<u32> = scores
            .iter()
            .flat_map(|&s| {
                let key = order_key(s);
                [(key >> 32) as u32, key as u32]
            })
            .collect();
        let device = &context.device;
        let key_bytes = bytes_of(2 * n);
        let params = context.pool.take(device, "params", PARAMS, PARAMS_BYTES)?;
        let key_buffer = context.pool.take(device, "score keys", INPUT, key_bytes)?;
        let selected = context.pool.take(device, "selected", OUTPUT, bytes_of(m))?;
        let readback = context
            .pool
            .take(device, "selected readback", READBACK, bytes_of(m))?;
        context.write(&params, &[n as u32, m as u32, 0, 0]);
        context.write(&key_buffer, &keys);
        let group = context.bind_group(
            &context.kernels.select.layout,
            &[
                (&params, PARAMS_BYTES),
                (&key_buffer, key_bytes),
                (&selected, bytes_of(m)),
            ],
        );
        let groups = context.grid("selection", n.div_ceil(WORKGROUP_SIZE as usize))?;
        let mut encoder = context.encoder();
        context.dispatch(&mut encoder, &context.kernels.select, &group, groups);
        encoder.copy_buffer_to_buffer(&selected, 0, &readback, 0, bytes_of(m));
        context.queue.submit([encoder.finish()]);
        let mut chosen = Vec::new();
        context.read_mapped::<u32>(&readback, bytes_of(m), |values| {
            chosen = values[..m].iter().map(|&i| i as usize).collect();
        })?;
        Ok(chosen)
    }
}

impl Stages for GpuStages {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn adapter(&self) -> Option<String> {
        Some(self.context.adapter_name().to_string())
    }

    fn non_finite(&self, grads: &dyn GradientSource) -> Result<Vec<usize>> {
        self.context.scoped(|| self.gpu_non_finite(grads))
    }

    fn sq_distances(&self, grads: &dyn GradientSource) -> Result<Array2<f64>> {
        self.context.scoped(|| self.gpu_sq_distances(grads))
    }

    fn scores(&self, sq_distances: &Array2<f64>, neighbours: usize) -> Result<Vec<f64>> {
        let n = sq_distances.nrows();
        let gpu = self
            .context
            .scoped(|| self.gpu_scores(sq_distances, neighbours))?;
        let Some(scores) = gpu else {
            log::debug!(
                "the {n}×{n} distance matrix exceeds one GPU binding or the memory budget; \
                 scoring on the host"
            );
            return Ok(crate::cpu::krum_scores(sq_distances, neighbours));
        };
        // A finite worker (diagonal 0) whose f32 score is not finite may have
        // overflowed f32 where f64 does not, so the host scores in f64.
        let overflowed = (0..n).any(|i| sq_distances[[i, i]] == 0.0 && !scores[i].is_finite());
        if overflowed {
            log::debug!("a Krum score overflowed f32; scoring on the host in f64");
            return Ok(crate::cpu::krum_scores(sq_distances, neighbours));
        }
        Ok(scores)
    }

    fn select_lowest(&self, scores: &[f64], m: usize) -> Result<Vec<usize>> {
        self.context.scoped(|| self.gpu_select_lowest(scores, m))
    }

    fn weighted_sums(
        &self,
        grads: &dyn GradientSource,
        weights: &Array2<f64>,
    ) -> Result<Vec<Vec<f32>>> {
        self.context
            .scoped(|| self.gpu_weighted_sums(grads, weights))
    }

    fn coordinate_stat(
        &self,
        grads: &dyn GradientSource,
        stat: CoordinateStat,
    ) -> Result<Vec<f32>> {
        self.context
            .scoped(|| self.gpu_coordinate_stat(grads, stat))
    }

    fn sq_distances_to(&self, grads: &dyn GradientSource, point: &[f32]) -> Result<Vec<f64>> {
        self.context
            .scoped(|| self.gpu_sq_distances_to(grads, point))
    }
}
