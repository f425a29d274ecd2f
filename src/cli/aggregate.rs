//! `byzagg aggregate` and `byzagg distances`.

use clap::Args;

/// Arguments of `byzagg aggregate`.
#[derive(Args)]
pub struct AggregateArgs {}

/// Arguments of `byzagg distances`.
#[derive(Args)]
pub struct DistancesArgs {}

/// Runs `byzagg aggregate`.
pub fn run_aggregate(_args: AggregateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

/// Runs `byzagg distances`.
pub fn run_distances(_args: DistancesArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
