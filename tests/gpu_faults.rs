//! Device faults: a lost device and a missing adapter are typed errors, and
//! an engine with the CPU fallback still returns the reference's result.

mod common;

use std::sync::Arc;

use byzagg::gpu::{AdapterFilter, GpuContext, GpuOptions};
use byzagg::{Engine, Error, Rule};

/// Creates a device of our own on the first Vulkan adapter, as a caller's
/// training program would, or `None` (skip) when there is none.
fn own_device() -> Option<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    let Some(adapter) = adapters.into_iter().next() else {
        assert!(
            !common::gpu_required(),
            "REQUIRE_GPU=1 but no Vulkan adapter for the fault tests"
        );
        eprintln!("skipping the device fault tests: no Vulkan adapter");
        return None;
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("device");
    Some((device, queue, adapter.get_info()))
}

fn gradients() -> Vec<Vec<f32>> {
    (0..9)
        .map(|i| {
            (0..300)
                .map(|c| ((i * 13 + c * 7) % 17) as f32 * 0.1 + if i == 4 { 30.0 } else { 0.0 })
                .collect()
        })
        .collect()
}

#[test]
fn lost_device_is_typed_error() {
    let Some((device, queue, info)) = own_device() else {
        return;
    };
    let context =
        GpuContext::from_device(device.clone(), queue, info, GpuOptions::default()).unwrap();
    let engine = Engine::with_context(Arc::new(context));
    assert!(
        engine.aggregate(&Rule::Krum { f: 2 }, &gradients()).is_ok(),
        "before the loss"
    );

    device.destroy();
    let error = engine
        .aggregate(&Rule::Krum { f: 2 }, &gradients())
        .unwrap_err();
    assert!(error.is_device_fault(), "{error:?}");
    assert!(matches!(error, Error::DeviceLost { .. }), "{error:?}");
}

#[test]
fn lost_device_falls_back_to_cpu() {
    let Some((device, queue, info)) = own_device() else {
        return;
    };
    let context =
        GpuContext::from_device(device.clone(), queue, info, GpuOptions::default()).unwrap();
    let engine = Engine::with_context(Arc::new(context)).with_cpu_fallback(true);
    device.destroy();

    let rule = Rule::MultiKrum { f: 2, m: 5 };
    let expected = Engine::reference().aggregate(&rule, &gradients()).unwrap();
    let out = engine.aggregate(&rule, &gradients()).unwrap();
    assert_eq!(out.selected, expected.selected);
    for (c, (got, want)) in out.vector.iter().zip(&expected.vector).enumerate() {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "coordinate {c}: {got} vs {want}"
        );
    }
    let distances = engine.pairwise_sq_distances(&gradients()).unwrap();
    assert_eq!(distances.dim(), (9, 9));
}

#[test]
fn missing_adapter_is_typed_error() {
    let filter = AdapterFilter {
        name: Some("no-such-adapter-xyz".to_string()),
        allow_software: true,
        index: None,
    };
    let error = Engine::gpu_with(&filter, GpuOptions::default())
        .err()
        .expect("no adapter matches");
    assert!(matches!(error, Error::NoAdapter { .. }), "{error:?}");

    // The auto backend takes the CPU instead, and still aggregates.
    let engine = Engine::auto_with(&filter, GpuOptions::default()).unwrap();
    assert_eq!(engine.kind(), byzagg::BackendKind::Cpu);
    let out = engine
        .aggregate(&Rule::Krum { f: 2 }, &gradients())
        .unwrap();
    let expected = Engine::reference()
        .aggregate(&Rule::Krum { f: 2 }, &gradients())
        .unwrap();
    assert_eq!(out.selected, expected.selected);
}
