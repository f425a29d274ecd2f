//! The GPU backend: WGSL compute shaders on wgpu.
//!
//! A [`GpuContext`] owns the device, the compiled pipelines and a buffer pool;
//! build it once and share it. [`GpuStages`] runs the pipeline stages on it,
//! streaming the gradients through the GPU in coordinate slices so that d
//! may be far larger than one buffer or than the GPU's memory.

mod adapters;
mod kernels;
mod pool;
mod probe;
mod stages;
mod stream;
mod timing;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use adapters::{list_adapters, AdapterListing, AdapterReport};
pub use stages::GpuStages;
pub use timing::{GpuStats, GpuTiming};

use crate::{Error, Result};
use kernels::Kernels;
use pool::BufferPool;

/// GPU memory budget used when [`GpuOptions::memory_budget`] is `None`.
///
/// NOTE: wgpu does not report how much memory an adapter has, so this is a
/// fixed default rather than a measured size. Raise it on large GPUs.
pub const DEFAULT_MEMORY_BUDGET: u64 = 1 << 30;

/// Adapter selection: a name or backend filter, and whether software
/// adapters qualify.
#[derive(Clone, Debug, Default)]
pub struct AdapterFilter {
    /// Case-insensitive substring of the adapter name or backend
    /// (`vulkan`, `gl`, `metal`, `dx12`).
    pub name: Option<String>,
    /// Whether software adapters such as lavapipe may be picked.
    pub allow_software: bool,
    /// Position of the adapter in the `byzagg devices` listing, to pick one
    /// of several adapters with the same name.
    pub index: Option<usize>,
}

impl AdapterFilter {
    /// The filter from the `BYZAGG_ADAPTER` environment variable, software
    /// adapters allowed.
    pub fn from_env() -> Self {
        Self {
            name: std::env::var("BYZAGG_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty()),
            allow_software: true,
            index: None,
        }
    }
}

/// Resource limits of a [`GpuContext`].
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Bytes of GPU buffers the context may hold at once, pooled buffers
    /// included; [`DEFAULT_MEMORY_BUDGET`] when `None`. Slices are sized so
    /// that each call fits.
    pub memory_budget: Option<u64>,
    /// Maximum coordinates per slice, below what the device limits and the
    /// budget allow; `None` for no extra cap. Tests set it to force streaming
    /// on small inputs.
    pub max_slice_len: Option<usize>,
}

/// The device, queue, pipelines and buffer pool, built once and reused.
///
/// [`GpuContext::enable_stats`] turns on [`GpuStats`] (upload and kernel
/// times), which [`GpuContext::take_stats`] reads.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    kernels: Kernels,
    pool: BufferPool,
    max_slice_len: Option<usize>,
    /// The reason the device was lost, set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    /// Slice length last logged at info, so that repeated calls log once.
    logged_slice_len: AtomicUsize,
    /// Whether the device has `TIMESTAMP_QUERY`, so passes can be timed.
    timestamps: bool,
    /// Whether [`GpuStats`] are recorded; see [`GpuContext::enable_stats`].
    stats_enabled: AtomicBool,
    /// The stats recorded while `stats_enabled` is set.
    recorder: Mutex<timing::Recorder>,
}

/// Maps a failed wait to an error. A wait on a submission that never took
/// place means the queue rejected it, which happens once the device is lost
/// or destroyed, sometimes before the device-lost callback has run.
fn poll_error(error: wgpu::PollError) -> Error {
    match error {
        wgpu::PollError::WrongSubmissionIndex(..) => Error::DeviceLost {
            message: format!("the GPU rejected submitted work ({error})"),
        },
        other => Error::Gpu {
            message: format!("waiting for the GPU failed: {other}"),
        },
    }
}

/// Runs a future to completion; the one place the library blocks on wgpu.
fn block_on<F: Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

impl GpuContext {
    /// Picks an adapter with `filter` and creates a device on it, with the
    /// default [`GpuOptions`].
    pub fn new(filter: &AdapterFilter) -> Result<Self> {
        Self::with_options(filter, GpuOptions::default())
    }

    /// Picks an adapter with `filter` and creates a device on it, with the
    /// storage-binding and buffer-size limits raised to what the adapter
    /// offers.
    ///
    /// The best adapter is a discrete GPU before an integrated, virtual,
    /// other, then software one, and Vulkan, Metal or DX12 before GL.
    pub fn with_options(filter: &AdapterFilter, options: GpuOptions) -> Result<Self> {
        let instance = adapters::instance();
        let candidates = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let infos: Vec<wgpu::AdapterInfo> = candidates.iter().map(|a| a.get_info()).collect();
        let Some(index) = adapters::pick(&infos, filter) else {
            return Err(Error::NoAdapter {
                filter: filter.name.clone(),
                found: infos
                    .iter()
                    .map(|info| format!("{} ({})", info.name, info.backend.to_str()))
                    .collect(),
            });
        };
        let adapter = &candidates[index];
        let info = infos[index].clone();

        // Timestamp queries only serve `enable_stats`, so they are requested
        // where offered and never required.
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("byzagg"),
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: adapter.limits(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) = block_on(adapter.request_device(&descriptor)).map_err(|error| {
            Error::RequestDevice {
                adapter: info.name.clone(),
                message: error.to_string(),
            }
        })?;
        device.on_uncaptured_error(Arc::new(|error: wgpu::Error| {
            log::error!("uncaught wgpu error: {error}");
        }));
        Self::from_device(device, queue, info, options)
    }

    /// Wraps a device and queue that the caller's program already created,
    /// for example to share one GPU with a training loop. `info` names the
    /// adapter in logs and reports. The device's limits bound the slice size.
    ///
    /// The context installs a device-lost callback, and it reports wgpu
    /// errors through error scopes, leaving the caller's uncaptured-error
    /// handler in place.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: GpuOptions,
    ) -> Result<Self> {
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            log::error!("GPU device lost ({reason:?}): {message}");
            if let Ok(mut slot) = lost_flag.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });

        let limits = device.limits();
        let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let kernels = Kernels::new(&device)?;
        let budget = options.memory_budget.unwrap_or(DEFAULT_MEMORY_BUDGET);
        log::info!(
            "GPU adapter {:?} ({:?}, {:?}); max storage binding {} bytes, max buffer {} bytes, \
             memory budget {budget} bytes, timestamp queries {}",
            info.name,
            info.backend,
            info.device_type,
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
            if timestamps {
                "available"
            } else {
                "unavailable"
            },
        );
        Ok(Self {
            pool: BufferPool::new(budget),
            device,
            queue,
            info,
            limits,
            kernels,
            max_slice_len: options.max_slice_len,
            lost,
            logged_slice_len: AtomicUsize::new(0),
            timestamps,
            stats_enabled: AtomicBool::new(false),
            recorder: Mutex::new(timing::Recorder::default()),
        })
    }

    /// Name of the adapter.
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// Returns the adapter's description as wgpu reports it.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Returns the memory budget in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.pool.budget()
    }

    /// Fails with [`Error::DeviceLost`] once the device-lost callback ran.
    fn check_lost(&self) -> Result<()> {
        let lost = self
            .lost
            .lock()
            .map(|slot| slot.clone())
            .unwrap_or_default();
        match lost {
            Some(message) => Err(Error::DeviceLost { message }),
            None => Ok(()),
        }
    }

    /// Runs `work` inside validation, out-of-memory and internal error
    /// scopes, turning any error they catch into [`Error::Gpu`].
    fn scoped<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_lost()?;
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = work();
        let errors = [
            block_on(validation.pop()),
            block_on(memory.pop()),
            block_on(internal.pop()),
        ];
        self.check_lost()?;
        let value = result?;
        match errors.into_iter().flatten().next() {
            Some(error) => Err(Error::Gpu {
                message: error.to_string(),
            }),
            None => Ok(value),
        }
    }

    /// Blocks until the queue is idle and every mapping callback has run.
    fn wait_idle(&self) -> Result<()> {
        let waited = self.device.poll(wgpu::PollType::wait_indefinitely());
        self.check_lost()?;
        waited.map(|_| ()).map_err(poll_error)
    }

    /// Blocks until submission `index` has finished.
    fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        });
        self.check_lost()?;
        waited.map(|_| ()).map_err(poll_error)
    }

    /// Logs the slice length at info when it differs from the last one logged.
    fn log_slice_len(&self, what: &str, len: usize, d: usize) {
        if self.logged_slice_len.swap(len, Ordering::Relaxed) != len {
            log::info!("GPU {what}: slices of {len} coordinates (d = {d})");
        }
    }
}
