//! `byzagg train`: distributed SGD with Byzantine workers, accuracy curves per
//! rule and attack.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use byzagg::gpu::{AdapterFilter, GpuOptions};
use byzagg::train::{
    curves_csv, curves_svg, write_atomic, Dataset, Experiment, ModelKind, RunResult, Split,
    TrainConfig, DEFAULT_HIDDEN,
};
use byzagg::{Engine, RuleParams};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

/// The dataset to train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    /// UCI optical handwritten digits, 1,797 images of 8×8, embedded.
    Digits,
    /// MNIST IDX files from --data-dir.
    Mnist,
}

/// The aggregation backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendName {
    /// A hardware GPU if one exists, else the CPU.
    Auto,
    /// The fast CPU path.
    Cpu,
    /// A GPU adapter, software ones such as lavapipe included.
    Gpu,
}

/// Arguments of `byzagg train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Dataset: the embedded digits set, or MNIST read from --data-dir.
    #[arg(long, value_enum, default_value = "digits")]
    dataset: DatasetName,

    /// Folder holding the MNIST IDX files (t10k-images-idx3-ubyte and
    /// t10k-labels-idx1-ubyte, gzipped or not; train-* files are used too if
    /// present).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Model: multinomial logistic regression or a one-hidden-layer ReLU MLP.
    #[arg(long, default_value = "logreg", value_parser = ["logreg", "mlp"])]
    model: String,

    /// Width of the MLP's hidden layer.
    #[arg(long, default_value_t = DEFAULT_HIDDEN)]
    hidden: usize,

    /// Number of workers n, Byzantine ones included.
    #[arg(long, default_value_t = TrainConfig::default().workers)]
    workers: usize,

    /// Number of Byzantine workers f; every rule is built to tolerate f.
    #[arg(long, default_value_t = TrainConfig::default().byzantine)]
    byzantine: usize,

    /// Comma-separated attacks: none, gaussian, omniscient, sign-flip, alie,
    /// ipm, mimic, nan, label-flip.
    #[arg(long, value_delimiter = ',', default_value = "none,gaussian")]
    attacks: Vec<String>,

    /// Comma-separated rules: average (= mean), krum, multi-krum, median,
    /// trimmed-mean, bulyan, geometric-median, centered-clipping.
    #[arg(long, value_delimiter = ',', default_value = "average,krum,multi-krum")]
    rules: Vec<String>,

    /// Number of SGD steps.
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    steps: usize,

    /// Mini-batch size of every worker.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,

    /// Learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,

    /// Seed of the data split, shards, initial model, mini-batches and attack
    /// noise.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,

    /// Division of the training set among workers: iid, or by-label (sorted
    /// by class, non-iid).
    #[arg(long, default_value = "iid", value_parser = ["iid", "by-label"])]
    split: String,

    /// Replaces the attack's parameter: σ for gaussian (default 200), the
    /// factor for omniscient (100), z for alie (z_max from n and f), ε for
    /// ipm (0.1).
    #[arg(long, allow_negative_numbers = true)]
    attack_scale: Option<f64>,

    /// Evaluate test accuracy and training loss every this many steps.
    #[arg(long, default_value_t = TrainConfig::default().eval_every)]
    eval_every: usize,

    /// Clipping radius τ of centered-clipping (required by that rule).
    #[arg(long)]
    tau: Option<f64>,

    /// Number of gradients Multi-Krum averages (default n − f).
    #[arg(long)]
    multi_krum_m: Option<usize>,

    /// Aggregation backend.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendName,

    /// Output folder for curves.csv and curves.svg (created if missing).
    #[arg(long, value_name = "DIR", default_value = "train-out")]
    out: PathBuf,
}

impl TrainArgs {
    fn config(&self) -> anyhow::Result<TrainConfig> {
        let rule_params = RuleParams {
            m: self.multi_krum_m,
            tau: self.tau,
            ..RuleParams::default()
        };
        Ok(TrainConfig {
            model: ModelKind::from_name(&self.model, self.hidden)?,
            workers: self.workers,
            byzantine: self.byzantine,
            attacks: self.attacks.iter().map(|s| s.trim().to_string()).collect(),
            rules: self.rules.iter().map(|s| s.trim().to_string()).collect(),
            rule_params,
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            split: Split::from_name(&self.split)?,
            attack_scale: self.attack_scale,
            eval_every: self.eval_every,
            ..TrainConfig::default()
        })
    }

    fn dataset(&self) -> anyhow::Result<Dataset> {
        match (self.dataset, &self.data_dir) {
            (DatasetName::Digits, None) => Ok(Dataset::digits()),
            (DatasetName::Digits, Some(dir)) => anyhow::bail!(
                "--data-dir {} is only read for --dataset mnist; the digits set is embedded, so drop --data-dir or add --dataset mnist",
                dir.display()
            ),
            (DatasetName::Mnist, None) => anyhow::bail!(
                "--dataset mnist needs --data-dir DIR, a folder holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
            ),
            (DatasetName::Mnist, Some(dir)) => Ok(Dataset::mnist(dir)?),
        }
    }

    fn engine(&self) -> anyhow::Result<Engine> {
        Ok(match self.backend {
            BackendName::Auto => {
                super::common::auto_engine(&AdapterFilter::from_env(), GpuOptions::default())?
            }
            BackendName::Cpu => Engine::cpu(),
            BackendName::Gpu => Engine::gpu()?,
        })
    }
}

/// Runs `byzagg train`.
pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let data = args.dataset()?;
    let experiment = Experiment::new(config, &data)?;
    let engine = args.engine()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("failed to create the output folder {}", args.out.display()))?;

    let config = experiment.config();
    let (train_len, test_len) = experiment.split_sizes();
    let model_name = match config.model {
        ModelKind::LogReg => "logreg".to_string(),
        ModelKind::Mlp { hidden } => format!("mlp (hidden {hidden})"),
    };
    eprintln!(
        "{}: {train_len} train / {test_len} test examples; {model_name}, d = {}; n = {}, f = {}; {} steps of batch {}; backend {}",
        data.name,
        experiment.model().num_params(),
        config.workers,
        config.byzantine,
        config.steps,
        config.batch_size,
        engine.adapter().unwrap_or_else(|| engine.kind().name().to_string()),
    );

    let started = Instant::now();
    let style = ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {elapsed} {msg}")
        .expect("the progress template is valid")
        .progress_chars("=> ");
    let mut results = Vec::with_capacity(experiment.runs().len());
    for (index, spec) in experiment.runs().iter().enumerate() {
        let bar = ProgressBar::new(config.steps as u64)
            .with_style(style.clone())
            .with_prefix(format!("{} / {}", spec.rule_name, spec.attack.name()));
        let result = experiment.run(&engine, index, &mut |_| bar.inc(1))?;
        bar.finish_with_message(format!("accuracy {:.3}", result.final_accuracy()));
        results.push(result);
    }
    let elapsed = started.elapsed();

    let csv_path = args.out.join("curves.csv");
    let svg_path = args.out.join("curves.svg");
    write_atomic(&csv_path, curves_csv(&results).as_bytes())?;
    let title = format!(
        "{} · {} · n = {}, f = {} · batch {} · lr {}",
        data.name, model_name, config.workers, config.byzantine, config.batch_size, config.lr
    );
    write_atomic(&svg_path, curves_svg(&results, &title).as_bytes())?;

    print_summary(&results);
    eprintln!(
        "trained {} runs in {:.1} s; wrote {} and {}",
        results.len(),
        elapsed.as_secs_f64(),
        csv_path.display(),
        svg_path.display()
    );
    Ok(())
}

fn print_summary(results: &[RunResult]) {
    // The note column, which gives the step where a run diverged, appears
    // only when one did.
    let notes = results.iter().any(|r| r.diverged_at.is_some());
    let header = format!(
        "{:<18} {:<11} {:>9} {:>9} {:>17}",
        "rule", "attack", "final acc", "best acc", "aggregation (s)"
    );
    println!("{}", if notes { header + "  note" } else { header });
    for result in results {
        let note = match result.diverged_at {
            Some(step) => format!("  diverged at step {step}"),
            None => String::new(),
        };
        println!(
            "{:<18} {:<11} {:>9.4} {:>9.4} {:>17.3}{note}",
            result.rule,
            result.attack,
            result.final_accuracy(),
            result.best_accuracy(),
            result.aggregation_time.as_secs_f64(),
        );
    }
}
