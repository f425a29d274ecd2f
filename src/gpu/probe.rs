//! Bandwidth probes: the fastest the GPU backend could move the gradients,
//! as references for the GPU row of `byzagg bench`.
//!
//! [`GpuContext::stream_without_compute`] uploads the gradients in slices
//! through two slot buffers exactly as the stages do, with no compute, which
//! bounds an aggregation that starts from host memory.
//! [`GpuContext::read_resident`] reads a buffer already on the device with a
//! kernel that only sums it, which bounds a kernel that reads each gradient
//! once.

use super::kernels::WORKGROUP_SIZE;
use super::pool::PooledBuffer;
use super::stream::{stream, SliceWork, SlotBytes};
use super::GpuContext;
use crate::gradients::{validate_shape, Dyn};
use crate::{GradientSource, Result};

const UPLOADED: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST);
const SUMS: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE;

/// Workgroups of the read kernel. 4096 · 64 threads are meant to keep many
/// loads in flight on large GPUs (an estimate, not measured on one), and
/// their sums (1 MiB) are small beside the bytes read.
const READ_GROUPS: u32 = 4096;

/// Bytes of one `vec4<f32>`, the read kernel's unit.
const VEC4_BYTES: u64 = 16;

/// Slice work that only receives the uploads.
struct UploadOnly<'a> {
    slots: [PooledBuffer<'a>; 2],
}

impl SliceWork for UploadOnly<'_> {
    fn input(&self, slot: usize) -> &wgpu::Buffer {
        &self.slots[slot]
    }

    fn encode(
        &mut self,
        _slot: usize,
        _encoder: &mut wgpu::CommandEncoder,
        _start: usize,
        _len: usize,
    ) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, _slot: usize, _start: usize, _len: usize) -> Result<()> {
        Ok(())
    }
}

impl GpuContext {
    /// Uploads every coordinate of `grads` to the device once, in the
    /// largest slices the device limits and memory budget allow, through two
    /// alternating slot buffers, and waits until the last copy has finished.
    /// No kernel runs, so its wall time bounds any aggregation that starts
    /// from host memory.
    pub fn stream_without_compute<G: GradientSource + ?Sized>(&self, grads: &G) -> Result<()> {
        let grads = Dyn(grads);
        let (n, d) = validate_shape(&grads)?;
        let slot_bytes = |len: usize| {
            let bytes = (n * len * 4) as u64;
            SlotBytes {
                total: bytes,
                largest_binding: bytes,
            }
        };
        let len = self.plan_slice_len("upload probe", d, 1, d, 0, slot_bytes)?;
        let bytes = slot_bytes(len).total;
        let take = || {
            self.pool
                .take(&self.device, "upload probe", UPLOADED, bytes)
        };
        let mut work = UploadOnly {
            slots: [take()?, take()?],
        };
        stream(self, &grads, d, len, &mut work)
    }

    /// Reads `bytes` bytes from device memory with a kernel that sums a
    /// resident buffer, and waits for it. The buffer is at most one
    /// storage binding and half the memory budget, and is read as many
    /// times as it takes to cover `bytes`, one compute pass per read.
    ///
    /// With stats on ([`GpuContext::enable_stats`]) and timestamp queries,
    /// [`GpuContext::take_stats`] then reports the passes' GPU time.
    pub fn read_resident(&self, bytes: u64) -> Result<()> {
        let buffer_bytes = (bytes.min(self.max_binding()).min(self.pool.budget() / 2) / VEC4_BYTES
            * VEC4_BYTES)
            .max(VEC4_BYTES);
        let passes = bytes.div_ceil(buffer_bytes).max(1);
        let groups = READ_GROUPS.min(self.limits.max_compute_workgroups_per_dimension);
        let sums_bytes = u64::from(groups * WORKGROUP_SIZE) * 4;
        let values = self
            .pool
            .take(&self.device, "read probe", UPLOADED, buffer_bytes)?;
        let sums = self
            .pool
            .take(&self.device, "read probe sums", SUMS, sums_bytes)?;
        let kernel = &self.kernels.read_bandwidth;
        let bind_group = self.bind_group(
            &kernel.layout,
            &[(&values, buffer_bytes), (&sums, sums_bytes)],
        );
        let mut encoder = self.encoder();
        for _ in 0..passes {
            self.dispatch(&mut encoder, kernel, &bind_group, [groups, 1, 1]);
        }
        let index = self.queue.submit([encoder.finish()]);
        self.wait_for(index)
    }
}
