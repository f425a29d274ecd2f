//! The entry point: an [`Engine`] bound to one backend.

use std::cell::RefCell;
use std::sync::Arc;

use ndarray::Array2;

use crate::cpu::CpuStages;
use crate::gpu::{AdapterFilter, GpuContext, GpuOptions, GpuStages};
use crate::gradients::{validate_shape, Dyn};
use crate::stages::Stages;
use crate::{Error, GradientSource, PreAggregation, Result, Rule};

/// The output of an aggregation and the evidence behind it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregation {
    /// The aggregated gradient, of the input's dimension d.
    pub vector: Vec<f32>,
    /// Workers the rule selected, 0-based: the one Krum choice, Multi-Krum's m
    /// in ascending score order, Bulyan's θ in the order chosen. Empty for
    /// rules that select no worker.
    pub selected: Vec<usize>,
    /// Krum scores of all n workers (+Inf for non-finite workers), for Krum
    /// and Multi-Krum. Bulyan reports none, since each of its rounds scores
    /// a different set.
    pub scores: Option<Vec<f64>>,
    /// Workers that sent NaN or ±Inf, ascending.
    pub non_finite: Vec<usize>,
    /// Iterations run, for iterative rules.
    pub iterations: Option<usize>,
}

impl Aggregation {
    pub(crate) fn empty(non_finite: Vec<usize>) -> Self {
        Self {
            non_finite,
            ..Self::default()
        }
    }
}

/// The implementation an [`Engine`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The f64 reference, written for obviousness (the test oracle).
    Reference,
    /// The fast multithreaded CPU path.
    Cpu,
    /// WGSL compute shaders on a wgpu adapter.
    Gpu,
}

impl BackendKind {
    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        }
    }
}

enum Backend {
    Reference,
    Cpu(CpuStages),
    Gpu(GpuStages),
}

/// Aggregates gradients on one backend. Build it once and reuse it: a GPU
/// engine keeps its device, pipelines and buffers across calls.
pub struct Engine {
    backend: Backend,
    cpu_fallback: bool,
    memory_budget: Option<u64>,
}

impl Engine {
    /// Creates an engine on the f64 reference backend.
    pub fn reference() -> Self {
        Self {
            backend: Backend::Reference,
            cpu_fallback: false,
            memory_budget: None,
        }
    }

    /// Creates an engine on the fast CPU backend.
    pub fn cpu() -> Self {
        Self {
            backend: Backend::Cpu(CpuStages::new()),
            cpu_fallback: false,
            memory_budget: None,
        }
    }

    /// Creates a GPU engine on the best adapter, software adapters included when no
    /// hardware one exists.
    pub fn gpu() -> Result<Self> {
        Self::gpu_with_filter(&AdapterFilter::from_env())
    }

    /// Creates a GPU engine on the adapter that `filter` picks.
    pub fn gpu_with_filter(filter: &AdapterFilter) -> Result<Self> {
        Self::gpu_with(filter, GpuOptions::default())
    }

    /// Creates a GPU engine on the adapter that `filter` picks, with the memory
    /// budget and slice cap of `options`.
    pub fn gpu_with(filter: &AdapterFilter, options: GpuOptions) -> Result<Self> {
        Ok(Self::with_context(Arc::new(GpuContext::with_options(
            filter, options,
        )?)))
    }

    /// Creates a GPU engine on an existing context, for example one built
    /// from the caller's own `wgpu::Device` and `wgpu::Queue`.
    pub fn with_context(context: Arc<GpuContext>) -> Self {
        Self {
            backend: Backend::Gpu(GpuStages::new(context)),
            cpu_fallback: false,
            memory_budget: None,
        }
    }

    /// Creates an engine on a hardware GPU if one exists, else on the CPU
    /// path, which [`Engine::kind`] then reports (an info-level log record
    /// gives the reason). Software adapters such as lavapipe are
    /// used only when asked for, through [`Engine::gpu`] or an adapter named
    /// in `BYZAGG_ADAPTER`.
    pub fn auto() -> Result<Self> {
        Self::auto_with(&AdapterFilter::from_env(), GpuOptions::default())
    }

    /// Like [`Engine::auto`], with an explicit adapter filter and GPU options.
    /// A filter that names an adapter (by name or index) may pick a software
    /// one.
    pub fn auto_with(filter: &AdapterFilter, options: GpuOptions) -> Result<Self> {
        let mut filter = filter.clone();
        filter.allow_software = filter.name.is_some() || filter.index.is_some();
        match GpuContext::with_options(&filter, options) {
            Ok(context) => Ok(Self::with_context(Arc::new(context)).with_cpu_fallback(true)),
            Err(error) => {
                log::info!("no hardware GPU adapter ({error}); using the CPU backend");
                Ok(Self::cpu())
            }
        }
    }

    /// Makes a GPU engine rerun a call on the CPU, with a warning, when the
    /// device fails during it (device lost, allocation failure, driver
    /// error). [`Engine::auto`] turns this on.
    pub fn with_cpu_fallback(mut self, enabled: bool) -> Self {
        self.cpu_fallback = enabled;
        self
    }

    /// Caps the host memory that a call may hold in proportion to n·d, in
    /// bytes. The fast CPU and GPU paths stream the gradients in blocks and
    /// need such memory only for the mixed vectors of nearest-neighbour
    /// mixing (n·d·4 bytes); the f64 reference holds every gradient
    /// (n·d·8 bytes, twice that with mixing). A call over the cap fails with
    /// [`crate::Error::MemoryBudget`]. GPU buffers have their own cap,
    /// [`crate::gpu::GpuOptions::memory_budget`].
    pub fn with_memory_budget(mut self, bytes: Option<u64>) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Fails when the host memory a call needs exceeds the budget.
    fn check_host_memory(&self, n: usize, d: usize, pre: Option<PreAggregation>) -> Result<()> {
        let Some(budget) = self.memory_budget else {
            return Ok(());
        };
        let values = (n as u64).saturating_mul(d as u64);
        let (what, needed) = match (self.kind(), pre) {
            (BackendKind::Reference, None) => {
                ("the f64 reference's copy of the gradients", values * 8)
            }
            (BackendKind::Reference, Some(_)) => (
                "the f64 reference's copy of the gradients and their mixed vectors",
                values * 16,
            ),
            (_, Some(PreAggregation::Nnm)) => {
                ("the mixed vectors of nearest-neighbour mixing", values * 4)
            }
            (_, None) => return Ok(()),
        };
        if needed > budget {
            return Err(Error::MemoryBudget {
                what: format!("{what} ({n} workers × {d} coordinates)"),
                needed,
                budget,
            });
        }
        Ok(())
    }

    /// Runs `call` on this engine's stages, and again on the CPU when the GPU
    /// fails and the fallback is on.
    fn run<T>(&self, call: impl Fn(&dyn Stages) -> Result<T>) -> Option<Result<T>> {
        let stages = self.stages()?;
        let result = call(stages);
        match result {
            Err(error) if self.cpu_fallback && error.is_device_fault() => {
                log::warn!("the GPU failed ({error}); computing this call on the CPU instead");
                Some(call(&CpuStages::new()))
            }
            other => Some(other),
        }
    }

    /// Returns the backend this engine runs.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Reference => BackendKind::Reference,
            Backend::Cpu(_) => BackendKind::Cpu,
            Backend::Gpu(_) => BackendKind::Gpu,
        }
    }

    /// Returns the GPU adapter's name, for GPU engines.
    pub fn adapter(&self) -> Option<String> {
        self.stages().and_then(|s| s.adapter())
    }

    fn stages(&self) -> Option<&dyn Stages> {
        match &self.backend {
            Backend::Reference => None,
            Backend::Cpu(stages) => Some(stages),
            Backend::Gpu(stages) => Some(stages),
        }
    }

    /// Aggregates the n gradients in `grads` with `rule`.
    ///
    /// ```
    /// use byzagg::{Engine, Rule};
    /// let grads: Vec<Vec<f32>> = vec![vec![0.0], vec![0.1], vec![0.2], vec![9.0]];
    /// let out = Engine::cpu().aggregate(&Rule::Krum { f: 0 }, &grads)?;
    /// assert_eq!(out.selected, vec![1]);
    /// # Ok::<(), byzagg::Error>(())
    /// ```
    pub fn aggregate<G: GradientSource + ?Sized>(
        &self,
        rule: &Rule,
        grads: &G,
    ) -> Result<Aggregation> {
        self.aggregate_with(rule, None, grads)
    }

    /// Aggregates with `rule` after the pre-aggregation step `pre`.
    pub fn aggregate_with<G: GradientSource + ?Sized>(
        &self,
        rule: &Rule,
        pre: Option<PreAggregation>,
        grads: &G,
    ) -> Result<Aggregation> {
        let mut out = Aggregation::default();
        self.aggregate_into(rule, pre, grads, &mut out)?;
        Ok(out)
    }

    /// Aggregates like [`Engine::aggregate_with`] into `out`, writing the
    /// aggregated gradient into the memory of `out.vector`.
    ///
    /// A training loop that keeps one [`Aggregation`] across steps then
    /// writes each step's gradient into memory it has already touched. A
    /// fresh vector of d values is faulted in page by page, which for large
    /// d costs about as much as reading the n gradients.
    ///
    /// On the CPU backend every rule writes its result into that memory. The
    /// geometric median, centered clipping and NNM still allocate their
    /// intermediate vectors. The GPU and reference backends replace the
    /// vector. On error `out` is left empty, its vector keeping its memory
    /// for the next call.
    ///
    /// ```
    /// use byzagg::{Aggregation, Engine, Rule};
    /// let engine = Engine::cpu();
    /// let mut out = Aggregation::default();
    /// for step in 0..3 {
    ///     let grads: Vec<Vec<f32>> = (0..5).map(|i| vec![(i + step) as f32; 1000]).collect();
    ///     engine.aggregate_into(&Rule::Krum { f: 1 }, None, &grads, &mut out)?;
    ///     assert_eq!(out.vector.len(), 1000);
    /// }
    /// # Ok::<(), byzagg::Error>(())
    /// ```
    pub fn aggregate_into<G: GradientSource + ?Sized>(
        &self,
        rule: &Rule,
        pre: Option<PreAggregation>,
        grads: &G,
        out: &mut Aggregation,
    ) -> Result<()> {
        let vector = RefCell::new(std::mem::take(&mut out.vector));
        *out = Aggregation::default();
        let result = self.aggregate_with_vector(rule, pre, &Dyn(grads), &vector);
        match result {
            Ok(result) => *out = result,
            Err(error) => {
                // The memory stays with `out` for the next call.
                out.vector = vector.into_inner();
                out.vector.clear();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Runs the rule with its result written into `vector` where the backend
    /// can, on the CPU again after a GPU fault when the fallback is on.
    fn aggregate_with_vector(
        &self,
        rule: &Rule,
        pre: Option<PreAggregation>,
        grads: &dyn GradientSource,
        vector: &RefCell<Vec<f32>>,
    ) -> Result<Aggregation> {
        let (n, d) = validate_shape(grads)?;
        self.check_host_memory(n, d, pre)?;
        let run = self.run(|stages| {
            crate::pipeline::aggregate(stages, rule, pre, grads, &mut vector.borrow_mut())
        });
        match run {
            None => crate::cpu::reference::aggregate(rule, pre, grads),
            Some(result) => result,
        }
    }

    /// The n×n matrix of squared distances D[i][j] = Σ_c (x_i[c] − x_j[c])².
    /// Rows and columns of non-finite workers, diagonal included, are +Inf.
    pub fn pairwise_sq_distances<G: GradientSource + ?Sized>(
        &self,
        grads: &G,
    ) -> Result<Array2<f64>> {
        let grads = Dyn(grads);
        let (n, d) = validate_shape(&grads)?;
        self.check_host_memory(n, d, None)?;
        match self.run(|stages| stages.sq_distances(&grads)) {
            None => crate::cpu::reference::sq_distances(&grads),
            Some(result) => result,
        }
    }
}
