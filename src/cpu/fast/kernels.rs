//! SIMD micro-kernels of the fast CPU path. Each kernel is written once over
//! the [`Lanes`] trait, compiled per instruction set with `#[target_feature]`
//! (AVX-512, AVX2 with FMA, or a portable array of 8 lanes), and chosen at
//! run time, so no target-cpu flag is needed.
//!
//! The distance kernels work on chunks of at most [`CHUNK`] coordinates. The
//! squared differences are summed in f32 lanes within a chunk, so each lane
//! adds at most `CHUNK / 8 = 256` terms and its relative rounding error stays
//! below 256 · 2⁻²⁴ ≈ 1.5e-5. The lanes are then summed in f64.

/// Coordinates summed in f32 lanes before the lanes are added in f64.
pub(crate) const CHUNK: usize = 2048;

/// Rows in one tile side of the pair kernels.
pub(crate) const GROUP: usize = 4;

/// How far ahead, in coordinates, the pair kernels prefetch each row:
/// 16 KiB, two chunks. A block streams 4 to 8 rows per thread, more than the
/// hardware prefetcher kept ahead of on the 2-core Xeon of
/// docs/BENCHMARKS.md, where this made the n = 8 distance pass about 15%
/// faster.
const PREFETCH_AHEAD: usize = 2 * CHUNK;

/// Requests the cache line at `ahead` into the L2 cache. It is only a hint:
/// an address past the end of the row is never read and cannot fault, so
/// `ahead` may point anywhere.
#[inline(always)]
fn prefetch(ahead: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults;
    // SSE, which it needs, is part of every x86-64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(ahead.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ahead;
}

/// The instruction set the fast CPU kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    /// Any CPU: 8 f32 lanes of whatever vector unit the target has by default
    /// (SSE2 on x86-64), multiply then add.
    Portable,
    /// x86-64 with AVX2 and FMA: 8 f32 lanes, fused multiply-add.
    Avx2,
    /// x86-64 with AVX-512F and FMA: 16 f32 lanes, fused multiply-add.
    Avx512,
}

impl SimdLevel {
    /// Returns the best level this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = std::arch::is_x86_feature_detected!("fma");
            if fma && std::arch::is_x86_feature_detected!("avx512f") {
                return SimdLevel::Avx512;
            }
            if fma && std::arch::is_x86_feature_detected!("avx2") {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Portable
    }

    /// Returns whether this CPU can run kernels compiled for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Portable => true,
            SimdLevel::Avx2 => matches!(Self::detect(), SimdLevel::Avx2 | SimdLevel::Avx512),
            SimdLevel::Avx512 => Self::detect() == SimdLevel::Avx512,
        }
    }

    /// Lower-case name used in reports: `portable`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }
}

/// One SIMD register of f32 lanes and the few operations the kernels need.
///
/// # Safety
///
/// The methods are `unsafe` because the x86-64 implementations may only run
/// on a CPU with their target features, and `load` reads `WIDTH` values from
/// a raw pointer that must be valid for them.
trait Lanes: Copy {
    const WIDTH: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(values: *const f32) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// acc + diff², fused where the instruction set has FMA.
    unsafe fn add_square(acc: Self, diff: Self) -> Self;
    /// Sums the lanes in f64.
    unsafe fn sum(self) -> f64;
}

/// Eight lanes as a plain array, which LLVM maps onto the target's default
/// vector unit (two SSE2 registers on x86-64).
#[derive(Clone, Copy)]
struct Portable([f32; 8]);

impl Lanes for Portable {
    const WIDTH: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }

    #[inline(always)]
    unsafe fn load(values: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable values.
        Portable(unsafe { values.cast::<[f32; 8]>().read_unaligned() })
    }

    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l] + b.0[l]))
    }

    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l] - b.0[l]))
    }

    #[inline(always)]
    unsafe fn add_square(acc: Self, diff: Self) -> Self {
        Portable(std::array::from_fn(|l| acc.0[l] + diff.0[l] * diff.0[l]))
    }

    #[inline(always)]
    unsafe fn sum(self) -> f64 {
        self.0.iter().map(|&v| v as f64).sum()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// Eight lanes in one AVX register; needs AVX2 and FMA.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256);

    impl Lanes for Avx2 {
        const WIDTH: usize = 8;

        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(unsafe { _mm256_setzero_ps() })
        }

        #[inline(always)]
        unsafe fn load(values: *const f32) -> Self {
            Avx2(unsafe { _mm256_loadu_ps(values) })
        }

        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Avx2(unsafe { _mm256_add_ps(a.0, b.0) })
        }

        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            Avx2(unsafe { _mm256_sub_ps(a.0, b.0) })
        }

        #[inline(always)]
        unsafe fn add_square(acc: Self, diff: Self) -> Self {
            Avx2(unsafe { _mm256_fmadd_ps(diff.0, diff.0, acc.0) })
        }

        #[inline(always)]
        unsafe fn sum(self) -> f64 {
            let mut lanes = [0f32; 8];
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), self.0) };
            lanes.iter().map(|&v| v as f64).sum()
        }
    }

    /// Sixteen lanes in one AVX-512 register; needs AVX-512F and FMA.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl Lanes for Avx512 {
        const WIDTH: usize = 16;

        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }

        #[inline(always)]
        unsafe fn load(values: *const f32) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(values) })
        }

        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Avx512(unsafe { _mm512_add_ps(a.0, b.0) })
        }

        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            Avx512(unsafe { _mm512_sub_ps(a.0, b.0) })
        }

        #[inline(always)]
        unsafe fn add_square(acc: Self, diff: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(diff.0, diff.0, acc.0) })
        }

        #[inline(always)]
        unsafe fn sum(self) -> f64 {
            let mut lanes = [0f32; 16];
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), self.0) };
            lanes.iter().map(|&v| v as f64).sum()
        }
    }
}

/// Panics unless every slice has the length of the first: the kernels read
/// all of them at the offsets of the first, so this check is what makes
/// their raw loads stay in bounds.
#[inline(always)]
fn assert_same_len(len: usize, slices: &[&[f32]]) {
    assert!(
        slices.iter().all(|s| s.len() == len),
        "kernel slices differ in length"
    );
}

/// Σ (x[c] − y[c])² over the few coordinates past the last full register,
/// in f32 like the lanes (so that an overflow shows as +Inf here too).
#[inline(always)]
fn tail_sq_distance(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(a, b)| {
            let diff = a - b;
            (diff * diff) as f64
        })
        .sum()
}

/// For a tile of rows `xs` × `ys`, the sums Σ_c (x[c] − y[c])² over one
/// chunk of at most [`CHUNK`] coordinates, into `out`. `PREFETCH_X` and
/// `PREFETCH_Y` prefetch the `xs` and `ys` rows [`PREFETCH_AHEAD`]
/// coordinates ahead.
///
/// # Safety
///
/// The CPU must support `V`'s target features.
#[inline(always)]
unsafe fn tile<
    V: Lanes,
    const A: usize,
    const B: usize,
    const PREFETCH_X: bool,
    const PREFETCH_Y: bool,
>(
    xs: [&[f32]; A],
    ys: [&[f32]; B],
    out: &mut [[f64; B]; A],
) {
    let len = xs[0].len();
    assert_same_len(len, &xs);
    assert_same_len(len, &ys);
    let full = len / V::WIDTH * V::WIDTH;
    // SAFETY: every load reads V::WIDTH values at offset c with
    // c + V::WIDTH ≤ full ≤ len, the length of every slice.
    unsafe {
        let mut acc = [[V::zero(); B]; A];
        let mut c = 0;
        while c < full {
            let x: [V; A] = std::array::from_fn(|a| V::load(xs[a].as_ptr().add(c)));
            if PREFETCH_X {
                for row in &xs {
                    prefetch(row.as_ptr().wrapping_add(c + PREFETCH_AHEAD));
                }
            }
            if PREFETCH_Y {
                for row in &ys {
                    prefetch(row.as_ptr().wrapping_add(c + PREFETCH_AHEAD));
                }
            }
            for b in 0..B {
                let y = V::load(ys[b].as_ptr().add(c));
                for a in 0..A {
                    acc[a][b] = V::add_square(acc[a][b], V::sub(x[a], y));
                }
            }
            c += V::WIDTH;
        }
        for a in 0..A {
            for b in 0..B {
                out[a][b] = acc[a][b].sum() + tail_sq_distance(&xs[a][full..], &ys[b][full..]);
            }
        }
    }
}

/// For `G` rows, the sums Σ_c (x_a[c] − x_b[c])² of every pair a < b over one
/// chunk, in `out[a][b]`; the other entries are left as they are.
///
/// # Safety
///
/// The CPU must support `V`'s target features.
#[inline(always)]
unsafe fn triangle<V: Lanes, const G: usize>(rows: [&[f32]; G], out: &mut [[f64; G]; G]) {
    let len = rows[0].len();
    assert_same_len(len, &rows);
    let full = len / V::WIDTH * V::WIDTH;
    // SAFETY: as in `tile`, every load ends within `full ≤ len`.
    unsafe {
        let mut acc = [[V::zero(); G]; G];
        let mut c = 0;
        while c < full {
            let x: [V; G] = std::array::from_fn(|r| V::load(rows[r].as_ptr().add(c)));
            for row in &rows {
                prefetch(row.as_ptr().wrapping_add(c + PREFETCH_AHEAD));
            }
            for a in 0..G {
                for b in a + 1..G {
                    acc[a][b] = V::add_square(acc[a][b], V::sub(x[a], x[b]));
                }
            }
            c += V::WIDTH;
        }
        for a in 0..G {
            for b in a + 1..G {
                out[a][b] = acc[a][b].sum() + tail_sq_distance(&rows[a][full..], &rows[b][full..]);
            }
        }
    }
}

/// Checks that every value is finite. x − x is 0 for finite x and NaN for
/// NaN or ±Inf, so one lane-wise sum finds both without a branch per value.
///
/// # Safety
///
/// The CPU must support `V`'s target features.
#[inline(always)]
unsafe fn all_finite<V: Lanes>(values: &[f32]) -> bool {
    let full = values.len() / V::WIDTH * V::WIDTH;
    // SAFETY: every load ends within `full ≤ values.len()`.
    let lanes = unsafe {
        let mut acc = V::zero();
        let mut c = 0;
        while c < full {
            let x = V::load(values.as_ptr().add(c));
            acc = V::add(acc, V::sub(x, x));
            c += V::WIDTH;
        }
        acc.sum()
    };
    lanes == 0.0 && values[full..].iter().all(|v| v.is_finite())
}

/// Σ values, in four accumulators so that the adds do not wait on each
/// other.
///
/// # Safety
///
/// The CPU must support `V`'s target features.
#[inline(always)]
unsafe fn sum_all<V: Lanes>(values: &[f32]) -> f64 {
    let step = 4 * V::WIDTH;
    let full = values.len() / step * step;
    // SAFETY: every load ends within `full ≤ values.len()`.
    let lanes = unsafe {
        let mut acc = [V::zero(); 4];
        let mut c = 0;
        while c < full {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = V::add(*a, V::load(values.as_ptr().add(c + k * V::WIDTH)));
            }
            c += step;
        }
        acc.iter().map(|a| a.sum()).sum::<f64>()
    };
    lanes + values[full..].iter().map(|&v| v as f64).sum::<f64>()
}

/// Adds the squared distances of every pair i < j of `rows` over their
/// common coordinates (one block, small enough to stay in the L2 cache while
/// every pair reads it) into `sums[i * n + j]`.
///
/// # Safety
///
/// The CPU must support `V`'s target features.
#[inline(always)]
unsafe fn block_pairs<V: Lanes>(rows: &[&[f32]], sums: &mut [f64]) {
    let n = rows.len();
    let len = rows[0].len();
    let groups = n / GROUP;
    let mut start = 0;
    while start < len {
        let end = (start + CHUNK).min(len);
        let chunk = |i: usize| &rows[i][start..end];
        for g in 0..groups {
            let base = g * GROUP;
            let xs: [&[f32]; GROUP] = std::array::from_fn(|a| chunk(base + a));
            let mut diagonal = [[0f64; GROUP]; GROUP];
            // SAFETY: the caller guarantees V's features.
            unsafe { triangle::<V, GROUP>(xs, &mut diagonal) };
            for a in 0..GROUP {
                for b in a + 1..GROUP {
                    sums[(base + a) * n + base + b] += diagonal[a][b];
                }
            }
            for h in g + 1..groups {
                let other = h * GROUP;
                let ys: [&[f32]; GROUP] = std::array::from_fn(|b| chunk(other + b));
                let mut out = [[0f64; GROUP]; GROUP];
                // The first row of tiles prefetches every group once per
                // chunk. Prefetching in every tile slowed n ≥ 32, where the
                // tiles are bound by arithmetic rather than by memory.
                // SAFETY: the caller guarantees V's features.
                unsafe {
                    match (g, h) {
                        (0, 1) => tile::<V, GROUP, GROUP, true, true>(xs, ys, &mut out),
                        (0, _) => tile::<V, GROUP, GROUP, false, true>(xs, ys, &mut out),
                        _ => tile::<V, GROUP, GROUP, false, false>(xs, ys, &mut out),
                    }
                };
                for a in 0..GROUP {
                    for b in 0..GROUP {
                        sums[(base + a) * n + other + b] += out[a][b];
                    }
                }
            }
        }
        // The n mod GROUP rows left over pair with the grouped rows one
        // group at a time and with each other one pair at a time.
        for i in groups * GROUP..n {
            let x = [chunk(i)];
            for g in 0..groups {
                let base = g * GROUP;
                let ys: [&[f32]; GROUP] = std::array::from_fn(|b| chunk(base + b));
                let mut out = [[0f64; GROUP]; 1];
                // SAFETY: the caller guarantees V's features.
                unsafe { tile::<V, 1, GROUP, false, false>(x, ys, &mut out) };
                for b in 0..GROUP {
                    sums[(base + b) * n + i] += out[0][b];
                }
            }
            for j in i + 1..n {
                let mut out = [[0f64; 1]; 1];
                // SAFETY: the caller guarantees V's features.
                unsafe { tile::<V, 1, 1, false, false>(x, [chunk(j)], &mut out) };
                sums[i * n + j] += out[0][0];
            }
        }
        start = end;
    }
}

/// Adds |x_i − z|² over the block's coordinates into `sums[i]`.
///
/// # Safety
///
/// The CPU must support `V`'s target features.
#[inline(always)]
unsafe fn block_to_point<V: Lanes>(rows: &[&[f32]], point: &[f32], sums: &mut [f64]) {
    let n = rows.len();
    let len = point.len();
    let mut start = 0;
    while start < len {
        let end = (start + CHUNK).min(len);
        let z = [&point[start..end]];
        let mut i = 0;
        while i + GROUP <= n {
            let xs: [&[f32]; GROUP] = std::array::from_fn(|a| &rows[i + a][start..end]);
            let mut out = [[0f64; 1]; GROUP];
            // SAFETY: the caller guarantees V's features.
            unsafe { tile::<V, GROUP, 1, false, false>(xs, z, &mut out) };
            for a in 0..GROUP {
                sums[i + a] += out[a][0];
            }
            i += GROUP;
        }
        for (row, sum) in rows[i..].iter().zip(&mut sums[i..]) {
            let mut out = [[0f64; 1]; 1];
            // SAFETY: the caller guarantees V's features.
            unsafe { tile::<V, 1, 1, false, false>([&row[start..end]], z, &mut out) };
            *sum += out[0][0];
        }
        start = end;
    }
}

/// Adds Σ_i weights[i] · rows[i][c] in f64 into `acc[c]`, skipping zero
/// weights so that a non-finite row with weight 0 cannot poison the sum.
#[inline(always)]
fn weighted_sum(rows: &[&[f32]], weights: &[f64], acc: &mut [f64]) {
    for (row, &w) in rows.iter().zip(weights) {
        if w == 0.0 {
            continue;
        }
        for (a, &v) in acc.iter_mut().zip(row.iter()) {
            *a += w * v as f64;
        }
    }
}

/// Declares a crate-visible dispatcher `$name` that runs the generic kernel
/// `$kernel` with the lanes of the given [`SimdLevel`], compiled with that
/// level's target features.
macro_rules! dispatch {
    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $kernel:ident
    ) => {
        $(#[$doc])*
        pub(crate) fn $name(level: SimdLevel, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: this function is compiled with AVX-512F.
                    unsafe { $kernel::<x86::Avx512>($($arg),*) }
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: this function is compiled with AVX2 and FMA.
                    unsafe { $kernel::<x86::Avx2>($($arg),*) }
                }
                // SAFETY: each arm runs only when this CPU has the features
                // that its function was compiled with.
                match level {
                    SimdLevel::Avx512 if level.is_supported() => return unsafe { avx512($($arg),*) },
                    SimdLevel::Avx2 if level.is_supported() => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = level;
            // SAFETY: Portable needs no target feature.
            unsafe { $kernel::<Portable>($($arg),*) }
        }
    };
}

/// Adds Σ_i weights[i] · rows[i][c] into `acc[c]` (same kernel on every
/// level: it is memory-bound, and LLVM vectorizes the f64 loop by itself).
///
/// # Safety
///
/// None beyond the signature; `unsafe` only to fit [`dispatch!`].
#[inline(always)]
unsafe fn weighted_sum_kernel<V: Lanes>(rows: &[&[f32]], weights: &[f64], acc: &mut [f64]) {
    weighted_sum(rows, weights, acc)
}

dispatch! {
    /// Adds the squared distance of every pair i < j of the block's rows into
    /// `sums[i * n + j]` (n = rows.len()).
    fn pair_sums(rows: &[&[f32]], sums: &mut [f64]) = block_pairs
}

dispatch! {
    /// Adds |x_i − z|² over the block's coordinates into `sums[i]`.
    fn point_sums(rows: &[&[f32]], point: &[f32], sums: &mut [f64]) = block_to_point
}

dispatch! {
    /// Σ values, for the streaming read benchmark.
    fn sum(values: &[f32]) -> f64 = sum_all
}

dispatch! {
    /// Checks that every value is finite (no NaN, no ±Inf).
    fn finite(values: &[f32]) -> bool = all_finite
}

dispatch! {
    /// Adds Σ_i weights[i] · rows[i][c] into `acc[c]` in f64, skipping rows of
    /// weight 0.
    fn weighted(rows: &[&[f32]], weights: &[f64], acc: &mut [f64]) = weighted_sum_kernel
}
