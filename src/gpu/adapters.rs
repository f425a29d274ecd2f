//! Adapter enumeration, ranking and the `byzagg devices` listing.

use serde::Serialize;

use super::{block_on, AdapterFilter};

/// Creates a wgpu instance over every backend compiled in, honouring wgpu's
/// environment variables such as `WGPU_BACKEND`.
pub(super) fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

fn matches(info: &wgpu::AdapterInfo, filter: &AdapterFilter) -> bool {
    if !filter.allow_software && is_software(info) {
        return false;
    }
    match &filter.name {
        None => true,
        Some(wanted) => {
            let wanted = wanted.to_lowercase();
            info.name.to_lowercase().contains(&wanted)
                || info.backend.to_str().to_lowercase().contains(&wanted)
        }
    }
}

/// Sort key of an adapter, lower is better.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

/// Index of the best adapter in `infos` that `filter` accepts; the first one
/// enumerated wins a tie.
pub(super) fn pick(infos: &[wgpu::AdapterInfo], filter: &AdapterFilter) -> Option<usize> {
    (0..infos.len())
        .filter(|&i| filter.index.is_none_or(|wanted| wanted == i))
        .filter(|&i| matches(&infos[i], filter))
        .min_by_key(|&i| (rank(&infos[i]), i))
}

/// One adapter as `byzagg devices` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    /// Adapter name, for example `llvmpipe (LLVM 19.1.7, 256 bits)`.
    pub name: String,
    /// PCI vendor id, 0 when the backend does not report one.
    pub vendor: u32,
    /// Backend: `vulkan`, `gl`, `metal` or `dx12`.
    pub backend: String,
    /// Device type: `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver version and details.
    pub driver_info: String,
    /// Largest storage-buffer binding, in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Largest workgroup size in x, y and z.
    pub max_compute_workgroup_size: [u32; 3],
    /// Maximum invocations in one workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Maximum workgroups in one dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
}

/// Every adapter, and which one each way of building an engine would pick.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterListing {
    /// The adapters in wgpu's enumeration order.
    pub adapters: Vec<AdapterReport>,
    /// Index of the adapter that `Engine::auto()` (`--backend auto`) picks,
    /// hardware only unless a name filter is given; `None` means the CPU.
    pub auto: Option<usize>,
    /// Index of the adapter that `Engine::gpu()` (`--backend gpu`) picks,
    /// software adapters allowed.
    pub gpu: Option<usize>,
}

/// Lists every adapter wgpu finds and the picks of `auto` and `gpu` under
/// the adapter name filter `name` (`--adapter` or `BYZAGG_ADAPTER`).
pub fn list_adapters(name: Option<String>) -> AdapterListing {
    let instance = instance();
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    let reports = adapters
        .iter()
        .zip(&infos)
        .map(|(adapter, info)| {
            let limits = adapter.limits();
            AdapterReport {
                name: info.name.clone(),
                vendor: info.vendor,
                backend: info.backend.to_str().to_string(),
                device_type: format!("{:?}", info.device_type),
                driver: info.driver.clone(),
                driver_info: info.driver_info.clone(),
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_buffer_size: limits.max_buffer_size,
                max_compute_workgroup_size: [
                    limits.max_compute_workgroup_size_x,
                    limits.max_compute_workgroup_size_y,
                    limits.max_compute_workgroup_size_z,
                ],
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            }
        })
        .collect();
    let auto_filter = AdapterFilter {
        index: None,
        allow_software: name.is_some(),
        name: name.clone(),
    };
    let gpu_filter = AdapterFilter {
        index: None,
        name,
        allow_software: true,
    };
    AdapterListing {
        adapters: reports,
        auto: pick(&infos, &auto_filter),
        gpu: pick(&infos, &gpu_filter),
    }
}
