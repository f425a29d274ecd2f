//! Options shared by the subcommands that read gradients.

use std::path::{Path, PathBuf};

use anyhow::Context;
use byzagg::gpu::{AdapterFilter, GpuOptions};
use byzagg::Engine;
use clap::{Args, ValueEnum};

/// Which backend computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// A hardware GPU if one exists, else the fast CPU path.
    Auto,
    /// The fast multithreaded CPU path.
    Cpu,
    /// A GPU adapter, software adapters such as lavapipe included.
    Gpu,
    /// The slow f64 reference (the test oracle).
    Reference,
}

/// Where the gradients come from and what computes on them.
#[derive(Args)]
pub struct InputArgs {
    /// Gradients: one (n, d) .npy file, or one 1-D .npy file per worker, or
    /// directories of them (sorted by file name). float32 or float64.
    #[arg(long, short, num_args = 1.., required = true, value_name = "PATH")]
    pub input: Vec<PathBuf>,

    /// Backend that computes the aggregate.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// GPU adapter to use: a case-insensitive part of its name or backend
    /// (vulkan, gl, metal, dx12); also read from BYZAGG_ADAPTER.
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,

    /// Cap on the memory held at once, in bytes with an optional K, M or G
    /// suffix (powers of 1024), for example 512M: GPU buffers, and host
    /// buffers that grow with the input. Inputs larger than the cap are
    /// memory-mapped and streamed through it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
    pub max_memory: Option<u64>,
}

/// Parses a byte count such as `4096`, `64K`, `512M` or `2G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => trimmed.split_at(at),
        None => (trimmed, ""),
    };
    let multiplier: u64 = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: use bytes with an optional K, M or G suffix, such as 512M"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|value| value.checked_mul(multiplier))
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("invalid size {text:?}: use a positive number of bytes with an optional K, M or G suffix, such as 512M"))
}

/// Builds the engine of `--backend auto`, and prints a notice on stderr when
/// it falls back to the CPU, so that a user expecting a GPU learns why.
pub fn auto_engine(filter: &AdapterFilter, options: GpuOptions) -> anyhow::Result<Engine> {
    let engine = Engine::auto_with(filter, options)?;
    if engine.kind() != byzagg::BackendKind::Gpu {
        eprintln!(
            "byzagg: no hardware GPU adapter found, using the CPU backend \
             (`byzagg devices` lists adapters; --backend gpu also uses software ones)"
        );
    }
    Ok(engine)
}

impl InputArgs {
    /// Builds the engine that the options ask for.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        let mut filter = AdapterFilter::from_env();
        if let Some(name) = &self.adapter {
            filter.name = Some(name.clone());
        }
        let options = GpuOptions {
            memory_budget: self.max_memory,
            ..GpuOptions::default()
        };
        let engine = match self.backend {
            BackendArg::Auto => auto_engine(&filter, options)?,
            BackendArg::Cpu => Engine::cpu(),
            BackendArg::Reference => Engine::reference(),
            BackendArg::Gpu => Engine::gpu_with(&filter, options)?,
        };
        Ok(engine.with_memory_budget(self.max_memory))
    }

    /// Fails if `output` is one of the input files, which writing would destroy.
    pub fn check_not_input(&self, output: &Path) -> anyhow::Result<()> {
        let Ok(output) = output.canonicalize() else {
            return Ok(());
        };
        for input in &self.input {
            if input.canonicalize().is_ok_and(|i| i == output) {
                anyhow::bail!(
                    "the output {} is also an input; choose another output path",
                    output.display()
                );
            }
        }
        Ok(())
    }
}

/// Removes files that a failed run must not leave behind, so that an old
/// result is never mistaken for this run's.
pub fn remove_stale(paths: &[&Path]) {
    for path in paths {
        if path.is_file() {
            if let Err(error) = std::fs::remove_file(path) {
                log::warn!("failed to remove stale output {}: {error}", path.display());
            }
        }
    }
}

/// Reads a 1-D float .npy file as a float32 vector.
pub fn read_vector(path: &Path) -> anyhow::Result<Vec<f32>> {
    use byzagg::GradientSource;
    let file = byzagg::io::NpyFile::open(path)?;
    if file.shape().len() != 1 {
        anyhow::bail!(
            "{}: has shape {:?}; pass a 1-D array",
            path.display(),
            file.shape()
        );
    }
    let vector = byzagg::io::NpyGradients::Workers(vec![file]);
    let mut out = vec![0f32; vector.len_of(0)];
    vector
        .read_into(0, 0, &mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(out)
}
