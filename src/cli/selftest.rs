//! `byzagg selftest`: the conformance suite on one adapter, or on all of them
//! side by side.

use std::sync::Arc;

use byzagg::gpu::{list_adapters, AdapterFilter, GpuContext, GpuOptions};
use byzagg::selftest::{self, CheckResult, Outcome};
use byzagg::Engine;
use clap::Args;
use serde_json::json;

/// Arguments of `byzagg selftest`.
#[derive(Args)]
pub struct SelftestArgs {
    /// Adapter to test: a case-insensitive part of its name or backend
    /// (vulkan, gl, metal, dx12); also read from BYZAGG_ADAPTER. Without it,
    /// the adapter that --backend gpu picks.
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    adapter: Option<String>,

    /// Test every adapter that `byzagg devices` lists.
    #[arg(long)]
    all: bool,

    /// Also test the fast CPU backend, as one more column.
    #[arg(long)]
    cpu: bool,

    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One column of the table: an engine under test, or why none could be built.
struct Column {
    label: String,
    results: Result<Vec<CheckResult>, String>,
}

/// Runs `byzagg selftest`; fails when any check fails.
pub fn run_selftest(args: SelftestArgs) -> anyhow::Result<()> {
    let mut columns = Vec::new();
    if args.all {
        let listing = list_adapters(None);
        if listing.adapters.is_empty() {
            anyhow::bail!(
                "no GPU adapter found; install a Vulkan driver (on Debian or Ubuntu: \
                 `apt-get install mesa-vulkan-drivers`) or run `byzagg selftest --cpu`"
            );
        }
        for (index, adapter) in listing.adapters.iter().enumerate() {
            let filter = AdapterFilter {
                name: None,
                allow_software: true,
                index: Some(index),
            };
            let label = format!("#{index} {} ({})", adapter.name, adapter.backend);
            columns.push(test_adapter(label, &filter));
        }
    } else if args.adapter.is_some() || !args.cpu {
        let mut filter = AdapterFilter::from_env();
        if let Some(name) = &args.adapter {
            filter.name = Some(name.clone());
        }
        let label = match &filter.name {
            Some(name) => format!("adapter {name:?}"),
            None => "gpu".to_string(),
        };
        columns.push(test_adapter(label, &filter));
    }
    if args.cpu {
        columns.push(Column {
            label: "cpu".to_string(),
            results: Ok(selftest::run(&Engine::cpu())),
        });
    }

    if args.json {
        print_json(&columns)?;
    } else {
        print_table(&columns);
    }
    let failures: usize = columns
        .iter()
        .filter_map(|c| c.results.as_ref().ok())
        .flatten()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .count();
    if failures > 0 {
        anyhow::bail!("{failures} conformance checks failed");
    }
    if columns.iter().all(|c| c.results.is_err()) {
        anyhow::bail!("no engine could be tested: every adapter is unsupported");
    }
    Ok(())
}

fn test_adapter(label: String, filter: &AdapterFilter) -> Column {
    let results = GpuContext::with_options(filter, GpuOptions::default())
        .map(|context| {
            log::info!(
                "running the conformance suite on {}",
                context.adapter_name()
            );
            selftest::run(&Engine::with_context(Arc::new(context)))
        })
        .map_err(|error| error.to_string());
    Column { label, results }
}

fn cell(result: &CheckResult) -> String {
    match &result.outcome {
        Outcome::Pass if result.worst_relative_error == 0.0 => "pass 0".to_string(),
        Outcome::Pass => format!("pass {:.1e}", result.worst_relative_error),
        Outcome::Fail(_) => "FAIL".to_string(),
        Outcome::Unsupported(_) => "unsupported".to_string(),
    }
}

fn print_table(columns: &[Column]) {
    let names: Vec<&str> = selftest::checks().iter().map(|(name, _)| *name).collect();
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("check".to_string())
        .chain(columns.iter().map(|c| c.label.clone()))
        .collect()];
    for (i, name) in names.iter().enumerate() {
        let mut row = vec![name.to_string()];
        for column in columns {
            row.push(match &column.results {
                Ok(results) => cell(&results[i]),
                Err(_) => "unsupported".to_string(),
            });
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }

    let mut notes = Vec::new();
    for column in columns {
        match &column.results {
            Err(reason) => notes.push(format!("{}: unsupported: {reason}", column.label)),
            Ok(results) => {
                for result in results {
                    match &result.outcome {
                        Outcome::Fail(message) => {
                            notes.push(format!("{} {}: FAIL: {message}", column.label, result.name))
                        }
                        Outcome::Unsupported(reason) => notes.push(format!(
                            "{} {}: unsupported: {reason}",
                            column.label, result.name
                        )),
                        Outcome::Pass => {}
                    }
                }
            }
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("{note}");
        }
    }
    println!("\nThe numbers are the worst relative error against the f64 reference.");
}

fn print_json(columns: &[Column]) -> anyhow::Result<()> {
    let value: Vec<serde_json::Value> = columns
        .iter()
        .map(|column| match &column.results {
            Err(reason) => json!({ "engine": column.label, "unsupported": reason }),
            Ok(results) => json!({
                "engine": column.label,
                "checks": results.iter().map(|r| {
                    let (outcome, detail) = match &r.outcome {
                        Outcome::Pass => ("pass", None),
                        Outcome::Fail(message) => ("fail", Some(message.clone())),
                        Outcome::Unsupported(reason) => ("unsupported", Some(reason.clone())),
                    };
                    json!({
                        "check": r.name,
                        "outcome": outcome,
                        "detail": detail,
                        "worst_relative_error": if r.worst_relative_error.is_finite() { Some(r.worst_relative_error) } else { None },
                        "seconds": r.seconds,
                    })
                }).collect::<Vec<_>>(),
            }),
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
