//! Aggregation rules, their parameters and the checks on n, f and m.

use crate::{Error, Result};

/// A robust aggregation rule and its parameters.
///
/// Every rule carries `f`, the number of Byzantine workers it tolerates, which
/// is also the number of non-finite (NaN or ±Inf) workers it accepts: more
/// than `f` of them is [`Error::TooManyNonFinite`].
///
/// # Accuracy between backends
///
/// The CPU and GPU backends compute in f32 with f64 accumulation, and the
/// reference ([`crate::Engine::reference`]) in f64. Their distances agree
/// within a relative 1e-4 of the reference, with an absolute floor of
/// 1e-6 · (|x_i|² + |x_j|²), and so do the Krum scores built from them.
/// Ties go to the lowest worker index on each backend's own scores, so the
/// backends select the same workers whenever the reference's scores are
/// further apart than that tolerance. Scores closer than that, such as two
/// workers the reference ties exactly, may be ordered differently by
/// rounding, and the backends may then select different workers.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// Arithmetic mean of the finite workers: the non-robust baseline.
    Mean {
        /// Number of non-finite workers tolerated (they are dropped).
        f: usize,
    },
    /// Krum: the gradient whose n − f − 2 nearest neighbours are closest.
    /// Requires n > 2f + 2.
    Krum {
        /// Number of Byzantine workers tolerated.
        f: usize,
    },
    /// Multi-Krum: the mean of the `m` gradients with the lowest Krum scores.
    /// Requires n > 2f + 2 and 1 ≤ m ≤ n.
    MultiKrum {
        /// Number of Byzantine workers tolerated.
        f: usize,
        /// Number of gradients averaged; the Krum paper uses m = n − f.
        m: usize,
    },
    /// Coordinate-wise median; the mean of the two middle values for an even
    /// count.
    Median {
        /// Number of non-finite workers tolerated (they are dropped).
        f: usize,
    },
    /// Coordinate-wise trimmed mean: per coordinate drop the f largest and f
    /// smallest values and average the rest. Requires n > 2f.
    TrimmedMean {
        /// Number of values trimmed at each end.
        f: usize,
    },
    /// Bulyan: θ = n − 2f workers chosen by iterated Krum, then per coordinate
    /// the mean of the β = θ − 2f values closest to the median. Requires
    /// n ≥ 4f + 3.
    Bulyan {
        /// Number of Byzantine workers tolerated.
        f: usize,
    },
    /// Geometric median by smoothed Weiszfeld iterations started from the
    /// mean, with weights 1 / max(ν, |z − x_i|).
    GeometricMedian {
        /// Number of non-finite workers tolerated (they are dropped).
        f: usize,
        /// Smoothing ν > 0 of the Weiszfeld weights.
        nu: f64,
        /// Maximum number of iterations.
        max_iters: usize,
        /// Stop when |z_{t+1} − z_t| ≤ tol · |z_t|.
        tol: f64,
    },
    /// Centered clipping: v ← v + mean_i clip(x_i − v, τ), `iters` times.
    CenteredClipping {
        /// Number of non-finite workers tolerated (they are dropped).
        f: usize,
        /// Clipping radius τ > 0.
        tau: f64,
        /// Number of iterations L ≥ 1.
        iters: usize,
        /// Starting point v_0, usually the previous aggregate; zeros if `None`.
        center: Option<Vec<f32>>,
    },
}

/// A pre-aggregation step applied to the gradients before the rule.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreAggregation {
    /// Nearest-neighbour mixing: each x_i becomes the mean of its n − f
    /// nearest vectors, itself included, ties by lowest index.
    Nnm,
}

impl Rule {
    /// Default smoothing of the geometric median.
    pub const DEFAULT_NU: f64 = 1e-6;
    /// Default iteration cap of the geometric median.
    pub const DEFAULT_MAX_ITERS: usize = 100;
    /// Default relative tolerance of the geometric median.
    pub const DEFAULT_TOL: f64 = 1e-6;

    /// Name of the rule as used on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Mean { .. } => "mean",
            Rule::Krum { .. } => "krum",
            Rule::MultiKrum { .. } => "multi-krum",
            Rule::Median { .. } => "median",
            Rule::TrimmedMean { .. } => "trimmed-mean",
            Rule::Bulyan { .. } => "bulyan",
            Rule::GeometricMedian { .. } => "geometric-median",
            Rule::CenteredClipping { .. } => "centered-clipping",
        }
    }

    /// Number of Byzantine (and non-finite) workers the rule tolerates.
    pub fn f(&self) -> usize {
        match *self {
            Rule::Mean { f }
            | Rule::Krum { f }
            | Rule::MultiKrum { f, .. }
            | Rule::Median { f }
            | Rule::TrimmedMean { f }
            | Rule::Bulyan { f }
            | Rule::GeometricMedian { f, .. }
            | Rule::CenteredClipping { f, .. } => f,
        }
    }

    /// The smallest number of workers the rule accepts for its f, with the
    /// requirement in words.
    pub fn min_workers(&self) -> (usize, &'static str) {
        let f = self.f();
        match self {
            Rule::Krum { .. } | Rule::MultiKrum { .. } => (2 * f + 3, "n > 2f + 2"),
            Rule::TrimmedMean { .. } => (2 * f + 1, "n > 2f"),
            Rule::Bulyan { .. } => (4 * f + 3, "n ≥ 4f + 3"),
            Rule::Mean { .. }
            | Rule::Median { .. }
            | Rule::GeometricMedian { .. }
            | Rule::CenteredClipping { .. } => (f + 1, "n > f"),
        }
    }

    /// Checks the rule's parameters against n workers of dimension d.
    pub fn validate(&self, n: usize, d: usize) -> Result<()> {
        let (min_n, requirement) = self.min_workers();
        if n < min_n {
            return Err(Error::TooFewWorkers {
                rule: self.name(),
                requirement,
                n,
                f: self.f(),
                min_n,
            });
        }
        let rule = self.name();
        match self {
            Rule::MultiKrum { m, .. } if *m == 0 || *m > n => Err(Error::InvalidParameter {
                rule,
                name: "m",
                value: m.to_string(),
                fix: format!("choose m in 1..={n}, the number of workers"),
            }),
            Rule::GeometricMedian {
                nu, max_iters, tol, ..
            } => {
                if !(nu.is_finite() && *nu > 0.0) {
                    return Err(invalid(
                        rule,
                        "nu",
                        nu,
                        "choose a finite nu > 0, for example 1e-6",
                    ));
                }
                if *max_iters == 0 {
                    return Err(invalid(
                        rule,
                        "max-iters",
                        max_iters,
                        "choose at least 1 iteration",
                    ));
                }
                if !(tol.is_finite() && *tol >= 0.0) {
                    return Err(invalid(
                        rule,
                        "tol",
                        tol,
                        "choose a finite tol ≥ 0, for example 1e-6",
                    ));
                }
                Ok(())
            }
            Rule::CenteredClipping {
                tau, iters, center, ..
            } => {
                if !(tau.is_finite() && *tau > 0.0) {
                    return Err(invalid(
                        rule,
                        "tau",
                        tau,
                        "choose a finite clipping radius tau > 0",
                    ));
                }
                if *iters == 0 {
                    return Err(invalid(rule, "iters", iters, "choose at least 1 iteration"));
                }
                if let Some(center) = center {
                    if center.len() != d {
                        return Err(invalid(
                            rule,
                            "center",
                            format!("of length {}", center.len()),
                            &format!("the center must have the gradients' length d = {d}"),
                        ));
                    }
                    if let Some(c) = center.iter().position(|v| !v.is_finite()) {
                        return Err(invalid(
                            rule,
                            "center",
                            format!("with {} at coordinate {c}", center[c]),
                            "the center must be finite",
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Rule {
    /// Checks the rule's requirement on n against the workers left once
    /// `non_finite` (of n) are dropped, for the rules that drop them.
    pub(crate) fn validate_finite(&self, n: usize, non_finite: &[usize], d: usize) -> Result<()> {
        let finite = n - non_finite.len();
        self.validate(finite, d).map_err(|error| match error {
            Error::TooFewWorkers {
                rule,
                requirement,
                f,
                min_n,
                ..
            } => Error::TooFewFiniteWorkers {
                rule,
                requirement,
                n,
                finite,
                non_finite: non_finite.to_vec(),
                f,
                min_n,
            },
            other => other,
        })
    }
}

fn invalid(rule: &'static str, name: &'static str, value: impl ToString, fix: &str) -> Error {
    Error::InvalidParameter {
        rule,
        name,
        value: value.to_string(),
        fix: fix.to_string(),
    }
}

/// Optional parameters of the rules, with the defaults of the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleParams {
    /// Multi-Krum's m; `None` means n − f.
    pub m: Option<usize>,
    /// Geometric median smoothing ν.
    pub nu: f64,
    /// Geometric median iteration cap.
    pub max_iters: usize,
    /// Geometric median relative tolerance.
    pub tol: f64,
    /// Centered clipping radius τ; required by that rule.
    pub tau: Option<f64>,
    /// Centered clipping iterations.
    pub iters: usize,
    /// Centered clipping starting point; zeros if `None`.
    pub center: Option<Vec<f32>>,
}

impl Default for RuleParams {
    fn default() -> Self {
        Self {
            m: None,
            nu: Rule::DEFAULT_NU,
            max_iters: Rule::DEFAULT_MAX_ITERS,
            tol: Rule::DEFAULT_TOL,
            tau: None,
            iters: 1,
            center: None,
        }
    }
}

/// Rule names accepted by [`Rule::from_name`], as on the command line.
pub const RULE_NAMES: &[&str] = &[
    "mean",
    "krum",
    "multi-krum",
    "median",
    "trimmed-mean",
    "bulyan",
    "geometric-median",
    "centered-clipping",
];

impl Rule {
    /// Builds the rule called `name` (see [`RULE_NAMES`]; `average` is an alias
    /// of `mean`) for n workers, f of them Byzantine.
    pub fn from_name(name: &str, f: usize, n: usize, params: &RuleParams) -> Result<Rule> {
        let rule = match name {
            "mean" | "average" => Rule::Mean { f },
            "krum" => Rule::Krum { f },
            "multi-krum" => Rule::MultiKrum {
                f,
                m: params.m.unwrap_or(n.saturating_sub(f)),
            },
            "median" => Rule::Median { f },
            "trimmed-mean" => Rule::TrimmedMean { f },
            "bulyan" => Rule::Bulyan { f },
            "geometric-median" => Rule::GeometricMedian {
                f,
                nu: params.nu,
                max_iters: params.max_iters,
                tol: params.tol,
            },
            "centered-clipping" => Rule::CenteredClipping {
                f,
                tau: params.tau.ok_or_else(|| Error::MissingParameter {
                    rule: "centered-clipping",
                    name: "tau",
                    fix: "pass the clipping radius with --tau, for example --tau 10".to_string(),
                })?,
                iters: params.iters,
                center: params.center.clone(),
            },
            other => {
                return Err(Error::UnknownRule {
                    name: other.to_string(),
                })
            }
        };
        Ok(rule)
    }
}
