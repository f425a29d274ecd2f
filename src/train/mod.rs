//! The Byzantine SGD simulation: data, models, attacks and the training loop.
//!
//! n workers each own a shard of the training set. At every step the n − f
//! honest workers (indices 0..n − f) send mini-batch gradients of the current
//! model, and the f Byzantine workers (indices n − f..n) send what their
//! [`Attack`] crafts. The [`crate::Engine`] aggregates the n vectors with a
//! [`crate::Rule`], and the server takes the SGD step w ← w − lr · aggregate.
//!
//! ```no_run
//! use byzagg::train::{Dataset, Experiment, TrainConfig};
//! use byzagg::Engine;
//! let experiment = Experiment::new(TrainConfig::default(), &Dataset::digits())?;
//! let engine = Engine::cpu();
//! for index in 0..experiment.runs().len() {
//!     let result = experiment.run(&engine, index, &mut |_step| {})?;
//!     println!("{} / {}: {:.3}", result.rule, result.attack, result.final_accuracy());
//! }
//! # Ok::<(), byzagg::Error>(())
//! ```

mod attack;
mod data;
pub mod idx;
mod model;
mod report;
mod sim;

pub use attack::{
    alie_z, inverse_normal_cdf, mean_and_std, Attack, ATTACK_NAMES, DEFAULT_GAUSSIAN_SIGMA,
    DEFAULT_IPM_EPSILON, DEFAULT_OMNISCIENT_FACTOR,
};
pub use data::{shard, Dataset, Split};
pub use model::{Evaluation, Model, ModelKind};
pub use report::{curves_csv, curves_svg, write_atomic, CSV_HEADER};
pub use sim::{
    CurvePoint, Experiment, RunResult, RunSpec, TrainConfig, DEFAULT_HIDDEN, LOSS_SAMPLE_MAX,
};
