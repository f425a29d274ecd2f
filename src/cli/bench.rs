//! `byzagg bench`: times one rule on each backend over generated gradients.

use anyhow::Context;
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
}

impl From<BackendArg> for BenchBackend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Memory => BenchBackend::Memory,
            BackendArg::Reference => BenchBackend::Reference,
            BackendArg::Cpu => BenchBackend::Cpu,
            BackendArg::Gpu => BenchBackend::Gpu,
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
        default_value = "memory,reference,cpu,gpu"
    )]
    pub backends: Vec<BackendArg>,
    /// Timed runs per backend; the median is reported. The CPU, GPU and
    /// memory rows run once more untimed first.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Seed of the generated gradients.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `byzagg bench`.
pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.backends.is_empty(),
        "--backends is empty; name at least one of memory, reference, cpu, gpu"
    );
    let config = BenchConfig {
        n: args.n,
        d: args.d,
        rule: args.rule,
        f: args.f,
        backends: args.backends.into_iter().map(BenchBackend::from).collect(),
        repeats: args.repeats,
        seed: args.seed,
    };
    let report = bench::run(&config).context("benchmark failed")?;
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
        .filter(|r| r.median_s.is_some() && r.backend != "memory")
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

fn cell(value: Option<f64>, decimals: usize, unit: &str) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}{unit}"),
        None => "-".to_string(),
    }
}

fn print_table(report: &BenchReport) {
    println!(
        "{} on n = {}, d = {}, f = {}: {:.1} MB of gradients, median of {} runs, {} threads",
        report.rule,
        report.n,
        report.d,
        report.f,
        report.bytes_read as f64 / 1e6,
        report.repeats,
        report.threads
    );
    println!(
        "{:<10} {:<22} {:>10} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9}",
        "backend",
        "adapter",
        "median s",
        "GB/s",
        "GFLOP/s",
        "speed-up",
        "stream",
        "upload s",
        "kernel s"
    );
    for row in &report.rows {
        if let Some(reason) = &row.unavailable {
            println!("{:<10} unavailable: {reason}", row.backend);
            continue;
        }
        println!(
            "{:<10} {:<22} {:>10} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9}",
            row.backend,
            row.adapter.as_deref().unwrap_or("-"),
            cell(row.median_s, 4, ""),
            cell(row.gb_per_s, 2, ""),
            cell(row.gflop_per_s, 1, ""),
            cell(row.speedup_vs_reference, 1, "×"),
            cell(row.fraction_of_stream.map(|f| f * 100.0), 0, "%"),
            cell(row.upload_s, 4, ""),
            cell(row.kernel_s, 4, ""),
        );
    }
}
