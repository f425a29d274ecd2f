//! Reuse of GPU buffers across calls, within a memory budget.

use std::sync::Mutex;

use super::block_on;
use crate::{Error, Result};

/// Buffers are allocated in multiples of this many bytes, so that a buffer
/// sized for one call serves later calls of nearly the same size.
const GRANULE: u64 = 256;

/// Free buffers, and the bytes of every buffer the pool allocated that is
/// still alive (free or in use).
#[derive(Default)]
struct PoolState {
    free: Vec<wgpu::Buffer>,
    live_bytes: u64,
}

/// A pool of GPU buffers whose live bytes never exceed the budget.
pub(super) struct BufferPool {
    state: Mutex<PoolState>,
    budget: u64,
}

/// A buffer taken from the pool; dropping it returns it.
pub(super) struct PooledBuffer<'a> {
    buffer: Option<wgpu::Buffer>,
    pool: &'a BufferPool,
}

impl std::ops::Deref for PooledBuffer<'_> {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is present until dropped")
    }
}

impl Drop for PooledBuffer<'_> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            if let Ok(mut state) = self.pool.state.lock() {
                state.free.push(buffer);
            }
        }
    }
}

impl BufferPool {
    pub fn new(budget: u64) -> Self {
        Self {
            state: Mutex::new(PoolState::default()),
            budget,
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// A buffer with `usage` and at least `size` bytes: a free one of the same
    /// pooled size, or a new one. Free buffers are destroyed, oldest first,
    /// when a new one would exceed the budget.
    ///
    /// Reuse is by exact pooled size so that the buffers in use are exactly
    /// what the slice planner budgeted: reusing a larger buffer could push a
    /// call over the budget.
    pub fn take<'a>(
        &'a self,
        device: &wgpu::Device,
        label: &'static str,
        usage: wgpu::BufferUsages,
        size: u64,
    ) -> Result<PooledBuffer<'a>> {
        let size = pooled_size(size);
        let mut state = self.state.lock().map_err(|_| Error::Gpu {
            message: "the GPU buffer pool is poisoned by an earlier panic".to_string(),
        })?;
        let reusable = state
            .free
            .iter()
            .position(|b| b.usage() == usage && b.size() == size);
        if let Some(index) = reusable {
            let buffer = state.free.swap_remove(index);
            return Ok(PooledBuffer {
                buffer: Some(buffer),
                pool: self,
            });
        }

        while state.live_bytes + size > self.budget && !state.free.is_empty() {
            let old = state.free.remove(0);
            state.live_bytes -= old.size();
            old.destroy();
        }
        if state.live_bytes + size > self.budget {
            return Err(Error::MemoryBudget {
                what: format!("GPU buffer {label:?}"),
                needed: state.live_bytes + size,
                budget: self.budget,
            });
        }

        let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        let errors = [block_on(validation.pop()), block_on(memory.pop())];
        if let Some(error) = errors.into_iter().flatten().next() {
            buffer.destroy();
            return Err(Error::BufferAllocation {
                bytes: size,
                message: error.to_string(),
            });
        }
        state.live_bytes += size;
        log::debug!("allocated GPU buffer {label:?} of {size} bytes");
        Ok(PooledBuffer {
            buffer: Some(buffer),
            pool: self,
        })
    }
}

/// Bytes the pool actually allocates for a request of `bytes`.
pub(super) fn pooled_size(bytes: u64) -> u64 {
    bytes.max(4).div_ceil(GRANULE) * GRANULE
}
