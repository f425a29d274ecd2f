//! `byzagg aggregate` and `byzagg distances`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use byzagg::io::{write_atomic, NpyGradients};
use byzagg::{Aggregation, GradientSource, PreAggregation, Rule, RuleParams};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::common::{read_vector, remove_stale, InputArgs};

/// Rule names on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuleArg {
    /// The arithmetic mean (not robust).
    Mean,
    /// Krum: the gradient whose n − f − 2 nearest neighbours are closest.
    Krum,
    /// The mean of the m gradients with the lowest Krum scores.
    MultiKrum,
    /// Coordinate-wise median.
    Median,
    /// Coordinate-wise mean without the f largest and f smallest values.
    TrimmedMean,
    /// Iterated Krum, then a trimmed mean around the median.
    Bulyan,
    /// Geometric median by smoothed Weiszfeld iterations.
    GeometricMedian,
    /// Centered clipping around --center.
    CenteredClipping,
}

impl RuleArg {
    fn name(self) -> &'static str {
        match self {
            RuleArg::Mean => "mean",
            RuleArg::Krum => "krum",
            RuleArg::MultiKrum => "multi-krum",
            RuleArg::Median => "median",
            RuleArg::TrimmedMean => "trimmed-mean",
            RuleArg::Bulyan => "bulyan",
            RuleArg::GeometricMedian => "geometric-median",
            RuleArg::CenteredClipping => "centered-clipping",
        }
    }
}

/// Pre-aggregation steps on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreArg {
    /// Nearest-neighbour mixing: each gradient becomes the mean of its n − f
    /// nearest.
    Nnm,
}

/// Arguments of `byzagg aggregate`.
#[derive(Args)]
pub struct AggregateArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Aggregation rule.
    #[arg(long, value_enum, default_value_t = RuleArg::Krum)]
    rule: RuleArg,

    /// Number of Byzantine workers tolerated; also the number of workers
    /// allowed to send NaN or ±Inf.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, value_parser = parse_count)]
    f: usize,

    /// Multi-Krum: number of gradients averaged (default n − f).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_count)]
    m: Option<usize>,

    /// Geometric median: smoothing ν of the Weiszfeld weights.
    #[arg(long, default_value_t = Rule::DEFAULT_NU)]
    nu: f64,

    /// Geometric median: maximum number of iterations.
    #[arg(long, default_value_t = Rule::DEFAULT_MAX_ITERS)]
    max_iters: usize,

    /// Geometric median: stop when the relative change is at most this.
    #[arg(long, default_value_t = Rule::DEFAULT_TOL)]
    tol: f64,

    /// Centered clipping: clipping radius τ (required by that rule).
    #[arg(long)]
    tau: Option<f64>,

    /// Centered clipping: number of iterations.
    #[arg(long, default_value_t = 1)]
    iters: usize,

    /// Centered clipping: starting point, a 1-D .npy of length d (default
    /// zeros); usually the previous step's aggregate.
    #[arg(long, value_name = "PATH")]
    center: Option<PathBuf>,

    /// Pre-aggregation step applied before the rule.
    #[arg(long, value_enum)]
    pre: Option<PreArg>,

    /// Where to write the aggregate, a 1-D float32 .npy. An existing file is
    /// replaced; if the run fails, it is removed.
    #[arg(long, short)]
    output: PathBuf,

    /// Where to write a JSON report: rule, backend, selected workers, scores
    /// and timings.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
}

/// Arguments of `byzagg distances`.
#[derive(Args)]
pub struct DistancesArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Where to write the n×n squared-distance matrix, a float64 .npy. An
    /// existing file is replaced; if the run fails, it is removed.
    #[arg(long, short)]
    output: PathBuf,
}

/// Parses a count such as f or m, with a message naming the expected form.
fn parse_count(text: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| format!("expected a whole number ≥ 0, such as 2, but got {text:?}"))
}

/// Runs `byzagg aggregate`; on failure no output or report file remains.
pub fn run_aggregate(args: AggregateArgs) -> anyhow::Result<()> {
    args.input.check_not_input(&args.output)?;
    if let Some(report) = &args.report {
        args.input.check_not_input(report)?;
    }
    let result = aggregate(&args);
    if result.is_err() {
        let mut stale: Vec<&Path> = vec![&args.output];
        stale.extend(args.report.as_deref());
        remove_stale(&stale);
    }
    result
}

fn aggregate(args: &AggregateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let grads = NpyGradients::open(&args.input.input)?;
    let (n, d) = (grads.workers(), grads.dim());
    let center = args.center.as_deref().map(read_vector).transpose()?;
    let params = RuleParams {
        m: args.m,
        nu: args.nu,
        max_iters: args.max_iters,
        tol: args.tol,
        tau: args.tau,
        iters: args.iters,
        center,
    };
    let rule = Rule::from_name(args.rule.name(), args.f, n, &params)?;
    rule.validate(n, d)?;
    let engine = args.input.engine()?;
    let load_seconds = started.elapsed().as_secs_f64();

    let computing = Instant::now();
    let pre = args.pre.map(|PreArg::Nnm| PreAggregation::Nnm);
    let out = engine.aggregate_with(&rule, pre, &grads)?;
    let compute_seconds = computing.elapsed().as_secs_f64();

    let writing = Instant::now();
    let vector = ndarray::ArrayView1::from(&out.vector[..]).into_dyn();
    byzagg::io::npy::write_npy_atomic(&args.output, &vector)?;
    let write_seconds = writing.elapsed().as_secs_f64();

    let summary = summarize(&rule, &out, n);
    if let Some(report_path) = &args.report {
        let report = json!({
            "rule": rule.name(),
            "pre": args.pre.map(|_| "nnm"),
            "n": n,
            "d": d,
            "f": rule.f(),
            "m": match rule { Rule::MultiKrum { m, .. } => Some(m), _ => None },
            "backend": engine.kind().name(),
            "adapter": engine.adapter(),
            "inputs": grads.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "output": args.output.display().to_string(),
            "selected": out.selected,
            "scores": out.scores.as_ref().map(|s| s.iter().map(|&v| finite_or_null(v)).collect::<Vec<_>>()),
            "non_finite": out.non_finite,
            "iterations": out.iterations,
            "seconds": { "load": load_seconds, "compute": compute_seconds, "write": write_seconds },
        });
        write_atomic(report_path, |file| {
            serde_json::to_writer_pretty(&mut *file, &report).map_err(std::io::Error::other)?;
            use std::io::Write;
            writeln!(file)
        })?;
    }
    println!("{summary}; wrote {}", args.output.display());
    Ok(())
}

fn finite_or_null(value: f64) -> serde_json::Value {
    if value.is_finite() {
        json!(value)
    } else {
        serde_json::Value::Null
    }
}

/// Formats one line describing what the rule did.
fn summarize(rule: &Rule, out: &Aggregation, n: usize) -> String {
    let mut line = match rule {
        Rule::Krum { .. } => format!("krum selected worker {} of {n}", out.selected[0]),
        Rule::MultiKrum { m, .. } => {
            format!("multi-krum averaged {m} of {n} workers: {:?}", out.selected)
        }
        Rule::Bulyan { .. } => format!(
            "bulyan chose {} of {n} workers: {:?}",
            out.selected.len(),
            out.selected
        ),
        other => format!("{} over {n} workers", other.name()),
    };
    if let Some(iterations) = out.iterations {
        line.push_str(&format!(" in {iterations} iterations"));
    }
    if !out.non_finite.is_empty() {
        line.push_str(&format!(
            ", ignoring non-finite workers {:?}",
            out.non_finite
        ));
    }
    line
}

/// Runs `byzagg distances`; on failure no output file remains.
pub fn run_distances(args: DistancesArgs) -> anyhow::Result<()> {
    args.input.check_not_input(&args.output)?;
    let result = distances(&args);
    if result.is_err() {
        remove_stale(&[&args.output]);
    }
    result
}

fn distances(args: &DistancesArgs) -> anyhow::Result<()> {
    let grads = NpyGradients::open(&args.input.input)?;
    let engine = args.input.engine()?;
    let matrix = engine.pairwise_sq_distances(&grads)?;
    byzagg::io::npy::write_npy_atomic(&args.output, &matrix.view().into_dyn())?;
    println!(
        "wrote the {n}×{n} squared distances to {}",
        args.output.display(),
        n = matrix.nrows()
    );
    Ok(())
}
