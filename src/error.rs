//! The error type of every fallible call in the library.

use std::path::PathBuf;

/// Result alias used throughout byzagg.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in byzagg. Each variant carries the values
/// involved so that the message can name them and the fix.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input contains no gradients at all.
    #[error("no workers: the input holds zero gradients; pass at least one gradient per worker")]
    NoWorkers,

    /// The gradients have zero coordinates.
    #[error("the gradients have dimension d = 0; every worker must send at least one coordinate")]
    EmptyGradient,

    /// Two workers sent gradients of different lengths.
    #[error(
        "worker {worker} sent {got} coordinates but worker 0 sent {expected}; \
         every worker must send a gradient of the same length"
    )]
    ShapeMismatch {
        /// Index of the first worker whose length differs from worker 0.
        worker: usize,
        /// Length of worker 0's gradient.
        expected: usize,
        /// Length of this worker's gradient.
        got: usize,
    },

    /// The rule needs more workers than were given for this f.
    #[error(
        "{rule} requires {requirement}, but n = {n} and f = {f}; \
         pass at least {min_n} workers or lower f"
    )]
    TooFewWorkers {
        /// Rule name as used on the command line.
        rule: &'static str,
        /// The requirement in words, for example `n > 2f + 2`.
        requirement: &'static str,
        /// Number of workers given.
        n: usize,
        /// Number of Byzantine workers tolerated.
        f: usize,
        /// The smallest n that meets the requirement for this f.
        min_n: usize,
    },

    /// The rule's requirement on n fails once the non-finite workers are
    /// dropped, for the rules that drop them.
    #[error(
        "{rule} requires {requirement} on the finite workers, but only {finite} of n = {n} \
         are finite (workers {non_finite:?} are not) and f = {f}; \
         pass at least {min_n} finite workers or lower f"
    )]
    TooFewFiniteWorkers {
        /// Rule name as used on the command line.
        rule: &'static str,
        /// The requirement in words, for example `n > 2f`.
        requirement: &'static str,
        /// Number of workers given, finite or not.
        n: usize,
        /// Number of finite workers.
        finite: usize,
        /// 0-based indices of the non-finite workers.
        non_finite: Vec<usize>,
        /// Number of Byzantine workers tolerated.
        f: usize,
        /// The smallest number of finite workers that meets the requirement.
        min_n: usize,
    },

    /// A rule name that byzagg does not know.
    #[error("unknown rule {name:?}; choose one of {}", crate::RULE_NAMES.join(", "))]
    UnknownRule {
        /// The name given.
        name: String,
    },

    /// A rule parameter is outside its valid range.
    #[error("invalid {name} = {value} for {rule}: {fix}")]
    InvalidParameter {
        /// Rule name as used on the command line.
        rule: &'static str,
        /// Parameter name, for example `m` or `tau`.
        name: &'static str,
        /// The rejected value, as text.
        value: String,
        /// What a valid value looks like.
        fix: String,
    },

    /// A rule parameter without a default was not given.
    #[error("{rule} requires {name}: {fix}")]
    MissingParameter {
        /// Rule name as used on the command line.
        rule: &'static str,
        /// Parameter name, for example `tau`.
        name: &'static str,
        /// How to give it.
        fix: String,
    },

    /// More workers sent NaN or ±Inf than the rule tolerates.
    #[error(
        "workers {workers:?} sent non-finite values (NaN or ±Inf), {} of them, more than \
         f = {f} tolerates; raise f to at least {} or drop those workers",
        workers.len(),
        workers.len()
    )]
    TooManyNonFinite {
        /// 0-based indices of the non-finite workers.
        workers: Vec<usize>,
        /// Number of Byzantine workers tolerated.
        f: usize,
    },

    /// No GPU adapter matched the request.
    #[error(
        "{}",
        match (filter, found.is_empty()) {
            (_, true) => format!(
                "no GPU adapter found{}; install a Vulkan driver (on Debian or Ubuntu: \
                 `apt-get install mesa-vulkan-drivers` for the lavapipe software adapter), \
                 or use --backend cpu",
                filter.as_ref().map(|f| format!(" matching {f:?}")).unwrap_or_default()
            ),
            (Some(f), false) => format!(
                "no GPU adapter found matching {f:?} among {}; name one of those, see \
                 `byzagg devices`, or use --backend cpu",
                found.join(", ")
            ),
            (None, false) => format!(
                "no usable GPU adapter among {}; see `byzagg devices`, or use --backend cpu",
                found.join(", ")
            ),
        }
    )]
    NoAdapter {
        /// The adapter filter that matched nothing, if one was given.
        filter: Option<String>,
        /// The adapters that exist, as `name (backend)`.
        found: Vec<String>,
    },

    /// The adapter refused to create a device.
    #[error("adapter {adapter:?} refused to create a device: {message}; try another adapter with --adapter or use --backend cpu")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// The driver's reason.
        message: String,
    },

    /// A GPU buffer could not be allocated.
    #[error("failed to allocate a GPU buffer of {bytes} bytes: {message}; lower --max-memory or use --backend cpu")]
    BufferAllocation {
        /// Requested size in bytes.
        bytes: u64,
        /// The driver's reason.
        message: String,
    },

    /// The GPU device was lost during a computation.
    #[error("the GPU device was lost: {message}; rerun, or use --backend cpu")]
    DeviceLost {
        /// The driver's reason.
        message: String,
    },

    /// A WGSL shader failed to compile or validate.
    #[error("shader {shader} failed to compile: {message}")]
    ShaderCompilation {
        /// File name of the shader under `shaders/`.
        shader: &'static str,
        /// The compiler's message.
        message: String,
    },

    /// Any other error reported by the GPU driver or wgpu validation.
    #[error("GPU error: {message}")]
    Gpu {
        /// wgpu's message.
        message: String,
    },

    /// A file could not be read or written.
    ///
    /// The message includes `cause`, which is therefore not also reported as
    /// the error's source, so that a printed chain names it once.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },

    /// A file's contents are not what byzagg can use.
    #[error("{}: {message}", path.display())]
    BadFile {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it and what to do.
        message: String,
    },

    /// A data file or folder that training needs does not exist.
    #[error("{}: not found; {fix}", path.display())]
    DataNotFound {
        /// The missing file or folder.
        path: PathBuf,
        /// The fix: where to get the data or which option points at it.
        fix: String,
    },

    /// A training option is outside its valid range.
    #[error("invalid {name} = {value}: {fix}")]
    InvalidConfig {
        /// Option name, as on the command line without the dashes.
        name: &'static str,
        /// The rejected value, as text.
        value: String,
        /// The fix: the valid range or an example value.
        fix: String,
    },

    /// A host or GPU buffer would exceed the memory budget.
    #[error("{what} needs {needed} bytes, more than the memory budget of {budget} bytes; raise --max-memory")]
    MemoryBudget {
        /// What needed the memory.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// The budget in bytes.
        budget: u64,
    },
}

impl Error {
    /// Whether the error comes from the GPU device or driver rather than from
    /// the input, so that the same call may succeed on the CPU.
    pub fn is_device_fault(&self) -> bool {
        matches!(
            self,
            Error::RequestDevice { .. }
                | Error::BufferAllocation { .. }
                | Error::DeviceLost { .. }
                | Error::ShaderCompilation { .. }
                | Error::Gpu { .. }
        )
    }
}
