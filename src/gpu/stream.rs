//! Streaming the gradients through the GPU in coordinate slices, with two
//! slots so that the upload of one slice overlaps the compute of the other.

use std::sync::mpsc;
use std::time::Instant;

use super::GpuContext;
use crate::{Error, GradientSource, Result};

/// GPU bytes one slot needs for a slice of a given length.
pub(super) struct SlotBytes {
    /// Sum over the slot's buffers.
    pub total: u64,
    /// The largest single binding, which must fit the device's
    /// max_storage_buffer_binding_size.
    pub largest_binding: u64,
}

impl GpuContext {
    /// Largest storage binding (and buffer) the device allows, in bytes.
    pub(super) fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Fails unless `count` workgroups fit one dispatch dimension.
    pub(super) fn check_dispatch(&self, what: &str, count: usize) -> Result<u32> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        u32::try_from(count)
            .ok()
            .filter(|&c| c <= max)
            .ok_or_else(|| Error::Gpu {
                message: format!(
                    "{what} needs {count} workgroups in one dispatch dimension, more than the \
                     device's limit of {max}; use --backend cpu"
                ),
            })
    }

    /// Chooses the slice length for `d` coordinates: the largest length that
    /// fits, rounded down to a multiple of `granule` when longer than one.
    ///
    /// A length fits when each binding fits the device, when two slots plus
    /// `fixed` bytes fit the memory budget, when it is at most `max_len` (the
    /// coordinates one dispatch covers) and at most the `max_slice_len` option.
    pub(super) fn plan_slice_len(
        &self,
        what: &str,
        d: usize,
        granule: usize,
        max_len: usize,
        fixed: u64,
        slot_bytes: impl Fn(usize) -> SlotBytes,
    ) -> Result<usize> {
        let budget = self.pool.budget();
        let fits = |len: usize| {
            let bytes = slot_bytes(len);
            bytes.largest_binding <= self.max_binding()
                && fixed.saturating_add(bytes.total.saturating_mul(2)) <= budget
        };
        let upper = d
            .min(max_len)
            .min(self.max_slice_len.unwrap_or(usize::MAX))
            .max(1);
        let smallest = slot_bytes(1);
        if smallest.largest_binding > self.max_binding() {
            return Err(Error::Gpu {
                message: format!(
                    "GPU {what} needs a binding of {} bytes even for one coordinate, more than \
                     the device's limit of {} bytes; use fewer workers or --backend cpu",
                    smallest.largest_binding,
                    self.max_binding()
                ),
            });
        }
        if !fits(1) {
            return Err(Error::MemoryBudget {
                what: format!("GPU {what} on a slice of one coordinate"),
                needed: fixed.saturating_add(smallest.total.saturating_mul(2)),
                budget,
            });
        }
        // Binary search for the largest length that fits: fits(low) holds.
        let (mut low, mut high) = (1, upper);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            if fits(middle) {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        let len = if low < d && low >= granule {
            low / granule * granule
        } else {
            low
        };
        self.log_slice_len(what, len, d);
        Ok(len)
    }

    /// Copies coordinates `start..start + len` of every worker into `buffer`,
    /// worker-major, straight from borrowed rows where the source has them.
    pub(super) fn upload_slice(
        &self,
        grads: &dyn GradientSource,
        rows: &[Option<&[f32]>],
        start: usize,
        len: usize,
        buffer: &wgpu::Buffer,
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        let started = self.stats_enabled().then(Instant::now);
        for (worker, row) in rows.iter().enumerate() {
            let offset = (worker * len * 4) as u64;
            let values: &[f32] = match row {
                Some(row) => &row[start..start + len],
                None => {
                    scratch.resize(len, 0.0);
                    grads.read_into(worker, start, scratch)?;
                    scratch
                }
            };
            self.queue
                .write_buffer(buffer, offset, bytemuck::cast_slice(values));
        }
        if let Some(started) = started {
            self.record_upload((rows.len() * len * 4) as u64, started.elapsed());
        }
        Ok(())
    }

    /// Maps the first `bytes` of `buffer` (a finished MAP_READ buffer),
    /// passes them to `read` as `T`s and unmaps it.
    pub(super) fn read_mapped<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        bytes: u64,
        read: impl FnOnce(&[T]),
    ) -> Result<()> {
        let slice = buffer.slice(..bytes);
        let (sender, receiver) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        // The buffer's work has finished, so a non-blocking poll usually
        // resolves the mapping without waiting for newer submissions.
        let _ = self.device.poll(wgpu::PollType::Poll);
        let mapped = match receiver.try_recv() {
            Ok(mapped) => mapped,
            Err(_) => {
                self.wait_idle()?;
                receiver.recv().map_err(|_| Error::Gpu {
                    message: "the GPU never completed a buffer mapping".to_string(),
                })?
            }
        };
        mapped.map_err(|error| Error::Gpu {
            message: format!("mapping a GPU buffer for reading failed: {error}"),
        })?;
        {
            let view = slice.get_mapped_range().map_err(|error| Error::Gpu {
                message: format!("reading a mapped GPU buffer failed: {error}"),
            })?;
            read(bytemuck::cast_slice(&view));
        }
        buffer.unmap();
        Ok(())
    }

    /// Binds `buffers` (buffer, bytes) to bindings 0, 1, … of `layout`.
    pub(super) fn bind_group(
        &self,
        layout: &wgpu::BindGroupLayout,
        buffers: &[(&wgpu::Buffer, u64)],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(binding, &(buffer, bytes))| wgpu::BindGroupEntry {
                binding: binding as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(bytes.max(4)),
                }),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout,
            entries: &entries,
        })
    }

    /// Records one dispatch of `pipeline` with `bind_group`.
    pub(super) fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        kernel: &super::kernels::Kernel,
        bind_group: &wgpu::BindGroup,
        groups: [u32; 3],
    ) {
        log::debug!("dispatch {} with {groups:?} workgroups", kernel.name);
        let timer = self.pass_timer();
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.name),
                timestamp_writes: timer.as_ref().map(|t| t.writes()),
            });
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        if let Some(timer) = timer {
            self.finish_pass_timer(encoder, timer);
        }
    }

    /// Splits `groups` workgroups into an (x, y) grid within the per-dimension
    /// limit, for kernels that index by `y · num_workgroups.x + x`.
    pub(super) fn grid(&self, what: &str, groups: usize) -> Result<[u32; 3]> {
        let max = self.limits.max_compute_workgroups_per_dimension as usize;
        let x = groups.clamp(1, max);
        let y = groups.div_ceil(x).max(1);
        let y = self.check_dispatch(what, y)?;
        Ok([x as u32, y, 1])
    }

    pub(super) fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    pub(super) fn write<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, values: &[T]) {
        self.queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(values));
    }
}

/// The per-slice work of one streamed stage. Slot 0 and slot 1 alternate, so
/// a slot is reused only after its previous slice has finished.
pub(super) trait SliceWork {
    /// Returns the buffer of `slot` that receives the slice's coordinates.
    fn input(&self, slot: usize) -> &wgpu::Buffer;

    /// Records the compute (and copies to readback buffers) for the slice
    /// `start..start + len` already uploaded to `slot`.
    fn encode(
        &mut self,
        slot: usize,
        encoder: &mut wgpu::CommandEncoder,
        start: usize,
        len: usize,
    ) -> Result<()>;

    /// Consumes the results of the finished slice in `slot`.
    fn finish(&mut self, slot: usize, start: usize, len: usize) -> Result<()>;
}

/// Streams `grads` through `work` in slices of `slice_len` coordinates: the
/// upload and host-side finishing of one slice overlap the GPU's compute of
/// the other.
pub(super) fn stream(
    context: &GpuContext,
    grads: &dyn GradientSource,
    d: usize,
    slice_len: usize,
    work: &mut dyn SliceWork,
) -> Result<()> {
    let n = grads.workers();
    let rows: Vec<Option<&[f32]>> = (0..n).map(|i| grads.row(i)).collect();
    let mut scratch = Vec::new();
    let mut pending: Option<(usize, usize, usize, wgpu::SubmissionIndex)> = None;
    let mut start = 0;
    let mut slot = 0;
    while start < d {
        let len = slice_len.min(d - start);
        context.upload_slice(grads, &rows, start, len, work.input(slot), &mut scratch)?;
        let mut encoder = context.encoder();
        work.encode(slot, &mut encoder, start, len)?;
        let index = context.queue.submit([encoder.finish()]);
        if let Some((previous_slot, previous_start, previous_len, previous)) = pending.take() {
            context.wait_for(previous)?;
            work.finish(previous_slot, previous_start, previous_len)?;
        }
        pending = Some((slot, start, len, index));
        start += len;
        slot = 1 - slot;
    }
    if let Some((previous_slot, previous_start, previous_len, previous)) = pending {
        context.wait_for(previous)?;
        work.finish(previous_slot, previous_start, previous_len)?;
    }
    Ok(())
}
