//! Classifiers trained by the simulation, with analytic gradients.
//!
//! Parameters are one flat f32 vector, the vector a worker sends. Layouts,
//! every matrix row-major:
//! - logistic regression: W (inputs × classes), then b (classes);
//! - MLP: W1 (inputs × hidden), b1 (hidden), W2 (hidden × classes), b2
//!   (classes), with a ReLU after the hidden layer.
//!
//! The loss is the mean softmax cross-entropy over the batch.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::{Error, Result};

/// Kind of classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Multinomial logistic regression.
    LogReg,
    /// One hidden ReLU layer of `hidden` units.
    Mlp {
        /// Width of the hidden layer.
        hidden: usize,
    },
}

impl ModelKind {
    /// Model names accepted by [`ModelKind::from_name`].
    pub const NAMES: &'static [&'static str] = &["logreg", "mlp"];

    /// Returns the model called `name`, where `hidden` is the MLP's width.
    pub fn from_name(name: &str, hidden: usize) -> Result<Self> {
        match name {
            "logreg" => Ok(ModelKind::LogReg),
            "mlp" if hidden == 0 => Err(Error::InvalidConfig {
                name: "hidden",
                value: "0".to_string(),
                fix: "the MLP needs at least one hidden unit, for example 64".to_string(),
            }),
            "mlp" => Ok(ModelKind::Mlp { hidden }),
            other => Err(Error::InvalidConfig {
                name: "model",
                value: other.to_string(),
                fix: format!("choose one of {}", Self::NAMES.join(", ")),
            }),
        }
    }

    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LogReg => "logreg",
            ModelKind::Mlp { .. } => "mlp",
        }
    }
}

/// A classifier of a fixed shape; the parameters live outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    kind: ModelKind,
    inputs: usize,
    classes: usize,
}

/// Views of the parameter vector: for logistic regression `w1` is W, `b1`
/// is b and `second` is `None`, and for the MLP `second` is (W2, b2).
struct Layers<'a> {
    w1: ArrayView2<'a, f32>,
    b1: ArrayView1<'a, f32>,
    second: Option<(ArrayView2<'a, f32>, ArrayView1<'a, f32>)>,
}

/// Loss and accuracy of a model on a set of examples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy; NaN when the parameters have diverged.
    pub loss: f64,
    /// Fraction of examples whose highest logit is their label, in [0, 1].
    pub accuracy: f64,
}

impl Model {
    /// Creates a model of `kind` for `inputs` features and `classes` classes.
    pub fn new(kind: ModelKind, inputs: usize, classes: usize) -> Self {
        Self {
            kind,
            inputs,
            classes,
        }
    }

    /// Returns the kind of model.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Number of parameters d, the length of every gradient.
    pub fn num_params(&self) -> usize {
        match self.kind {
            ModelKind::LogReg => (self.inputs + 1) * self.classes,
            ModelKind::Mlp { hidden } => (self.inputs + 1) * hidden + (hidden + 1) * self.classes,
        }
    }

    /// Draws initial parameters from `seed`. Logistic regression starts at
    /// zero. The MLP gets He-normal W1 (variance 2 / inputs), normal W2 of
    /// variance 1 / hidden, and zero biases.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut params = vec![0f32; self.num_params()];
        if let ModelKind::Mlp { hidden } = self.kind {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut normal = |scale: f64| (rng.sample::<f64, _>(StandardNormal) * scale) as f32;
            let w1 = self.inputs * hidden;
            let w2_start = w1 + hidden;
            let w2_end = w2_start + hidden * self.classes;
            for w in &mut params[..w1] {
                *w = normal((2.0 / self.inputs as f64).sqrt());
            }
            for w in &mut params[w2_start..w2_end] {
                *w = normal((1.0 / hidden as f64).sqrt());
            }
        }
        params
    }

    /// Splits `params` into the layers' weights and biases.
    fn layers<'a>(&self, params: &'a [f32]) -> Layers<'a> {
        assert_eq!(
            params.len(),
            self.num_params(),
            "parameter vector of the wrong length"
        );
        let width = match self.kind {
            ModelKind::LogReg => self.classes,
            ModelKind::Mlp { hidden } => hidden,
        };
        let (w1, rest) = params.split_at(self.inputs * width);
        let (b1, rest) = rest.split_at(width);
        let w1 = ArrayView2::from_shape((self.inputs, width), w1).expect("sizes follow num_params");
        let b1 = ArrayView1::from(b1);
        match self.kind {
            ModelKind::LogReg => Layers {
                w1,
                b1,
                second: None,
            },
            ModelKind::Mlp { hidden } => {
                let (w2, b2) = rest.split_at(hidden * self.classes);
                let w2 = ArrayView2::from_shape((hidden, self.classes), w2)
                    .expect("sizes follow num_params");
                Layers {
                    w1,
                    b1,
                    second: Some((w2, ArrayView1::from(b2))),
                }
            }
        }
    }

    /// Computes the hidden activations (MLP only) and the logits of the rows
    /// of `x`.
    fn forward(&self, params: &[f32], x: ArrayView2<f32>) -> (Option<Array2<f32>>, Array2<f32>) {
        let Layers { w1, b1, second } = self.layers(params);
        let first = x.dot(&w1) + b1;
        match second {
            None => (None, first),
            Some((w2, b2)) => {
                let hidden = first.mapv(|v| v.max(0.0));
                let logits = hidden.dot(&w2) + b2;
                (Some(hidden), logits)
            }
        }
    }

    /// Computes the mean cross-entropy of the batch (`x` one example per
    /// row, `labels` its classes) and its gradient with respect to `params`.
    ///
    /// # Panics
    ///
    /// If `params` is not [`Model::num_params`] long, `x` has not the
    /// model's number of inputs as columns, or a label is not below the
    /// number of classes.
    pub fn loss_and_gradient(
        &self,
        params: &[f32],
        x: ArrayView2<f32>,
        labels: &[usize],
    ) -> (f64, Vec<f32>) {
        let (hidden, logits) = self.forward(params, x);
        let batch = labels.len() as f32;
        let (loss, mut delta) = softmax_cross_entropy(logits, labels);
        // delta = ∂loss/∂logits = (softmax − one-hot) / batch.
        delta.mapv_inplace(|v| v / batch);

        let mut gradient = Vec::with_capacity(self.num_params());
        match (hidden, self.layers(params).second) {
            (None, _) => {
                gradient.extend(x.t().dot(&delta).iter());
                gradient.extend(delta.sum_axis(Axis(0)).iter());
            }
            (Some(hidden), Some((w2, _))) => {
                let mut delta_hidden = delta.dot(&w2.t());
                delta_hidden.zip_mut_with(&hidden, |d, &h| {
                    if h <= 0.0 {
                        *d = 0.0;
                    }
                });
                gradient.extend(x.t().dot(&delta_hidden).iter());
                gradient.extend(delta_hidden.sum_axis(Axis(0)).iter());
                gradient.extend(hidden.t().dot(&delta).iter());
                gradient.extend(delta.sum_axis(Axis(0)).iter());
            }
            (Some(_), None) => unreachable!("an MLP always has a second layer"),
        }
        (loss / labels.len() as f64, gradient)
    }

    /// Computes the mean loss and the accuracy of `params` on the rows of
    /// `x`. Panics on the same mismatches as [`Model::loss_and_gradient`].
    pub fn evaluate(&self, params: &[f32], x: ArrayView2<f32>, labels: &[usize]) -> Evaluation {
        let (_, logits) = self.forward(params, x);
        let correct = logits
            .rows()
            .into_iter()
            .zip(labels)
            .filter(|(row, &label)| argmax(*row) == Some(label))
            .count();
        let (loss, _) = softmax_cross_entropy(logits, labels);
        Evaluation {
            loss: loss / labels.len() as f64,
            accuracy: correct as f64 / labels.len() as f64,
        }
    }
}

/// Returns the index of the largest value, or `None` if the row contains a
/// NaN, so that a diverged model counts as wrong.
fn argmax(row: ArrayView1<f32>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Summed cross-entropy over the rows of `logits` and, in place of the
/// logits, softmax − one-hot, computed with the log-sum-exp shift.
fn softmax_cross_entropy(mut logits: Array2<f32>, labels: &[usize]) -> (f64, Array2<f32>) {
    let mut total = 0f64;
    for (mut row, &label) in logits.rows_mut().into_iter().zip(labels) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let log_sum_exp = max + sum.ln();
        total += f64::from(log_sum_exp - row[label]);
        row.mapv_inplace(|v| (v - log_sum_exp).exp());
        row[label] -= 1.0;
    }
    (total, logits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean cross-entropy in f64 by plain loops, following the layout in the
    /// module documentation: the oracle for the finite differences.
    fn reference_loss(model: &Model, params: &[f64], x: &Array2<f32>, labels: &[usize]) -> f64 {
        let (inputs, classes) = (model.inputs, model.classes);
        let layer = |input: &[f64], w: &[f64], b: &[f64], outputs: usize| -> Vec<f64> {
            (0..outputs)
                .map(|o| {
                    b[o] + input
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v * w[i * outputs + o])
                        .sum::<f64>()
                })
                .collect()
        };
        let mut total = 0.0;
        for (row, &label) in x.rows().into_iter().zip(labels) {
            let input: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            let logits = match model.kind {
                ModelKind::LogReg => {
                    let (w, b) = params.split_at(inputs * classes);
                    layer(&input, w, b, classes)
                }
                ModelKind::Mlp { hidden } => {
                    let (w1, rest) = params.split_at(inputs * hidden);
                    let (b1, rest) = rest.split_at(hidden);
                    let (w2, b2) = rest.split_at(hidden * classes);
                    let h: Vec<f64> = layer(&input, w1, b1, hidden)
                        .into_iter()
                        .map(|v| v.max(0.0))
                        .collect();
                    layer(&h, w2, b2, classes)
                }
            };
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            total += lse - logits[label];
        }
        total / labels.len() as f64
    }

    fn check_gradient(kind: ModelKind, seed: u64) {
        let (inputs, classes, batch) = (5, 4, 6);
        let model = Model::new(kind, inputs, classes);
        let mut rng = StdRng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((batch, inputs), |_| rng.random::<f32>());
        let labels: Vec<usize> = (0..batch).map(|i| i % classes).collect();
        // Random parameters, not the zero start, so that every path is used.
        let params: Vec<f32> = (0..model.num_params())
            .map(|_| rng.sample::<f64, _>(StandardNormal) as f32 * 0.5)
            .collect();

        let (loss, gradient) = model.loss_and_gradient(&params, x.view(), &labels);
        let params64: Vec<f64> = params.iter().map(|&p| p as f64).collect();
        let reference = reference_loss(&model, &params64, &x, &labels);
        assert!(
            (loss - reference).abs() < 1e-5,
            "seed {seed}: loss {loss} vs reference {reference}"
        );

        let step = 1e-6;
        for c in 0..params.len() {
            let mut plus = params64.clone();
            let mut minus = params64.clone();
            plus[c] += step;
            minus[c] -= step;
            let numeric = (reference_loss(&model, &plus, &x, &labels)
                - reference_loss(&model, &minus, &x, &labels))
                / (2.0 * step);
            let analytic = gradient[c] as f64;
            assert!(
                (analytic - numeric).abs() < 1e-4,
                "seed {seed}, {kind:?}, coordinate {c}: analytic {analytic} vs finite difference {numeric}, tolerance 1e-4"
            );
        }
    }

    #[test]
    fn logreg_gradient_matches_finite_differences() {
        check_gradient(ModelKind::LogReg, 11);
    }

    #[test]
    fn mlp_gradient_matches_finite_differences() {
        check_gradient(ModelKind::Mlp { hidden: 7 }, 12);
    }

    #[test]
    fn evaluation_counts_correct_rows() {
        let model = Model::new(ModelKind::LogReg, 2, 2);
        // W = identity, b = 0: the larger feature wins.
        let params = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let x = ndarray::array![[1.0f32, 0.0], [0.0, 1.0], [0.3, 0.2]];
        let evaluation = model.evaluate(&params, x.view(), &[0, 0, 0]);
        assert!((evaluation.accuracy - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn nan_parameters_score_zero() {
        let model = Model::new(ModelKind::LogReg, 2, 2);
        let params = [f32::NAN; 6];
        let x = ndarray::array![[1.0f32, 0.0]];
        let evaluation = model.evaluate(&params, x.view(), &[0]);
        assert_eq!(evaluation.accuracy, 0.0);
        assert!(evaluation.loss.is_nan());
    }
}
