//! byzagg: Byzantine-robust aggregation of distributed SGD gradients.
//!
//! A parameter server receives n gradients per step, up to f of them from
//! workers that are broken or malicious. byzagg aggregates them with Krum
//! (Blanchard et al., NeurIPS 2017) and the other robust rules, in WGSL
//! compute shaders on wgpu or on the CPU, and keeps an f64 reference that
//! checks both.
//!
//! ```
//! use byzagg::{Engine, Rule};
//! let grads: Vec<Vec<f32>> = vec![vec![1.0, 0.0], vec![1.1, 0.1], vec![0.9, 0.0], vec![50.0, -50.0]];
//! let engine = Engine::cpu();
//! let out = engine.aggregate(&Rule::Krum { f: 0 }, &grads)?;
//! assert_ne!(out.selected, vec![3]);
//! # Ok::<(), byzagg::Error>(())
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod cpu;
mod engine;
mod error;
pub mod gpu;
pub mod gradients;
pub mod io;
mod pipeline;
mod rule;
pub mod selftest;
pub mod stages;
pub mod train;
mod vectors;

pub use engine::{Aggregation, BackendKind, Engine};
pub use error::{Error, Result};
pub use gradients::GradientSource;
pub use rule::{PreAggregation, Rule, RuleParams, RULE_NAMES};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
