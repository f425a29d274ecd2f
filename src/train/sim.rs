//! The simulated parameter server: n workers, f of them Byzantine, one
//! aggregation per step through an [`Engine`].

use std::time::{Duration, Instant};

use ndarray::Axis;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

use crate::{Aggregation, Engine, Error, Result, Rule, RuleParams, RULE_NAMES};

use super::attack::Attack;
use super::data::{shard, Dataset, Split};
use super::model::{Evaluation, Model, ModelKind};

/// Settings of a training experiment; [`Default`] gives the command line's
/// defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The classifier.
    pub model: ModelKind,
    /// Number of workers n, Byzantine ones included.
    pub workers: usize,
    /// Number of Byzantine workers f; also the f every rule is built with.
    pub byzantine: usize,
    /// Attack names (see [`super::ATTACK_NAMES`]), one run per rule and attack.
    pub attacks: Vec<String>,
    /// Rule names (see [`RULE_NAMES`]; `average` is accepted for `mean`).
    pub rules: Vec<String>,
    /// Optional rule parameters (Multi-Krum's m, centered clipping's τ, …).
    pub rule_params: RuleParams,
    /// Number of SGD steps T.
    pub steps: usize,
    /// Mini-batch size of every worker.
    pub batch_size: usize,
    /// Learning rate of the update w ← w − lr · aggregate.
    pub lr: f64,
    /// Seed of the split, the shards, the initial model, the mini-batches and
    /// the attack noise.
    pub seed: u64,
    /// Division of the training set among the workers.
    pub split: Split,
    /// Replaces the parameter of the attacks that have one.
    pub attack_scale: Option<f64>,
    /// Evaluate every this many steps (and after step 0 and the last step).
    pub eval_every: usize,
    /// Fraction of the data held out for testing.
    pub test_fraction: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelKind::LogReg,
            workers: 20,
            byzantine: 6,
            attacks: vec!["none".to_string(), "gaussian".to_string()],
            rules: ["average", "krum", "multi-krum"].map(String::from).to_vec(),
            rule_params: RuleParams::default(),
            steps: 500,
            batch_size: 16,
            lr: 0.5,
            seed: 1,
            split: Split::Iid,
            attack_scale: None,
            eval_every: 10,
            test_fraction: 0.2,
        }
    }
}

/// Default width of the MLP's hidden layer.
pub const DEFAULT_HIDDEN: usize = 64;

/// The training loss is measured on at most this many training examples (the
/// first ones of the shuffled training set), to bound its cost on large sets.
pub const LOSS_SAMPLE_MAX: usize = 10_000;

/// One rule against one attack.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// The rule's name as the user gave it (for example `average`).
    pub rule_name: String,
    /// The rule.
    pub rule: Rule,
    /// The attack.
    pub attack: Attack,
}

/// One evaluation of the model during a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Number of SGD steps taken, 0 for the initial model.
    pub step: usize,
    /// Fraction of the test set classified correctly, in [0, 1].
    pub test_accuracy: f64,
    /// Mean cross-entropy on the training set (at most [`LOSS_SAMPLE_MAX`]
    /// examples).
    pub train_loss: f64,
}

/// The outcome of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// The rule's name as the user gave it.
    pub rule: String,
    /// The attack's name.
    pub attack: String,
    /// Evaluations, by increasing step.
    pub curve: Vec<CurvePoint>,
    /// Wall time spent in [`Engine::aggregate_into`], summed over the steps.
    pub aggregation_time: Duration,
    /// The step at which the honest gradients or the parameters became
    /// non-finite, after which the model is frozen; `None` if training never
    /// diverged.
    pub diverged_at: Option<usize>,
}

impl RunResult {
    /// Test accuracy after the last step.
    pub fn final_accuracy(&self) -> f64 {
        self.curve.last().map_or(0.0, |p| p.test_accuracy)
    }

    /// Highest test accuracy seen during the run.
    pub fn best_accuracy(&self) -> f64 {
        self.curve
            .iter()
            .map(|p| p.test_accuracy)
            .fold(0.0, f64::max)
    }
}

/// Seed streams, so that each random choice draws from its own generator.
const STREAM_SHARDS: u64 = 1;
const STREAM_INIT: u64 = 2;
const STREAM_ATTACK: u64 = 3;
const STREAM_WORKERS: u64 = 1_000;

fn derive_seed(seed: u64, stream: u64) -> u64 {
    seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A validated experiment: the split data, the shards, the initial model and
/// the list of rule × attack runs.
pub struct Experiment {
    config: TrainConfig,
    train: Dataset,
    test: Dataset,
    loss_sample: Dataset,
    model: Model,
    shards: Vec<Vec<usize>>,
    init: Vec<f32>,
    runs: Vec<RunSpec>,
}

fn invalid(name: &'static str, value: impl ToString, fix: impl Into<String>) -> Error {
    Error::InvalidConfig {
        name,
        value: value.to_string(),
        fix: fix.into(),
    }
}

impl Experiment {
    /// Checks `config` against `data` and prepares every run; fails on any
    /// invalid option, rule or attack before training starts.
    pub fn new(config: TrainConfig, data: &Dataset) -> Result<Self> {
        check_config(&config)?;
        let (n, f) = (config.workers, config.byzantine);

        let (train, test) = data.split(config.test_fraction, config.seed);
        if test.is_empty() || train.len() < n {
            return Err(invalid(
                "workers",
                n,
                format!(
                    "the {} training and {} test examples cannot give every worker one example; \
                     choose at most {} workers",
                    train.len(),
                    test.len(),
                    train.len()
                ),
            ));
        }
        let model = Model::new(config.model, data.dim(), data.classes);
        let d = model.num_params();

        let mut rules = Vec::with_capacity(config.rules.len());
        for name in &config.rules {
            if name != "average" && !RULE_NAMES.contains(&name.as_str()) {
                return Err(invalid(
                    "rule",
                    name,
                    format!("choose one of average, {}", RULE_NAMES.join(", ")),
                ));
            }
            let rule = Rule::from_name(name, f, n, &config.rule_params)?;
            rule.validate(n, d)?;
            rules.push((name.clone(), rule));
        }
        let mut attacks = Vec::with_capacity(config.attacks.len());
        for name in &config.attacks {
            attacks.push(Attack::from_name(name, n, f, config.attack_scale)?);
        }
        let runs = attacks
            .iter()
            .flat_map(|&attack| {
                rules.iter().map(move |(rule_name, rule)| RunSpec {
                    rule_name: rule_name.clone(),
                    rule: rule.clone(),
                    attack,
                })
            })
            .collect();

        let shards = shard(
            &train.labels,
            n,
            config.split,
            derive_seed(config.seed, STREAM_SHARDS),
        );
        let loss_sample = train.select(&(0..train.len().min(LOSS_SAMPLE_MAX)).collect::<Vec<_>>());
        let init = model.init(derive_seed(config.seed, STREAM_INIT));
        Ok(Self {
            config,
            train,
            test,
            loss_sample,
            model,
            shards,
            init,
            runs,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Returns the model being trained.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Sizes of the (train, test) parts of the split.
    pub fn split_sizes(&self) -> (usize, usize) {
        (self.train.len(), self.test.len())
    }

    /// Returns the rule × attack runs, grouped by attack.
    pub fn runs(&self) -> &[RunSpec] {
        &self.runs
    }

    fn evaluate(&self, step: usize, params: &[f32]) -> CurvePoint {
        let Evaluation { accuracy, .. } =
            self.model
                .evaluate(params, self.test.features.view(), &self.test.labels);
        let train = self.model.evaluate(
            params,
            self.loss_sample.features.view(),
            &self.loss_sample.labels,
        );
        CurvePoint {
            step,
            test_accuracy: accuracy,
            train_loss: train.loss,
        }
    }

    /// Computes the mini-batch gradient of `worker` at `params`, with its
    /// labels passed through `label_map`.
    fn worker_gradient(
        &self,
        worker: usize,
        params: &[f32],
        rng: &mut StdRng,
        label_map: impl Fn(usize) -> usize,
    ) -> Vec<f32> {
        let shard = &self.shards[worker];
        // Sampling with replacement, so any batch size works on any shard.
        let batch: Vec<usize> = (0..self.config.batch_size)
            .map(|_| shard[rng.random_range(0..shard.len())])
            .collect();
        let x = self.train.features.select(Axis(0), &batch);
        let labels: Vec<usize> = batch
            .iter()
            .map(|&i| label_map(self.train.labels[i]))
            .collect();
        self.model.loss_and_gradient(params, x.view(), &labels).1
    }

    /// Runs the `index`-th rule × attack pair on `engine`, calling
    /// `on_step(step)` after each SGD step.
    pub fn run(
        &self,
        engine: &Engine,
        index: usize,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<RunResult> {
        let spec = &self.runs[index];
        let (n, f) = (self.config.workers, self.config.byzantine);
        let honest_count = n - f;
        let classes = self.train.classes;
        let seed = self.config.seed;

        let mut params = self.init.clone();
        // Every run draws the same mini-batches for the same worker and step.
        let mut worker_rngs: Vec<StdRng> = (0..n as u64)
            .map(|w| StdRng::seed_from_u64(derive_seed(seed, STREAM_WORKERS + w)))
            .collect();
        let mut attack_rng = StdRng::seed_from_u64(derive_seed(seed, STREAM_ATTACK));
        let mut rule = spec.rule.clone();
        let mut aggregation_time = Duration::ZERO;
        // Kept across steps, so that each step writes into the same memory.
        let mut aggregate = Aggregation::default();
        let mut diverged_at = None;
        let mut curve = vec![self.evaluate(0, &params)];

        for step in 1..=self.config.steps {
            if diverged_at.is_none() {
                let (honest_rngs, byzantine_rngs) = worker_rngs.split_at_mut(honest_count);
                let honest: Vec<Vec<f32>> = honest_rngs
                    .par_iter_mut()
                    .enumerate()
                    .map(|(w, rng)| self.worker_gradient(w, &params, rng, |l| l))
                    .collect();
                if honest.iter().flatten().any(|v| !v.is_finite()) {
                    diverged_at = Some(step);
                } else {
                    let byzantine = match spec.attack.craft(&honest, f, &mut attack_rng) {
                        Some(crafted) => crafted,
                        None => byzantine_rngs
                            .par_iter_mut()
                            .enumerate()
                            .map(|(b, rng)| {
                                let label_map = |l| spec.attack.label_map(l, classes).unwrap_or(l);
                                self.worker_gradient(honest_count + b, &params, rng, label_map)
                            })
                            .collect(),
                    };
                    let mut grads = honest;
                    grads.extend(byzantine);

                    let start = Instant::now();
                    engine.aggregate_into(&rule, None, &grads, &mut aggregate)?;
                    aggregation_time += start.elapsed();

                    let lr = self.config.lr as f32;
                    for (p, g) in params.iter_mut().zip(&aggregate.vector) {
                        *p -= lr * g;
                    }
                    if params.iter().any(|p| !p.is_finite()) {
                        diverged_at = Some(step);
                    }
                    // Centered clipping starts each step from the previous
                    // aggregate, as Karimireddy et al. (2021) do with momentum.
                    if let Rule::CenteredClipping { center, .. } = &mut rule {
                        *center = Some(aggregate.vector.clone());
                    }
                }
            }
            if step % self.config.eval_every == 0 || step == self.config.steps {
                curve.push(self.evaluate(step, &params));
            }
            on_step(step);
        }

        Ok(RunResult {
            rule: spec.rule_name.clone(),
            attack: spec.attack.name().to_string(),
            curve,
            aggregation_time,
            diverged_at,
        })
    }
}

fn check_config(config: &TrainConfig) -> Result<()> {
    let (n, f) = (config.workers, config.byzantine);
    if n == 0 {
        return Err(invalid("workers", n, "choose at least 1 worker"));
    }
    if f >= n {
        return Err(invalid(
            "byzantine",
            f,
            format!("at least one of the {n} workers must be honest; choose f < {n}"),
        ));
    }
    if config.steps == 0 {
        return Err(invalid("steps", 0, "choose at least 1 step"));
    }
    if config.batch_size == 0 {
        return Err(invalid(
            "batch-size",
            0,
            "choose a batch size of at least 1",
        ));
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return Err(invalid(
            "lr",
            config.lr,
            "choose a finite learning rate > 0, for example 0.1",
        ));
    }
    if config.eval_every == 0 {
        return Err(invalid("eval-every", 0, "evaluate every 1 or more steps"));
    }
    if !(config.test_fraction > 0.0 && config.test_fraction < 1.0) {
        return Err(invalid(
            "test-fraction",
            config.test_fraction,
            "choose a fraction strictly between 0 and 1",
        ));
    }
    if config.rules.is_empty() {
        return Err(invalid(
            "rules",
            "an empty list",
            format!("choose one or more of {}", RULE_NAMES.join(", ")),
        ));
    }
    if config.attacks.is_empty() {
        return Err(invalid(
            "attacks",
            "an empty list",
            format!("choose one or more of {}", super::ATTACK_NAMES.join(", ")),
        ));
    }
    Ok(())
}
