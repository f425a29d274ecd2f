//! In-memory benchmarks of the backends, the library side of `byzagg bench`.
//!
//! [`run`] generates n seeded gradients in memory, aggregates them with one
//! rule on each requested backend, and reports the median wall time with the
//! rates derived from it. The `memory` pseudo-backend sums the same gradients
//! with every thread, which measures the streaming read bandwidth that a
//! memory-bound backend can reach at best.

use std::sync::Arc;
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::Serialize;

use crate::gpu::{AdapterFilter, GpuContext};
use crate::{Aggregation, Engine, Error, Result, Rule, RuleParams};

/// The thing one row of a benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchBackend {
    /// A multi-threaded sum over the gradients: the streaming read bandwidth.
    Memory,
    /// The f64 reference ([`Engine::reference`]).
    Reference,
    /// The fast CPU path ([`Engine::cpu`]).
    Cpu,
    /// The GPU backend ([`Engine::gpu`]).
    Gpu,
    /// The gradients uploaded to the GPU in slices with no compute
    /// ([`GpuContext::stream_without_compute`]): the bound of the `gpu` row
    /// from host memory.
    GpuUpload,
    /// n · d · 4 bytes read from GPU memory by a kernel that only sums them
    /// ([`GpuContext::read_resident`]): the bound of the `gpu` row's kernels.
    GpuMemory,
}

impl BenchBackend {
    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BenchBackend::Memory => "memory",
            BenchBackend::Reference => "reference",
            BenchBackend::Cpu => "cpu",
            BenchBackend::Gpu => "gpu",
            BenchBackend::GpuUpload => "gpu-upload",
            BenchBackend::GpuMemory => "gpu-memory",
        }
    }

    /// Returns whether the row runs the rule, rather than a bandwidth probe.
    fn aggregates(self) -> bool {
        matches!(
            self,
            BenchBackend::Reference | BenchBackend::Cpu | BenchBackend::Gpu
        )
    }
}

/// The benchmark to run: sizes, rule, backends and repeats.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Number of workers n.
    pub n: usize,
    /// Gradient dimension d.
    pub d: usize,
    /// Rule name, as accepted by [`Rule::from_name`].
    pub rule: String,
    /// Byzantine workers tolerated; `None` picks [`default_f`].
    pub f: Option<usize>,
    /// Backends in the order measured and reported.
    pub backends: Vec<BenchBackend>,
    /// Timed runs per backend; the report gives their median.
    pub repeats: usize,
    /// Seed of the generated gradients.
    pub seed: u64,
    /// Whether every timed run allocates a new output vector
    /// ([`Engine::aggregate`]) instead of writing into the previous run's
    /// ([`Engine::aggregate_into`]).
    pub fresh_output: bool,
}

/// One backend's measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Backend name: `memory`, `reference`, `cpu`, `gpu`, `gpu-upload` or
    /// `gpu-memory`.
    pub backend: &'static str,
    /// Whether the row runs the rule (`reference`, `cpu`, `gpu`), rather than
    /// measuring a bandwidth bound.
    pub runs_rule: bool,
    /// The runner: the GPU adapter, or the CPU's SIMD level and thread count.
    pub adapter: Option<String>,
    /// The reason the backend could not run, if it could not. The timings
    /// are then `None`.
    pub unavailable: Option<String>,
    /// Median wall time of one aggregation, in seconds.
    pub median_s: Option<f64>,
    /// Fastest of the timed runs, in seconds.
    pub min_s: Option<f64>,
    /// Gradient bytes read (n · d · 4) per median second, in 10⁹ bytes/s.
    pub gb_per_s: Option<f64>,
    /// [`BenchReport::flops`] per median second, in 10⁹ FLOP/s.
    pub gflop_per_s: Option<f64>,
    /// The reference's median time over this row's, when the reference ran.
    pub speedup_vs_reference: Option<f64>,
    /// This row's read rate over the `memory` row's, when that ran.
    pub fraction_of_stream: Option<f64>,
    /// For the `gpu` row, the `gpu-upload` row's time over this row's: how
    /// close an aggregation from host memory comes to uploading the
    /// gradients alone.
    pub fraction_of_upload: Option<f64>,
    /// For the `gpu` row, the `gpu-memory` row's time over this row's
    /// `kernel_s`: how close the kernels come to reading every gradient once
    /// at the device's read bandwidth. `kernel_s` sums every pass of the
    /// rule, not only the distances.
    pub kernel_fraction_of_device_read: Option<f64>,
    /// Median host time of one aggregation's gradient uploads, in seconds,
    /// for the GPU: reading the slices and handing them to
    /// `queue.write_buffer`.
    pub upload_s: Option<f64>,
    /// Median GPU time of one aggregation's compute passes, in seconds, for
    /// the GPU when it has timestamp queries.
    pub kernel_s: Option<f64>,
    /// The method that timed the GPU rows: `timestamp-query` (kernels timed
    /// by the GPU, uploads by the host) or `host` (only uploads timed, and
    /// the `gpu-memory` row by the host's wait for the kernel).
    pub timing: Option<&'static str>,
    /// Gradient bytes one aggregation uploads to the GPU, over all stages.
    pub upload_bytes: Option<u64>,
    /// Workers the rule selected (empty for `memory` and for rules that
    /// select none).
    pub selected: Vec<usize>,
}

/// A whole benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Number of workers.
    pub n: usize,
    /// Gradient dimension.
    pub d: usize,
    /// Rule name.
    pub rule: String,
    /// Byzantine workers tolerated.
    pub f: usize,
    /// Timed runs per backend.
    pub repeats: usize,
    /// Seed of the generated gradients.
    pub seed: u64,
    /// Threads in rayon's pool.
    pub threads: usize,
    /// Whether each run allocated a new output vector; otherwise the runs
    /// wrote into one kept across them, as a training loop does with
    /// [`Engine::aggregate_into`].
    pub fresh_output: bool,
    /// Gradient bytes one aggregation reads at least once: n · d · 4.
    pub bytes_read: u64,
    /// Floating-point operations of one aggregation, for rules with a fixed
    /// count: 3 per coordinate of every pair for the distances (subtract,
    /// multiply, add) plus 2 per coordinate of every averaged worker.
    pub flops: Option<f64>,
    /// One row per backend, in the requested order.
    pub rows: Vec<BenchRow>,
}

/// Parameters the benchmark passes to rules that need one: centered clipping
/// gets τ = 1.
fn bench_params() -> RuleParams {
    RuleParams {
        tau: Some(1.0),
        ..RuleParams::default()
    }
}

/// The largest f, at most (n − 3) / 2 (Krum's bound), that `rule` accepts
/// for n workers; `rule`'s own error when it accepts none.
pub fn default_f(rule: &str, n: usize, d: usize) -> Result<usize> {
    let params = bench_params();
    let mut f = n.saturating_sub(3) / 2;
    loop {
        let result = Rule::from_name(rule, f, n, &params).and_then(|r| r.validate(n, d));
        match result {
            Ok(()) => return Ok(f),
            Err(error) if f == 0 => return Err(error),
            Err(_) => f -= 1,
        }
    }
}

/// Checks `config` and builds its rule.
pub fn validate(config: &BenchConfig) -> Result<Rule> {
    let invalid = |name: &'static str, value: usize, fix: &str| Error::InvalidParameter {
        rule: "bench",
        name,
        value: value.to_string(),
        fix: fix.to_string(),
    };
    if config.n == 0 {
        return Err(invalid("n", 0, "choose at least 1 worker"));
    }
    if config.d == 0 {
        return Err(invalid("d", 0, "choose a dimension d of at least 1"));
    }
    if config.repeats == 0 {
        return Err(invalid("repeats", 0, "choose at least 1 timed run"));
    }
    check_memory(config)?;
    let f = match config.f {
        Some(f) => f,
        None => default_f(&config.rule, config.n, config.d)?,
    };
    let rule = Rule::from_name(&config.rule, f, config.n, &bench_params())?;
    rule.validate(config.n, config.d)?;
    Ok(rule)
}

/// Bytes of memory available to new allocations, where the OS reports it
/// (`MemAvailable` of /proc/meminfo on Linux).
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Rejects sizes whose gradients (plus the reference's f64 copy, when it
/// runs) would not fit in the available memory, before any allocation.
fn check_memory(config: &BenchConfig) -> Result<()> {
    let (n, d) = (config.n, config.d);
    let too_large = || does_not_fit(n, d, format!("{n} × {d} f32 values do not fit in memory"));
    let values = (n as u64).checked_mul(d as u64).ok_or_else(too_large)?;
    let copies = if config.backends.contains(&BenchBackend::Reference) {
        3
    } else {
        1
    };
    let needed = values.checked_mul(4 * copies).ok_or_else(too_large)?;
    match available_memory() {
        Some(available) if needed > available => Err(does_not_fit(
            n,
            d,
            format!(
                "the gradients{} need about {}, more than the {} of available memory",
                if copies > 1 {
                    " and the reference's f64 copy"
                } else {
                    ""
                },
                human_bytes(needed),
                human_bytes(available)
            ),
        )),
        _ => Ok(()),
    }
}

/// Returns the error for n × d gradients that do not fit in memory, with
/// `shortfall` telling how far they are from fitting.
fn does_not_fit(n: usize, d: usize, shortfall: String) -> Error {
    Error::InvalidParameter {
        rule: "bench",
        name: "n × d",
        value: format!("{n} × {d}"),
        fix: format!("{shortfall}; lower n or d"),
    }
}

/// Formats a byte count with a decimal unit: `512 bytes`, `67.1 MB`,
/// `12.0 TB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// n seeded gradients of dimension d: worker i draws N(0, 1) coordinates from
/// its own generator, and the first `byzantine` workers are shifted by +4 so
/// that a robust rule has something to reject.
pub fn generate(n: usize, d: usize, byzantine: usize, seed: u64) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        let mut row: Vec<f32> = Vec::new();
        row.try_reserve_exact(d).map_err(|_| {
            does_not_fit(n, d, format!("{n} × {d} f32 values do not fit in memory"))
        })?;
        rows.push(row);
    }
    rows.par_iter_mut().enumerate().for_each(|(i, row)| {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(
            seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let shift = if i < byzantine { 4.0 } else { 0.0 };
        row.extend((0..d).map(|_| rng.sample::<f32, _>(StandardNormal) + shift));
    });
    Ok(rows)
}

/// Floating-point operations of one aggregation with `rule`, for the rules
/// whose count does not depend on the data.
pub fn flops(rule: &Rule, n: usize, d: usize) -> Option<f64> {
    let pairs = (n * (n - 1) / 2) as f64;
    let distances = 3.0 * pairs * d as f64;
    match rule {
        Rule::Krum { .. } => Some(distances),
        Rule::MultiKrum { m, .. } => Some(distances + 2.0 * (*m * d) as f64),
        Rule::Mean { .. } => Some(2.0 * (n * d) as f64),
        _ => None,
    }
}

/// The median of `times`, which is not empty.
fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    if times.len() % 2 == 1 {
        times[mid]
    } else {
        (times[mid - 1] + times[mid]) / 2.0
    }
}

/// Sets the row's fastest and median time from `times`, which it sorts.
fn record_times(row: &mut BenchRow, times: &mut [f64]) {
    row.min_s = times.iter().copied().reduce(f64::min);
    row.median_s = Some(median(times));
}

/// Wall times of `repeats` calls of `run` after `warmup` untimed calls, and
/// the output of the last call.
fn time_runs<T>(
    repeats: usize,
    warmup: usize,
    mut run: impl FnMut() -> Result<T>,
) -> Result<(Vec<f64>, T)> {
    for _ in 0..warmup {
        run()?;
    }
    let mut times = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let start = Instant::now();
        let output = run()?;
        times.push(start.elapsed().as_secs_f64());
        last = Some(output);
    }
    let last = last.expect("repeats ≥ 1 is validated");
    Ok((times, last))
}

/// Sums every gradient with all threads, for the streaming read bandwidth.
fn stream_sum(grads: &[Vec<f32>]) -> f64 {
    const PIECE: usize = 1 << 16;
    grads
        .par_iter()
        .flat_map(|row| row.par_chunks(PIECE))
        .map(crate::cpu::fast::sum)
        .sum()
}

fn empty_row(backend: BenchBackend) -> BenchRow {
    BenchRow {
        backend: backend.name(),
        runs_rule: backend.aggregates(),
        adapter: None,
        unavailable: None,
        median_s: None,
        min_s: None,
        gb_per_s: None,
        gflop_per_s: None,
        speedup_vs_reference: None,
        fraction_of_stream: None,
        fraction_of_upload: None,
        kernel_fraction_of_device_read: None,
        upload_s: None,
        kernel_s: None,
        timing: None,
        upload_bytes: None,
        selected: Vec::new(),
    }
}

fn cpu_adapter() -> String {
    format!(
        "{}, {} threads",
        crate::cpu::CpuStages::new().simd().name(),
        rayon::current_num_threads()
    )
}

/// Aggregates once into `out`, in a new vector when `fresh` and in `out`'s
/// memory otherwise. Returns the aggregation that a fresh one replaced, for
/// the caller to drop once the run is timed.
fn aggregate_once(
    engine: &Engine,
    rule: &Rule,
    grads: &[Vec<f32>],
    fresh: bool,
    out: &mut Aggregation,
) -> Result<Aggregation> {
    if fresh {
        Ok(std::mem::replace(out, engine.aggregate(rule, grads)?))
    } else {
        engine.aggregate_into(rule, None, grads, out)?;
        Ok(Aggregation::default())
    }
}

/// Aggregates with `engine`, timed; the first run is a warm-up unless the
/// engine is the reference, whose runs are long.
fn measure_engine(
    engine: &Engine,
    rule: &Rule,
    grads: &[Vec<f32>],
    config: &BenchConfig,
    row: &mut BenchRow,
) -> Result<()> {
    let warmup = usize::from(engine.kind() != crate::BackendKind::Reference);
    let mut out = Aggregation::default();
    let (mut times, _) = time_runs(config.repeats, warmup, || {
        aggregate_once(engine, rule, grads, config.fresh_output, &mut out)
    })?;
    record_times(row, &mut times);
    row.selected = out.selected;
    Ok(())
}

/// Like [`measure_engine`] on the GPU, with the context's stats on during
/// the timed runs for the medians of upload and kernel time. Reading the
/// stats after each run is left out of the wall time; recording them is not
/// (with timestamp queries, one query set and two 16-byte buffers per
/// compute pass).
fn measure_gpu(
    context: Arc<GpuContext>,
    rule: &Rule,
    grads: &[Vec<f32>],
    config: &BenchConfig,
    row: &mut BenchRow,
) -> Result<()> {
    let repeats = config.repeats;
    let engine = Engine::with_context(Arc::clone(&context));
    row.adapter = engine.adapter();
    row.timing = Some(context.timing().name());
    let mut out = Aggregation::default();
    aggregate_once(&engine, rule, grads, config.fresh_output, &mut out)?;
    context.enable_stats(true);
    let mut times = Vec::with_capacity(repeats);
    let mut uploads = Vec::with_capacity(repeats);
    let mut kernels = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let retired = aggregate_once(&engine, rule, grads, config.fresh_output, &mut out);
        times.push(start.elapsed().as_secs_f64());
        let measured = retired.and_then(|retired| Ok((retired, context.take_stats()?)));
        let (_retired, stats) = match measured {
            Ok(measured) => measured,
            Err(error) => {
                context.enable_stats(false);
                return Err(error);
            }
        };
        if let Some(stats) = stats {
            uploads.push(stats.upload_s);
            kernels.extend(stats.kernel_s);
            row.upload_bytes = Some(stats.upload_bytes);
        }
    }
    context.enable_stats(false);
    record_times(row, &mut times);
    if !uploads.is_empty() {
        row.upload_s = Some(median(&mut uploads));
    }
    if !kernels.is_empty() {
        row.kernel_s = Some(median(&mut kernels));
    }
    row.selected = out.selected;
    Ok(())
}

/// The GPU context the GPU rows share, created on first use.
#[derive(Default)]
struct SharedGpu {
    context: Option<std::result::Result<Arc<GpuContext>, String>>,
}

impl SharedGpu {
    /// Returns the context, or the reason no GPU could be opened.
    fn get(&mut self) -> std::result::Result<Arc<GpuContext>, String> {
        self.context
            .get_or_insert_with(|| {
                GpuContext::new(&AdapterFilter::from_env())
                    .map(Arc::new)
                    .map_err(|error| error.to_string())
            })
            .clone()
    }
}

/// Times [`GpuContext::read_resident`] over `bytes`: by the GPU's
/// timestamps where the device has them, otherwise by the host's wait.
fn measure_gpu_read(
    context: &GpuContext,
    bytes: u64,
    repeats: usize,
    row: &mut BenchRow,
) -> Result<()> {
    context.read_resident(bytes)?;
    context.enable_stats(true);
    let timed = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            context.read_resident(bytes)?;
            let host_s = start.elapsed().as_secs_f64();
            let kernel_s = context.take_stats()?.and_then(|stats| stats.kernel_s);
            Ok(kernel_s.unwrap_or(host_s))
        })
        .collect::<Result<Vec<f64>>>();
    context.enable_stats(false);
    let mut times = timed?;
    record_times(row, &mut times);
    Ok(())
}

fn measure(
    backend: BenchBackend,
    rule: &Rule,
    grads: &[Vec<f32>],
    config: &BenchConfig,
    gpu: &mut SharedGpu,
) -> Result<BenchRow> {
    let repeats = config.repeats;
    let mut row = empty_row(backend);
    match backend {
        BenchBackend::Memory => {
            row.adapter = Some(format!("{} threads", rayon::current_num_threads()));
            let (mut times, _) = time_runs(repeats, 1, || Ok(stream_sum(grads)))?;
            record_times(&mut row, &mut times);
        }
        BenchBackend::Reference => {
            measure_engine(&Engine::reference(), rule, grads, config, &mut row)?
        }
        BenchBackend::Cpu => {
            row.adapter = Some(cpu_adapter());
            measure_engine(&Engine::cpu(), rule, grads, config, &mut row)?;
        }
        BenchBackend::Gpu | BenchBackend::GpuUpload | BenchBackend::GpuMemory => {
            let context = match gpu.get() {
                Ok(context) => context,
                Err(reason) => {
                    row.unavailable = Some(reason);
                    return Ok(row);
                }
            };
            row.adapter = Some(context.adapter_name().to_string());
            match backend {
                BenchBackend::GpuUpload => {
                    let (mut times, _) =
                        time_runs(repeats, 1, || context.stream_without_compute(grads))?;
                    record_times(&mut row, &mut times);
                }
                BenchBackend::GpuMemory => {
                    row.timing = Some(context.timing().name());
                    let bytes = grads.iter().map(|g| g.len() as u64 * 4).sum();
                    measure_gpu_read(&context, bytes, repeats, &mut row)?;
                }
                _ => measure_gpu(context, rule, grads, config, &mut row)?,
            }
        }
    }
    Ok(row)
}

/// Runs the benchmark that `config` describes.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    let rule = validate(config)?;
    let (n, d) = (config.n, config.d);
    let grads = generate(n, d, rule.f(), config.seed)?;
    let bytes_read = (n * d * std::mem::size_of::<f32>()) as u64;
    let flops = flops(&rule, n, d);

    let mut rows = Vec::with_capacity(config.backends.len());
    let mut gpu = SharedGpu::default();
    for &backend in &config.backends {
        log::info!("bench: measuring {} on n = {n}, d = {d}", backend.name());
        // A backend that fails (for example a rule the reference lacks)
        // becomes an unavailable row, so the others are still measured.
        let row = measure(backend, &rule, &grads, config, &mut gpu).unwrap_or_else(|error| {
            log::warn!("bench: {} failed: {error}", backend.name());
            BenchRow {
                unavailable: Some(error.to_string()),
                ..empty_row(backend)
            }
        });
        rows.push(row);
    }

    let median_of = |name: &str| {
        rows.iter()
            .find(|r| r.backend == name)
            .and_then(|r| r.median_s)
    };
    let reference = median_of("reference");
    let stream = median_of("memory");
    let upload = median_of("gpu-upload");
    let device_read = median_of("gpu-memory");
    for (row, &backend) in rows.iter_mut().zip(&config.backends) {
        let Some(seconds) = row.median_s else {
            continue;
        };
        row.gb_per_s = Some(bytes_read as f64 / seconds / 1e9);
        if backend.aggregates() {
            row.gflop_per_s = flops.map(|count| count / seconds / 1e9);
            row.speedup_vs_reference = reference.map(|r| r / seconds);
            row.fraction_of_stream = stream.map(|s| s / seconds);
        }
        if backend == BenchBackend::Gpu {
            row.fraction_of_upload = upload.map(|u| u / seconds);
            row.kernel_fraction_of_device_read = device_read.zip(row.kernel_s).map(|(r, k)| r / k);
        }
    }

    Ok(BenchReport {
        n,
        d,
        rule: rule.name().to_string(),
        f: rule.f(),
        repeats: config.repeats,
        seed: config.seed,
        threads: rayon::current_num_threads(),
        fresh_output: config.fresh_output,
        bytes_read,
        flops,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(999), "999 bytes");
        assert_eq!(human_bytes(1_000), "1.0 kB");
        assert_eq!(human_bytes(67_108_864), "67.1 MB");
        assert_eq!(human_bytes(12_000_000_000_000), "12.0 TB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }
}
