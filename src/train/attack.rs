//! What the f Byzantine workers send.
//!
//! The attacker is omniscient: at each step it reads the gradients of every
//! honest worker before it crafts its own. Attacks that work through the data
//! ([`Attack::None`], [`Attack::LabelFlip`]) have the Byzantine workers
//! compute gradients on their own shard instead.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::{Error, Result};

/// A Byzantine behaviour and its parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    /// No attack: the f workers compute honest gradients on their shard.
    None,
    /// Independent N(0, σ²) noise per coordinate and per Byzantine worker.
    Gaussian {
        /// Standard deviation σ.
        sigma: f64,
    },
    /// −factor × the honest mean.
    Omniscient {
        /// The multiplier of the negated mean.
        factor: f64,
    },
    /// −1 × the honest mean.
    SignFlip,
    /// "A Little Is Enough" (Baruch et al., NeurIPS 2019): per coordinate
    /// μ − z σ, with μ and σ the mean and standard deviation of the honest
    /// gradients.
    Alie {
        /// The number of standard deviations z.
        z: f64,
    },
    /// Inner-product manipulation (Xie et al., UAI 2019): −ε × the honest
    /// mean.
    Ipm {
        /// The factor ε.
        epsilon: f64,
    },
    /// Every Byzantine worker sends a copy of honest worker 0's gradient.
    Mimic,
    /// Every coordinate is NaN.
    Nan,
    /// Honest gradients computed on the Byzantine workers' own shards with
    /// each label l replaced by classes − 1 − l (9 − l for digits).
    LabelFlip,
}

/// Attack names accepted by [`Attack::from_name`], as on the command line.
pub const ATTACK_NAMES: &[&str] = &[
    "none",
    "gaussian",
    "omniscient",
    "sign-flip",
    "alie",
    "ipm",
    "mimic",
    "nan",
    "label-flip",
];

/// Standard deviation of the Gaussian attack; 200 as in the Krum paper
/// (Blanchard et al., NeurIPS 2017).
pub const DEFAULT_GAUSSIAN_SIGMA: f64 = 200.0;
/// Multiplier of the omniscient attack.
pub const DEFAULT_OMNISCIENT_FACTOR: f64 = 100.0;
/// ε of the inner-product manipulation attack; 0.1 as in Xie et al. (2019).
pub const DEFAULT_IPM_EPSILON: f64 = 0.1;

impl Attack {
    /// Returns the attack called `name` (see [`ATTACK_NAMES`]) against `n` workers of
    /// which `f` are Byzantine. `scale`, when given, replaces the parameter of
    /// the attacks that have one (σ, factor, z or ε) and is ignored by the
    /// others.
    pub fn from_name(name: &str, n: usize, f: usize, scale: Option<f64>) -> Result<Self> {
        if let Some(scale) = scale {
            if !scale.is_finite() {
                return Err(Error::InvalidConfig {
                    name: "attack-scale",
                    value: scale.to_string(),
                    fix: "choose a finite number".to_string(),
                });
            }
        }
        let attack = match name {
            "none" => Attack::None,
            "gaussian" => Attack::Gaussian {
                sigma: scale.unwrap_or(DEFAULT_GAUSSIAN_SIGMA),
            },
            "omniscient" => Attack::Omniscient {
                factor: scale.unwrap_or(DEFAULT_OMNISCIENT_FACTOR),
            },
            "sign-flip" => Attack::SignFlip,
            "alie" => Attack::Alie {
                z: match scale {
                    Some(z) => z,
                    None => alie_z(n, f)?,
                },
            },
            "ipm" => Attack::Ipm {
                epsilon: scale.unwrap_or(DEFAULT_IPM_EPSILON),
            },
            "mimic" => Attack::Mimic,
            "nan" => Attack::Nan,
            "label-flip" => Attack::LabelFlip,
            other => {
                return Err(Error::InvalidConfig {
                    name: "attack",
                    value: other.to_string(),
                    fix: format!("choose one of {}", ATTACK_NAMES.join(", ")),
                })
            }
        };
        if let Attack::Gaussian { sigma } = attack {
            if sigma < 0.0 {
                return Err(Error::InvalidConfig {
                    name: "attack-scale",
                    value: sigma.to_string(),
                    fix: "the Gaussian attack's standard deviation must be ≥ 0".to_string(),
                });
            }
        }
        Ok(attack)
    }

    /// Name as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::Gaussian { .. } => "gaussian",
            Attack::Omniscient { .. } => "omniscient",
            Attack::SignFlip => "sign-flip",
            Attack::Alie { .. } => "alie",
            Attack::Ipm { .. } => "ipm",
            Attack::Mimic => "mimic",
            Attack::Nan => "nan",
            Attack::LabelFlip => "label-flip",
        }
    }

    /// Returns the label a Byzantine worker trains on in place of `label`, or `None`
    /// when this attack does not work through the data.
    pub fn label_map(&self, label: usize, classes: usize) -> Option<usize> {
        match self {
            Attack::None => Some(label),
            Attack::LabelFlip => Some(classes - 1 - label),
            _ => None,
        }
    }

    /// Returns whether the Byzantine workers compute gradients on their own shard
    /// (through [`Attack::label_map`]) rather than through [`Attack::craft`].
    pub fn uses_data(&self) -> bool {
        matches!(self, Attack::None | Attack::LabelFlip)
    }

    /// Crafts the `f` gradients the Byzantine workers send from the honest
    /// gradients of this step, each of the honest length. Returns `None` for
    /// the attacks that work through the data. `honest` must contain at
    /// least one gradient.
    pub fn craft<R: Rng + ?Sized>(
        &self,
        honest: &[Vec<f32>],
        f: usize,
        rng: &mut R,
    ) -> Option<Vec<Vec<f32>>> {
        let d = honest.first().map_or(0, Vec::len);
        let repeat = |v: Vec<f32>| Some(vec![v; f]);
        match *self {
            Attack::None | Attack::LabelFlip => None,
            Attack::Gaussian { sigma } => {
                let normal =
                    Normal::new(0.0, sigma).expect("sigma is checked to be finite and ≥ 0");
                Some(
                    (0..f)
                        .map(|_| (0..d).map(|_| normal.sample(rng) as f32).collect())
                        .collect(),
                )
            }
            Attack::Omniscient { factor } => repeat(scaled_mean(honest, -factor)),
            Attack::SignFlip => repeat(scaled_mean(honest, -1.0)),
            Attack::Ipm { epsilon } => repeat(scaled_mean(honest, -epsilon)),
            Attack::Alie { z } => {
                let (mean, std) = mean_and_std(honest);
                repeat(
                    mean.iter()
                        .zip(&std)
                        .map(|(m, s)| (m - z * s) as f32)
                        .collect(),
                )
            }
            Attack::Mimic => repeat(honest.first().cloned().unwrap_or_default()),
            Attack::Nan => repeat(vec![f32::NAN; d]),
        }
    }
}

/// `factor` × the coordinate-wise mean of `grads`, accumulated in f64.
fn scaled_mean(grads: &[Vec<f32>], factor: f64) -> Vec<f32> {
    let (mean, _) = mean_and_std(grads);
    mean.iter().map(|m| (factor * m) as f32).collect()
}

/// Coordinate-wise mean and population standard deviation (dividing by the
/// count, not count − 1) of `grads`, in f64.
pub fn mean_and_std(grads: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let d = grads.first().map_or(0, Vec::len);
    let count = grads.len() as f64;
    let mut mean = vec![0f64; d];
    for g in grads {
        for (m, &v) in mean.iter_mut().zip(g) {
            *m += v as f64 / count;
        }
    }
    let mut variance = vec![0f64; d];
    for g in grads {
        for ((s, &v), m) in variance.iter_mut().zip(g).zip(&mean) {
            *s += (v as f64 - m).powi(2) / count;
        }
    }
    (mean, variance.into_iter().map(f64::sqrt).collect())
}

/// ALIE's z_max for n workers of which f are Byzantine (Baruch et al. 2019):
/// s = ⌊n/2 + 1⌋ − f honest workers must be won over, and
/// z = Φ⁻¹((n − s) / n) with Φ the standard normal CDF.
pub fn alie_z(n: usize, f: usize) -> Result<f64> {
    let s = (n / 2 + 1) as f64 - f as f64;
    let p = (n as f64 - s) / n as f64;
    if !(p > 0.0 && p < 1.0) {
        return Err(Error::InvalidConfig {
            name: "attack",
            value: "alie".to_string(),
            fix: format!(
                "z_max = Φ⁻¹({p}) is infinite for n = {n} and f = {f}; \
                 choose f < ⌊n/2 + 1⌋ or give z with --attack-scale"
            ),
        });
    }
    Ok(inverse_normal_cdf(p))
}

/// Φ⁻¹(p) for 0 < p < 1, by P. J. Acklam's rational approximation
/// (relative error below 1.2e-9).
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    const P_LOW: f64 = 0.02425;

    // The tails share one formula in q = sqrt(−2 ln p), mirrored for p > 1/2.
    let tail = |p: f64| {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail(p)
    } else if p > 1.0 - P_LOW {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}
