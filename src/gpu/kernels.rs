//! The compute pipelines, compiled once per context.
//!
//! Launch-shape constants live here only: each shader declares them as
//! `override` constants and [`Kernels::new`] sets them at pipeline creation.

use super::block_on;
use crate::{Error, Result};

/// Threads per workgroup of the one-dimensional kernels; a power of two,
/// because the tree reductions halve it.
pub(super) const WORKGROUP_SIZE: u32 = 64;
/// Workers per side of a `distances.wgsl` tile: a workgroup is TILE×TILE.
pub(super) const PAIR_TILE: u32 = 8;
/// Coordinates a `distances.wgsl` workgroup keeps in workgroup memory at once.
pub(super) const PAIR_CHUNK: u32 = 64;
/// Chunks per `distances.wgsl` span, the coordinates behind one partial sum.
pub(super) const PAIR_SPAN_CHUNKS: u32 = 64;
/// Coordinates behind one `distances.wgsl` partial sum.
pub(super) const PAIR_SPAN: usize = (PAIR_CHUNK * PAIR_SPAN_CHUNKS) as usize;
/// Coordinates each thread of `distances_to.wgsl` and `non_finite.wgsl` reads.
pub(super) const ROW_SPAN_STEPS: u32 = 64;
/// Coordinates behind one `distances_to.wgsl` partial sum.
pub(super) const ROW_SPAN: usize = (WORKGROUP_SIZE * ROW_SPAN_STEPS) as usize;

/// One compiled pipeline and its bind-group layout.
pub(super) struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Every pipeline the GPU stages use.
pub(super) struct Kernels {
    pub distances: Kernel,
    pub distances_to: Kernel,
    pub non_finite: Kernel,
    pub krum_scores: Kernel,
    pub select: Kernel,
    pub combine: Kernel,
    pub order_stats: Kernel,
    pub mean_around_median: Kernel,
    pub read_bandwidth: Kernel,
}

impl Kernels {
    /// Compiles every shader, failing with [`Error::ShaderCompilation`] on the
    /// first that does not validate.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let workgroup = [("WORKGROUP_SIZE", WORKGROUP_SIZE as f64)];
        let rows = [
            ("WORKGROUP_SIZE", WORKGROUP_SIZE as f64),
            ("SPAN_STEPS", ROW_SPAN_STEPS as f64),
        ];
        let pairs = [
            ("TILE", PAIR_TILE as f64),
            ("CHUNK", PAIR_CHUNK as f64),
            ("SPAN_CHUNKS", PAIR_SPAN_CHUNKS as f64),
        ];
        Ok(Self {
            distances: compile(
                device,
                "distances.wgsl",
                include_str!("../../shaders/distances.wgsl"),
                &pairs,
            )?,
            distances_to: compile(
                device,
                "distances_to.wgsl",
                include_str!("../../shaders/distances_to.wgsl"),
                &rows,
            )?,
            non_finite: compile(
                device,
                "non_finite.wgsl",
                include_str!("../../shaders/non_finite.wgsl"),
                &rows,
            )?,
            krum_scores: compile(
                device,
                "krum_scores.wgsl",
                include_str!("../../shaders/krum_scores.wgsl"),
                &workgroup,
            )?,
            select: compile(
                device,
                "select.wgsl",
                include_str!("../../shaders/select.wgsl"),
                &workgroup,
            )?,
            combine: compile(
                device,
                "combine.wgsl",
                include_str!("../../shaders/combine.wgsl"),
                &workgroup,
            )?,
            order_stats: compile(
                device,
                "order_stats.wgsl",
                include_str!("../../shaders/order_stats.wgsl"),
                &workgroup,
            )?,
            mean_around_median: compile(
                device,
                "mean_around_median.wgsl",
                include_str!("../../shaders/mean_around_median.wgsl"),
                &workgroup,
            )?,
            read_bandwidth: compile(
                device,
                "read_bandwidth.wgsl",
                include_str!("../../shaders/read_bandwidth.wgsl"),
                &workgroup,
            )?,
        })
    }
}

/// Compiles `source` with its entry point `main` inside a validation error
/// scope; on failure logs the WGSL at error level.
fn compile(
    device: &wgpu::Device,
    name: &'static str,
    source: &'static str,
    constants: &[(&str, f64)],
) -> Result<Kernel> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    if let Some(error) = block_on(scope.pop()) {
        log::error!("shader {name} failed to compile:\n{source}");
        return Err(Error::ShaderCompilation {
            shader: name,
            message: error.to_string(),
        });
    }
    let layout = pipeline.get_bind_group_layout(0);
    Ok(Kernel {
        name,
        pipeline,
        layout,
    })
}
