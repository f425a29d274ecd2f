//! The GPU context's opt-in stats and the GPU row of `byzagg bench`.
//!
//! Skips with a message when there is no adapter, unless `REQUIRE_GPU=1`.

mod common;

use std::process::Command;
use std::sync::Arc;

use byzagg::gpu::{AdapterFilter, GpuContext, GpuOptions, GpuStages, GpuTiming};
use byzagg::stages::Stages;

use common::{gpu_engine, gpu_required};

const SEED: u64 = 7;

/// A context on the adapter from `BYZAGG_ADAPTER`, slices capped at
/// `max_slice_len` coordinates; `None` with a skip message when there is
/// none, a failure with `REQUIRE_GPU=1`.
fn context(max_slice_len: usize, what: &str) -> Option<Arc<GpuContext>> {
    let options = GpuOptions {
        max_slice_len: Some(max_slice_len),
        ..GpuOptions::default()
    };
    match GpuContext::with_options(&AdapterFilter::from_env(), options) {
        Ok(context) => Some(Arc::new(context)),
        Err(error) if !gpu_required() => {
            eprintln!("skipping {what}: {error} (set REQUIRE_GPU=1 to fail instead)");
            None
        }
        Err(error) => panic!("REQUIRE_GPU=1 but no GPU context for {what}: {error}"),
    }
}

/// n rows of d seeded values in [−1, 1).
fn gradients(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        })
        .collect()
}

#[test]
fn distance_stats_count_every_uploaded_slice() {
    let (n, d, slice) = (5, 1000, 256);
    let Some(context) = context(slice, "distance stats") else {
        return;
    };
    let stages = GpuStages::new(Arc::clone(&context));
    let grads = gradients(n, d, SEED);

    assert_eq!(context.take_stats().expect("stats while off"), None);
    context.enable_stats(true);
    let got = stages.sq_distances(&grads).expect("GPU distances");
    let stats = context
        .take_stats()
        .expect("reading the stats")
        .expect("stats are on");

    // The stats must not change the result: compare with the f64 distances.
    for i in 0..n {
        for j in 0..n {
            let want: f64 = grads[i]
                .iter()
                .zip(&grads[j])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum();
            let tolerance = 1e-4 * want + 1e-6;
            assert!(
                (got[[i, j]] - want).abs() <= tolerance,
                "seed {SEED}: |x_{i} − x_{j}|² gpu {} f64 {want} tolerance {tolerance}",
                got[[i, j]]
            );
        }
    }
    let slices = d.div_ceil(slice) as u64;
    assert_eq!(stats.slices, slices, "slices of {slice} over d = {d}");
    assert_eq!(stats.upload_bytes, (n * d * 4) as u64, "upload bytes n·d·4");
    assert!(stats.upload_s >= 0.0, "upload time {}", stats.upload_s);
    assert!(
        stats.passes >= slices,
        "passes {} < slices {slices}",
        stats.passes
    );
    assert_eq!(stats.timing, context.timing());
    match stats.timing {
        GpuTiming::TimestampQuery => {
            let kernel_s = stats.kernel_s.expect("kernel time with timestamp queries");
            assert!(kernel_s >= 0.0, "kernel time {kernel_s}");
        }
        GpuTiming::Host => assert_eq!(stats.kernel_s, None),
    }
    eprintln!(
        "timing {}: {} slices, {} bytes, upload {:.6} s, {} passes, kernel {:?} s",
        stats.timing.name(),
        stats.slices,
        stats.upload_bytes,
        stats.upload_s,
        stats.passes,
        stats.kernel_s
    );

    // Taking the stats starts a new record.
    let empty = context
        .take_stats()
        .expect("reading the stats")
        .expect("stats are on");
    assert_eq!(empty.upload_bytes, 0, "bytes after take_stats");
    context.enable_stats(false);
    stages.sq_distances(&grads).expect("GPU distances");
    assert_eq!(context.take_stats().expect("stats while off"), None);
}

/// Runs `byzagg bench --json` once on `backends` over n × d gradients and
/// returns the report and what it printed on stderr.
fn bench_json(backends: &[&str], n: usize, d: usize) -> (serde_json::Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_byzagg"))
        .args([
            "bench",
            "--backends",
            &backends.join(","),
            "--json",
            "--repeats",
            "1",
        ])
        .args(["--n", &n.to_string(), "--d", &d.to_string()])
        .output()
        .expect("running byzagg bench");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "byzagg bench failed: {stderr}");
    let report = serde_json::from_slice(&output.stdout).expect("bench prints JSON");
    (report, stderr)
}

#[test]
fn bench_json_reports_gpu_timing() {
    // Probe first, so that a machine without an adapter skips.
    if gpu_engine(&AdapterFilter::from_env(), "bench JSON timing").is_none() {
        return;
    }
    let (n, d) = (5, 512);
    let (report, _) = bench_json(&["gpu"], n, d);
    let row = &report["rows"][0];
    assert_eq!(row["backend"], "gpu", "row: {row}");
    assert!(row["unavailable"].is_null(), "row: {row}");
    let timing = row["timing"].as_str().expect("timing is a string");
    assert!(
        timing == "timestamp-query" || timing == "host",
        "timing {timing}"
    );
    let upload_s = row["upload_s"].as_f64().expect("upload_s is a number");
    assert!(upload_s >= 0.0, "upload_s {upload_s}");
    let upload_bytes = row["upload_bytes"].as_u64().expect("upload_bytes");
    assert!(upload_bytes > 0, "upload_bytes {upload_bytes}");
    assert!(
        upload_bytes.is_multiple_of((n * d * 4) as u64),
        "upload_bytes {upload_bytes} is not a multiple of n·d·4"
    );
    if timing == "timestamp-query" {
        let kernel_s = row["kernel_s"].as_f64().expect("kernel_s is a number");
        assert!(kernel_s >= 0.0, "kernel_s {kernel_s}");
    } else {
        assert!(row["kernel_s"].is_null(), "row: {row}");
    }
}

#[test]
fn bench_gpu_bandwidth_rows() {
    if gpu_engine(&AdapterFilter::from_env(), "bench bandwidth rows").is_none() {
        return;
    }
    let (report, warnings) = bench_json(&["gpu-upload", "gpu-memory", "gpu"], 5, 3000);
    let rows = report["rows"].as_array().expect("rows is an array");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["backend"].as_str()).collect();
    assert_eq!(names, ["gpu-upload", "gpu-memory", "gpu"]);
    for row in rows {
        assert!(row["unavailable"].is_null(), "row: {row}");
        let rate = row["gb_per_s"].as_f64().expect("gb_per_s is a number");
        assert!(rate > 0.0, "row: {row}");
    }

    let runs_rule: Vec<bool> = rows
        .iter()
        .filter_map(|r| r["runs_rule"].as_bool())
        .collect();
    assert_eq!(runs_rule, [false, false, true]);
    // The probes select no worker, which is not a disagreement with the rule.
    assert!(!warnings.contains("selected"), "{warnings}");

    let gpu = &rows[2];
    let upload = gpu["fraction_of_upload"]
        .as_f64()
        .expect("fraction_of_upload");
    assert!(upload > 0.0, "row: {gpu}");
    // The probes are not rule runs, so they get no rule figures.
    assert!(
        rows[0]["speedup_vs_reference"].is_null(),
        "row: {}",
        rows[0]
    );
    assert!(rows[1]["gflop_per_s"].is_null(), "row: {}", rows[1]);

    match gpu["timing"].as_str() {
        Some("timestamp-query") => {
            let read = gpu["kernel_fraction_of_device_read"]
                .as_f64()
                .expect("kernel_fraction_of_device_read");
            assert!(read > 0.0, "row: {gpu}");
        }
        _ => assert!(
            gpu["kernel_fraction_of_device_read"].is_null(),
            "row: {gpu}"
        ),
    }
}

/// A context on a device created without `TIMESTAMP_QUERY` falls back to
/// host timing: uploads are still counted and timed, kernel time is `None`.
#[test]
fn host_timing_without_timestamp_queries() {
    let (n, d, slice) = (4, 600, 128);
    let Some(probe) = context(slice, "host timing fallback") else {
        return;
    };
    let wanted = probe.adapter_info().clone();
    drop(probe);
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters
        .into_iter()
        .find(|a| {
            let info = a.get_info();
            info.name == wanted.name && info.backend == wanted.backend
        })
        .expect("the library's adapter is enumerated again");
    // The default descriptor requests no features, so no timestamp queries.
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("device with default features");
    let options = GpuOptions {
        max_slice_len: Some(slice),
        ..GpuOptions::default()
    };
    let context = Arc::new(
        GpuContext::from_device(device, queue, adapter.get_info(), options)
            .expect("context on the caller's device"),
    );
    assert_eq!(context.timing(), GpuTiming::Host);

    let stages = GpuStages::new(Arc::clone(&context));
    let grads = gradients(n, d, SEED);
    context.enable_stats(true);
    stages.sq_distances(&grads).expect("GPU distances");
    let stats = context
        .take_stats()
        .expect("reading the stats")
        .expect("stats are on");
    assert_eq!(stats.timing, GpuTiming::Host);
    assert_eq!(
        stats.kernel_s, None,
        "kernel time without timestamp queries"
    );
    assert_eq!(stats.slices, d.div_ceil(slice) as u64, "slices");
    assert_eq!(stats.upload_bytes, (n * d * 4) as u64, "upload bytes n·d·4");
    assert!(stats.upload_s >= 0.0, "upload time {}", stats.upload_s);
}
