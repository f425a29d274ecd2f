//! Opt-in timing of the GPU work: host-timed gradient uploads and, where the
//! device has `TIMESTAMP_QUERY`, GPU-timed compute passes.
//!
//! Off by default. While off, a dispatch or an upload costs one relaxed
//! atomic load more than without this module.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use super::GpuContext;
use crate::{Error, Result};

/// Bytes of the two timestamps (begin and end) of one compute pass.
const PASS_TIMESTAMP_BYTES: u64 = 2 * wgpu::QUERY_SIZE as u64;

/// The method that measures [`GpuStats::kernel_s`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTiming {
    /// Timestamps the GPU writes at the beginning and end of every compute
    /// pass; kernel time is the sum of the passes' spans.
    TimestampQuery,
    /// The device lacks `TIMESTAMP_QUERY`: only the uploads are timed, on
    /// the host, and kernel time is unknown.
    Host,
}

impl GpuTiming {
    /// Name used in reports: `timestamp-query` or `host`.
    pub fn name(self) -> &'static str {
        match self {
            GpuTiming::TimestampQuery => "timestamp-query",
            GpuTiming::Host => "host",
        }
    }
}

/// Totals of the GPU calls since [`GpuContext::enable_stats`] or the last
/// [`GpuContext::take_stats`].
#[derive(Clone, Debug, PartialEq)]
pub struct GpuStats {
    /// The method that measured `kernel_s`.
    pub timing: GpuTiming,
    /// Gradient slices uploaded.
    pub slices: u64,
    /// Gradient bytes uploaded, over all slices.
    pub upload_bytes: u64,
    /// Host wall time of the gradient uploads, in seconds: reading each
    /// slice from its source and handing it to `queue.write_buffer`, which
    /// copies it into wgpu's staging memory. The device-side copy runs at the
    /// next submission and is not included.
    pub upload_s: f64,
    /// Compute passes recorded.
    pub passes: u64,
    /// GPU time inside compute passes, in seconds; `None` with
    /// [`GpuTiming::Host`].
    pub kernel_s: Option<f64>,
}

/// The running totals behind [`GpuStats`], plus the timestamp readbacks not
/// yet read.
#[derive(Default)]
pub(super) struct Recorder {
    slices: u64,
    upload_bytes: u64,
    upload: Duration,
    passes: u64,
    /// One MAP_READ buffer per timed pass, holding its two timestamps.
    readbacks: Vec<wgpu::Buffer>,
}

/// The query set a timed compute pass writes to, and where its timestamps
/// go once the pass is recorded.
pub(super) struct PassTimer {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl PassTimer {
    /// Returns the timestamp writes for the compute pass descriptor.
    pub(super) fn writes(&self) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        }
    }
}

impl GpuContext {
    /// Returns the kernel timing method of this device: timestamp queries
    /// when the device has `TIMESTAMP_QUERY`, otherwise none (host).
    pub fn timing(&self) -> GpuTiming {
        if self.timestamps {
            GpuTiming::TimestampQuery
        } else {
            GpuTiming::Host
        }
    }

    /// Starts (`true`) or stops (`false`) recording [`GpuStats`], and
    /// clears what was recorded. Results do not depend on it.
    pub fn enable_stats(&self, enabled: bool) {
        if let Ok(mut recorder) = self.recorder.lock() {
            *recorder = Recorder::default();
        }
        self.stats_enabled.store(enabled, Ordering::Relaxed);
    }

    /// Returns what was recorded since stats were enabled or last taken,
    /// and starts a new record; `None` while stats are off. Waits for the
    /// GPU when passes were timed by timestamp queries.
    pub fn take_stats(&self) -> Result<Option<GpuStats>> {
        if !self.stats_enabled.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let recorder = match self.recorder.lock() {
            Ok(mut recorder) => std::mem::take(&mut *recorder),
            Err(_) => {
                return Err(Error::Gpu {
                    message: "the GPU stats were poisoned by a panic; enable them again"
                        .to_string(),
                })
            }
        };
        let kernel_s = if self.timestamps {
            Some(self.read_pass_times(&recorder.readbacks)?)
        } else {
            None
        };
        Ok(Some(GpuStats {
            timing: self.timing(),
            slices: recorder.slices,
            upload_bytes: recorder.upload_bytes,
            upload_s: recorder.upload.as_secs_f64(),
            passes: recorder.passes,
            kernel_s,
        }))
    }

    /// Returns whether stats are being recorded.
    pub(super) fn stats_enabled(&self) -> bool {
        self.stats_enabled.load(Ordering::Relaxed)
    }

    /// Adds one uploaded slice of `bytes` that took `elapsed` on the host.
    pub(super) fn record_upload(&self, bytes: u64, elapsed: Duration) {
        if let Ok(mut recorder) = self.recorder.lock() {
            recorder.slices += 1;
            recorder.upload_bytes += bytes;
            recorder.upload += elapsed;
        }
    }

    /// Counts the next compute pass and returns its timer, when stats are on
    /// and the device has timestamp queries; `None` otherwise.
    pub(super) fn pass_timer(&self) -> Option<PassTimer> {
        if !self.stats_enabled() {
            return None;
        }
        if let Ok(mut recorder) = self.recorder.lock() {
            recorder.passes += 1;
        }
        if !self.timestamps {
            return None;
        }
        let query_set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pass timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let buffer = |label, usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: PASS_TIMESTAMP_BYTES,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(PassTimer {
            query_set,
            resolve: buffer(
                "timestamp resolve",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "timestamp readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
        })
    }

    /// Records, after the timed pass, the copy of its timestamps to the
    /// host, and keeps the readback for [`GpuContext::take_stats`].
    pub(super) fn finish_pass_timer(&self, encoder: &mut wgpu::CommandEncoder, timer: PassTimer) {
        encoder.resolve_query_set(&timer.query_set, 0..2, &timer.resolve, 0);
        encoder.copy_buffer_to_buffer(&timer.resolve, 0, &timer.readback, 0, PASS_TIMESTAMP_BYTES);
        if let Ok(mut recorder) = self.recorder.lock() {
            recorder.readbacks.push(timer.readback);
        }
    }

    /// Sum of end − begin over the timed passes, in seconds. Waits for the
    /// GPU once, then maps every readback.
    fn read_pass_times(&self, readbacks: &[wgpu::Buffer]) -> Result<f64> {
        let (sender, receiver) = mpsc::channel();
        for readback in readbacks {
            let sender = sender.clone();
            readback
                .slice(..)
                .map_async(wgpu::MapMode::Read, move |result| {
                    let _ = sender.send(result);
                });
        }
        drop(sender);
        self.wait_idle()?;
        let mut mapped = 0;
        for result in receiver.try_iter() {
            result.map_err(|error| Error::Gpu {
                message: format!("mapping GPU timestamps for reading failed: {error}"),
            })?;
            mapped += 1;
        }
        if mapped != readbacks.len() {
            return Err(Error::Gpu {
                message: format!(
                    "the GPU mapped {mapped} of {} timestamp buffers; retry without stats",
                    readbacks.len()
                ),
            });
        }
        let period_ns = f64::from(self.queue.get_timestamp_period());
        let mut ticks = 0u64;
        for readback in readbacks {
            let slice = readback.slice(..);
            {
                let view = slice.get_mapped_range().map_err(|error| Error::Gpu {
                    message: format!("reading GPU timestamps failed: {error}"),
                })?;
                let stamps: &[u64] = bytemuck::cast_slice(&view);
                // A pass the GPU reordered or that wrapped the counter
                // counts as zero rather than as a huge span.
                ticks += stamps[1].saturating_sub(stamps[0]);
            }
            readback.unmap();
        }
        Ok(ticks as f64 * period_ns / 1e9)
    }
}
