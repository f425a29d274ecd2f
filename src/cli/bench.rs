//! `byzagg bench`: times one rule on each backend over generated gradients.

use byzagg::bench::{self, BenchBackend, BenchConfig, BenchReport, BenchRow};
use clap::{Args, ValueEnum};

/// A backend accepted by `--backends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Streaming read bandwidth: a multi-threaded sum over the gradients.
    Memory,
    /// The f64 reference.
    Reference,
    /// The fast CPU path.
    Cpu,
    /// The GPU backend.
    Gpu,
    /// Host-to-GPU upload bandwidth: the gradients streamed to the GPU in
    /// slices with no compute.
    GpuUpload,
    /// GPU memory read bandwidth: a kernel that sums n · d · 4 resident bytes.
    GpuMemory,
}

impl From<BackendArg> for BenchBackend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Memory => BenchBackend::Memory,
            BackendArg::Reference => BenchBackend::Reference,
            BackendArg::Cpu => BenchBackend::Cpu,
            BackendArg::Gpu => BenchBackend::Gpu,
            BackendArg::GpuUpload => BenchBackend::GpuUpload,
            BackendArg::GpuMemory => BenchBackend::GpuMemory,
        }
    }
}

/// Arguments of `byzagg bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Number of workers n.
    #[arg(long, default_value_t = 32)]
    pub n: usize,
    /// Gradient dimension d (coordinates per worker).
    #[arg(long, default_value_t = 1 << 20)]
    pub d: usize,
    /// Rule to time: mean, krum, multi-krum, median, trimmed-mean, bulyan,
    /// geometric-median or centered-clipping (timed with τ = 1).
    #[arg(long, default_value = "krum")]
    pub rule: String,
    /// Byzantine workers tolerated [default: the largest the rule accepts,
    /// at most (n − 3) / 2]. The first f generated gradients are shifted.
    #[arg(long)]
    pub f: Option<usize>,
    /// Comma-separated backends to time, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memory,reference,cpu,gpu-upload,gpu-memory,gpu"
    )]
    pub backends: Vec<BackendArg>,
    /// Timed runs per backend; the median is reported. The CPU, GPU and
    /// memory rows run once more untimed first.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Seed of the generated gradients.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Allocate a new output vector in every run, as `Engine::aggregate`
    /// does. By default the runs write into one vector kept across them, as
    /// a training loop does with `Engine::aggregate_into`.
    #[arg(long)]
    pub fresh_output: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `byzagg bench`.
pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.backends.is_empty(),
        "--backends is empty; name at least one of memory, reference, cpu, gpu, gpu-upload, gpu-memory"
    );
    let config = BenchConfig {
        n: args.n,
        d: args.d,
        rule: args.rule,
        f: args.f,
        backends: args.backends.into_iter().map(BenchBackend::from).collect(),
        repeats: args.repeats,
        seed: args.seed,
        fresh_output: args.fresh_output,
    };
    let report = bench::run(&config)?;
    warn_if_selections_differ(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Prints a warning on stderr when two backends selected different workers,
/// so that a fast but wrong backend cannot pass unnoticed.
fn warn_if_selections_differ(report: &BenchReport) {
    let measured: Vec<&BenchRow> = report
        .rows
        .iter()
        .filter(|r| r.median_s.is_some() && r.runs_rule)
        .collect();
    if let Some(first) = measured.first() {
        for row in &measured[1..] {
            if row.selected != first.selected {
                eprintln!(
                    "warning: {} selected {:?} but {} selected {:?}",
                    row.backend, row.selected, first.backend, first.selected
                );
            }
        }
    }
}

/// Seconds with four decimals, or three significant digits below a
/// millisecond, where four decimals would round to 0.0000.
fn seconds(value: Option<f64>) -> String {
    match value {
        Some(v) if v > 0.0 && v < 1e-3 => format!("{v:.2e}"),
        other => cell(other, 4, ""),
    }
}

fn cell(value: Option<f64>, decimals: usize, unit: &str) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}{unit}"),
        None => "-".to_string(),
    }
}

fn print_table(report: &BenchReport) {
    println!(
        "{} on n = {}, d = {}, f = {}: {} of gradients, median of {} runs, {} threads, {}",
        report.rule,
        report.n,
        report.d,
        report.f,
        bench::human_bytes(report.bytes_read),
        report.repeats,
        report.threads,
        if report.fresh_output {
            "a new output vector per run"
        } else {
            "one output vector reused"
        }
    );
    print!("{}", format_table(report));
}

/// Header of each table column; the first two are left-aligned text.
const HEADERS: [&str; 12] = [
    "backend",
    "adapter",
    "median s",
    "GB/s",
    "GFLOP/s",
    "vs reference",
    "stream",
    "vs upload",
    "upload s",
    "kernel s",
    "kernel vs read",
    "timing",
];

/// The table's cells for one measured row, in [`HEADERS`] order.
fn row_cells(row: &BenchRow) -> [String; 12] {
    [
        row.backend.to_string(),
        row.adapter.clone().unwrap_or_else(|| "-".to_string()),
        seconds(row.median_s),
        cell(row.gb_per_s, 2, ""),
        cell(row.gflop_per_s, 1, ""),
        cell(row.speedup_vs_reference, 1, "×"),
        cell(row.fraction_of_stream.map(|f| f * 100.0), 0, "%"),
        cell(row.fraction_of_upload.map(|f| f * 100.0), 0, "%"),
        seconds(row.upload_s),
        seconds(row.kernel_s),
        cell(
            row.kernel_fraction_of_device_read.map(|f| f * 100.0),
            0,
            "%",
        ),
        row.timing.unwrap_or("-").to_string(),
    ]
}

/// The header and rows, each column as wide as its widest cell; an
/// unavailable backend's reason runs on past the columns.
fn format_table(report: &BenchReport) -> String {
    let headers = HEADERS.map(str::to_string);
    let rows: Vec<Result<[String; 12], String>> = report
        .rows
        .iter()
        .map(|row| match &row.unavailable {
            Some(reason) => Err(format!("{} unavailable: {reason}", row.backend)),
            None => Ok(row_cells(row)),
        })
        .collect();
    let mut widths = headers.clone().map(|h| h.chars().count());
    for cells in rows.iter().flatten() {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 12]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column < 2 || column == HEADERS.len() - 1 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut table = line(&headers);
    for row in rows {
        match row {
            Ok(cells) => table.push_str(&line(&cells)),
            Err(reason) => table.push_str(&format!("{reason}\n")),
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with_adapter(adapter: &str) -> BenchReport {
        let row = |backend, adapter: &str| BenchRow {
            backend,
            runs_rule: true,
            adapter: Some(adapter.to_string()),
            unavailable: None,
            median_s: Some(0.5),
            min_s: Some(0.4),
            gb_per_s: Some(1.25),
            gflop_per_s: None,
            speedup_vs_reference: Some(12.0),
            fraction_of_stream: None,
            fraction_of_upload: None,
            kernel_fraction_of_device_read: None,
            upload_s: None,
            kernel_s: None,
            timing: None,
            upload_bytes: None,
            selected: vec![],
        };
        BenchReport {
            n: 4,
            d: 8,
            rule: "krum".to_string(),
            f: 0,
            repeats: 1,
            seed: 0,
            threads: 2,
            fresh_output: false,
            bytes_read: 128,
            flops: None,
            rows: vec![row("cpu", "avx2, 2 threads"), row("gpu", adapter)],
        }
    }

    #[test]
    fn columns_align_with_a_long_adapter_name() {
        let table = format_table(&report_with_adapter(
            "llvmpipe (LLVM 15.0.6, 256 bits), a name longer than any default width",
        ));
        let lines: Vec<&str> = table.lines().collect();
        // Every right-aligned "median s" cell ends at the same column.
        let end = lines[0].find("median s").expect("header has median s") + "median s".len();
        for line in &lines[1..] {
            assert_eq!(&line[end - 6..end], "0.5000", "misaligned row: {line:?}");
        }
    }
}
