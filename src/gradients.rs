//! Borrowed views of the n worker gradients.
//!
//! Backends never require all n×d values in one host matrix: they read a
//! worker's coordinates slice by slice through [`GradientSource`], which plain
//! slices, ndarray views and memory-mapped .npy files all implement.

use ndarray::{s, Array2, ArrayView2, Axis};

use crate::{Error, Result};

/// The n worker gradients, read one coordinate slice at a time.
///
/// Implementations must be cheap to read concurrently from several threads.
pub trait GradientSource: Sync {
    /// Number of workers n.
    fn workers(&self) -> usize;

    /// Number of coordinates of `worker`'s gradient.
    fn len_of(&self, worker: usize) -> usize;

    /// The whole gradient of `worker` when it is one contiguous slice in
    /// memory, so that backends can read it without a copy.
    fn row(&self, worker: usize) -> Option<&[f32]>;

    /// Copies coordinates `start..start + out.len()` of `worker` into `out`.
    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()>;
}

/// Checks that every worker has the same, non-zero length and returns (n, d).
pub fn validate_shape<G: GradientSource + ?Sized>(grads: &G) -> Result<(usize, usize)> {
    let n = grads.workers();
    if n == 0 {
        return Err(Error::NoWorkers);
    }
    let d = grads.len_of(0);
    for worker in 1..n {
        let got = grads.len_of(worker);
        if got != d {
            return Err(Error::ShapeMismatch {
                worker,
                expected: d,
                got,
            });
        }
    }
    if d == 0 {
        return Err(Error::EmptyGradient);
    }
    Ok((n, d))
}

impl<T: AsRef<[f32]> + Sync> GradientSource for [T] {
    fn workers(&self) -> usize {
        self.len()
    }

    fn len_of(&self, worker: usize) -> usize {
        self[worker].as_ref().len()
    }

    fn row(&self, worker: usize) -> Option<&[f32]> {
        Some(self[worker].as_ref())
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&self[worker].as_ref()[start..start + out.len()]);
        Ok(())
    }
}

impl<T: AsRef<[f32]> + Sync> GradientSource for Vec<T> {
    fn workers(&self) -> usize {
        self.len()
    }

    fn len_of(&self, worker: usize) -> usize {
        self[worker].as_ref().len()
    }

    fn row(&self, worker: usize) -> Option<&[f32]> {
        Some(self[worker].as_ref())
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()> {
        self.as_slice().read_into(worker, start, out)
    }
}

impl GradientSource for ArrayView2<'_, f32> {
    fn workers(&self) -> usize {
        self.nrows()
    }

    fn len_of(&self, _worker: usize) -> usize {
        self.ncols()
    }

    fn row(&self, worker: usize) -> Option<&[f32]> {
        self.index_axis(Axis(0), worker).to_slice()
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()> {
        let row = self.index_axis(Axis(0), worker);
        let coordinates = row.slice(s![start..start + out.len()]);
        for (dst, src) in out.iter_mut().zip(coordinates.iter()) {
            *dst = *src;
        }
        Ok(())
    }
}

impl GradientSource for Array2<f32> {
    fn workers(&self) -> usize {
        self.nrows()
    }

    fn len_of(&self, _worker: usize) -> usize {
        self.ncols()
    }

    fn row(&self, worker: usize) -> Option<&[f32]> {
        self.index_axis(Axis(0), worker).to_slice()
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()> {
        self.view().read_into(worker, start, out)
    }
}

/// A subset of another source's workers, in the given order.
pub struct Subset<'a, G: GradientSource + ?Sized> {
    inner: &'a G,
    indices: Vec<usize>,
}

impl<'a, G: GradientSource + ?Sized> Subset<'a, G> {
    /// Views workers `indices` of `inner` as workers 0..indices.len().
    pub fn new(inner: &'a G, indices: Vec<usize>) -> Self {
        Self { inner, indices }
    }

    /// Original index of each worker of the subset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<G: GradientSource + ?Sized> GradientSource for Subset<'_, G> {
    fn workers(&self) -> usize {
        self.indices.len()
    }

    fn len_of(&self, worker: usize) -> usize {
        self.inner.len_of(self.indices[worker])
    }

    fn row(&self, worker: usize) -> Option<&[f32]> {
        self.inner.row(self.indices[worker])
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()> {
        self.inner.read_into(self.indices[worker], start, out)
    }
}

/// Lets a generic, possibly unsized source be passed on as a trait object.
pub(crate) struct Dyn<'a, G: ?Sized>(pub &'a G);

impl<G: GradientSource + ?Sized> GradientSource for Dyn<'_, G> {
    fn workers(&self) -> usize {
        self.0.workers()
    }

    fn len_of(&self, worker: usize) -> usize {
        self.0.len_of(worker)
    }

    fn row(&self, worker: usize) -> Option<&[f32]> {
        self.0.row(worker)
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()> {
        self.0.read_into(worker, start, out)
    }
}
