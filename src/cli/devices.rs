//! `byzagg devices`: every GPU adapter wgpu finds, and which one each backend
//! choice would pick.

use clap::Args;

use byzagg::gpu::{list_adapters, AdapterListing};

/// Arguments of `byzagg devices`.
#[derive(Args)]
pub struct DevicesArgs {
    /// Case-insensitive substring of the adapter name or backend to prefer
    /// (as for `--adapter`); defaults to the BYZAGG_ADAPTER environment variable.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Print the listing as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `byzagg devices`.
pub fn run_devices(args: DevicesArgs) -> anyhow::Result<()> {
    let filter = args
        .adapter
        .or_else(|| std::env::var("BYZAGG_ADAPTER").ok())
        .filter(|name| !name.is_empty());
    let listing = list_adapters(filter);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        print_table(&listing);
    }
    Ok(())
}

fn pick_name(listing: &AdapterListing, pick: Option<usize>, fallback: &str) -> String {
    match pick {
        Some(index) => format!("#{index} {}", listing.adapters[index].name),
        None => fallback.to_string(),
    }
}

fn print_table(listing: &AdapterListing) {
    let header = [
        "#",
        "name",
        "vendor",
        "backend",
        "type",
        "driver",
        "driver info",
        "max storage binding",
        "max buffer",
        "max workgroup (x,y,z) / invocations / per dim",
    ];
    let rows: Vec<[String; 10]> = listing
        .adapters
        .iter()
        .enumerate()
        .map(|(index, a)| {
            [
                index.to_string(),
                a.name.clone(),
                format!("{:#06x}", a.vendor),
                a.backend.clone(),
                a.device_type.clone(),
                a.driver.clone(),
                a.driver_info.clone(),
                a.max_storage_buffer_binding_size.to_string(),
                a.max_buffer_size.to_string(),
                format!(
                    "({},{},{}) / {} / {}",
                    a.max_compute_workgroup_size[0],
                    a.max_compute_workgroup_size[1],
                    a.max_compute_workgroup_size[2],
                    a.max_compute_invocations_per_workgroup,
                    a.max_compute_workgroups_per_dimension
                ),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    if rows.is_empty() {
        println!("no GPU adapters found");
    } else {
        line(header.to_vec());
        for row in &rows {
            line(row.iter().map(String::as_str).collect());
        }
    }
    println!();
    println!(
        "--backend auto picks: {}",
        pick_name(listing, listing.auto, "the CPU (no hardware adapter)")
    );
    println!(
        "--backend gpu picks:  {}",
        pick_name(
            listing,
            listing.gpu,
            "nothing (no adapter; install a Vulkan driver)"
        )
    );
}
