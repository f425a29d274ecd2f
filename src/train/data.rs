//! Labelled image data: the embedded digits set, MNIST from IDX files, the
//! seeded train/test split and the per-worker shards.

use std::path::Path;

use ndarray::{Array2, Axis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result};

use super::idx;

/// Images as rows of features scaled to [0, 1], with their class labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Short name used in reports, for example `digits` or `mnist`.
    pub name: String,
    /// One example per row.
    pub features: Array2<f32>,
    /// Class of each row, in `0..classes`.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
}

/// Division of the training set among the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Each worker gets a uniformly random, equally sized share.
    Iid,
    /// Examples are sorted by label and cut into contiguous shares, so each
    /// worker gets only one or a few classes (non-iid).
    ByLabel,
}

impl Split {
    /// Names accepted by [`Split::from_name`].
    pub const NAMES: &'static [&'static str] = &["iid", "by-label"];

    /// Returns the split called `name` (`iid` or `by-label`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "iid" => Ok(Split::Iid),
            "by-label" => Ok(Split::ByLabel),
            other => Err(Error::InvalidConfig {
                name: "split",
                value: other.to_string(),
                fix: format!("choose one of {}", Self::NAMES.join(", ")),
            }),
        }
    }

    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Split::Iid => "iid",
            Split::ByLabel => "by-label",
        }
    }
}

/// Pixel values of the digits set run from 0 to 16.
const DIGITS_MAX_PIXEL: f32 = 16.0;

/// Base names of the MNIST IDX files, as published, each read with or
/// without a `.gz` suffix.
const MNIST_TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const MNIST_TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
const MNIST_TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const MNIST_TRAIN_LABELS: &str = "train-labels-idx1-ubyte";

impl Dataset {
    /// Loads the UCI optical handwritten digits: 1,797 images of 8×8 pixels, 10
    /// classes, as embedded in the smartcore crate (0.7, `datasets` feature).
    pub fn digits() -> Self {
        let raw = smartcore::dataset::digits::load_dataset();
        let features = Array2::from_shape_fn((raw.num_samples, raw.num_features), |(i, j)| {
            raw.data[i * raw.num_features + j] / DIGITS_MAX_PIXEL
        });
        let labels = raw.target.iter().map(|&y| y as usize).collect();
        Self {
            name: "digits".to_string(),
            features,
            labels,
            classes: 10,
        }
    }

    /// MNIST from the IDX files in `dir`, gzipped or not. Reads the 10,000
    /// test images (`t10k-*`), and the 60,000 training images (`train-*`) as
    /// well when both of their files are there; [`Dataset::split`] then makes
    /// its own train/test split of everything read.
    pub fn mnist(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::DataNotFound {
                path: dir.to_path_buf(),
                fix: format!(
                    "pass --data-dir a folder holding the MNIST IDX files \
                     {MNIST_TEST_IMAGES}.gz and {MNIST_TEST_LABELS}.gz"
                ),
            });
        }
        let mut parts = vec![idx::read_pair(dir, MNIST_TEST_IMAGES, MNIST_TEST_LABELS)?];
        let has_train = [MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS]
            .iter()
            .all(|base| idx::find(dir, base).is_some());
        if has_train {
            parts.push(idx::read_pair(dir, MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS)?);
        }

        let views: Vec<_> = parts.iter().map(|(images, _)| images.view()).collect();
        let features = ndarray::concatenate(Axis(0), &views).map_err(|error| Error::BadFile {
            path: dir.to_path_buf(),
            message: format!(
                "the test and training images have different sizes ({error}); \
                 use the MNIST files as published"
            ),
        })?;
        let labels = parts.into_iter().flat_map(|(_, labels)| labels).collect();
        Ok(Self {
            name: "mnist".to_string(),
            features,
            labels,
            classes: 10,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns whether the set contains no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of features per example.
    pub fn dim(&self) -> usize {
        self.features.ncols()
    }

    /// Returns the examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        Dataset {
            name: self.name.clone(),
            features: self.features.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        }
    }

    /// Splits into (train, test) after a shuffle seeded by `seed`, with
    /// round(`test_fraction` × len) examples in the test part.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let test_len = ((self.len() as f64) * test_fraction).round() as usize;
        let (test, train) = order.split_at(test_len.min(self.len()));
        (self.select(train), self.select(test))
    }
}

/// Divides the example indices `0..labels.len()` among `workers` shards of
/// sizes differing by at most one. The shuffle is seeded by `seed`.
pub fn shard(labels: &[usize], workers: usize, split: Split, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    if split == Split::ByLabel {
        // The sort is stable, so examples of one class stay shuffled.
        order.sort_by_key(|&i| labels[i]);
    }
    let mut shards = Vec::with_capacity(workers);
    let mut start = 0;
    for worker in 0..workers {
        let size = labels.len() / workers + usize::from(worker < labels.len() % workers);
        shards.push(order[start..start + size].to_vec());
        start += size;
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_shape_and_range() {
        let digits = Dataset::digits();
        assert_eq!(digits.features.dim(), (1797, 64));
        assert_eq!(digits.labels.len(), 1797);
        assert!(digits.labels.iter().all(|&y| y < 10));
        assert!(digits.features.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert_eq!(digits.features.iter().cloned().fold(0.0, f32::max), 1.0);
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let digits = Dataset::digits();
        let (train, test) = digits.split(0.2, 7);
        let (train_again, _) = digits.split(0.2, 7);
        assert_eq!(test.len(), 359);
        assert_eq!(train.len() + test.len(), 1797);
        assert_eq!(train.labels, train_again.labels);
        assert_eq!(train.features, train_again.features);
    }

    #[test]
    fn shards_cover_every_example_once() {
        let labels: Vec<usize> = (0..103).map(|i| i % 10).collect();
        for split in [Split::Iid, Split::ByLabel] {
            let shards = shard(&labels, 7, split, 3);
            let mut all: Vec<usize> = shards.iter().flatten().copied().collect();
            all.sort();
            assert_eq!(all, (0..103).collect::<Vec<_>>(), "{split:?}");
            assert!(
                shards.iter().all(|s| s.len() == 14 || s.len() == 15),
                "{split:?}"
            );
        }
    }

    #[test]
    fn by_label_shards_hold_few_classes() {
        let labels: Vec<usize> = (0..200).map(|i| i % 10).collect();
        let shards = shard(&labels, 10, Split::ByLabel, 3);
        for (worker, shard) in shards.iter().enumerate() {
            assert!(
                shard.iter().all(|&i| labels[i] == worker),
                "worker {worker}"
            );
        }
    }
}
