//! The byzagg command-line tool: argument parsing and printing only.

use clap::{Parser, Subcommand};

mod cli;

/// Byzantine-robust gradient aggregation on GPU and CPU.
#[derive(Parser)]
#[command(name = "byzagg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Aggregate n gradients with a robust rule and write the result as .npy.
    Aggregate(cli::aggregate::AggregateArgs),
    /// Write the n×n squared-distance matrix of n gradients as float64 .npy.
    Distances(cli::aggregate::DistancesArgs),
    /// Train a classifier by distributed SGD with Byzantine workers and plot
    /// test accuracy per rule and attack.
    Train(Box<cli::train::TrainArgs>),
    /// List the GPU adapters and which one each --backend choice picks.
    Devices(cli::devices::DevicesArgs),
    /// Check every kernel and rule against the f64 reference on one adapter,
    /// or on all of them, and print a conformance table.
    Selftest(cli::selftest::SelftestArgs),
    /// Time a rule on each backend over generated gradients held in memory.
    Bench(cli::bench::BenchArgs),
}

/// Mesa's EGL looks for a Wayland display while wgpu lists OpenGL adapters,
/// and libwayland prints an error line when `XDG_RUNTIME_DIR` is unset or
/// relative. This tool never opens a window, so such a variable is pointed
/// at the temporary directory, where the display lookup fails silently.
fn quiet_display_lookup() {
    let usable = std::env::var_os("XDG_RUNTIME_DIR")
        .is_some_and(|dir| std::path::Path::new(&dir).is_absolute());
    if !usable {
        // Called first in main, before any other thread exists.
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
}

fn main() -> std::process::ExitCode {
    quiet_display_lookup();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,wgpu_hal::gles=off"),
    )
    .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Aggregate(args) => cli::aggregate::run_aggregate(args),
        Command::Distances(args) => cli::aggregate::run_distances(args),
        Command::Train(args) => cli::train::run_train(*args),
        Command::Devices(args) => cli::devices::run_devices(args),
        Command::Selftest(args) => cli::selftest::run_selftest(args),
        Command::Bench(args) => cli::bench::run_bench(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
