//! Gradient-sized output vectors.
//!
//! A fresh vector of d values costs a page fault every 4 KiB the first time
//! it is written: 16,384 faults for a 64 MiB gradient, which took 35 ms on
//! the machine of docs/BENCHMARKS.md, twice as long as reading all 8
//! gradients of the n = 8 case. The vectors here are requested from the OS
//! untouched, advised onto 2 MiB pages where Linux offers transparent huge
//! pages, and filled by all threads, so that the faults are few and run in
//! parallel.

use rayon::prelude::*;

/// Vectors of at least this many bytes are advised onto huge pages: smaller
/// ones may share the allocator's heap pages with other data.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Values copied per rayon task.
const PIECE: usize = 1 << 18;

/// Returns `len` zeros. Large vectors come untouched from the OS, because
/// the allocator requests zeroed pages, and are advised onto huge pages.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    let vector = vec![0f32; len];
    advise_huge_pages(&vector);
    vector
}

/// Resizes `vector` to `len` values that the caller then overwrites. A
/// vector that already contains `len` values is kept as it is, so that a
/// caller aggregating every step writes into memory it has already touched.
pub(crate) fn reuse(vector: &mut Vec<f32>, len: usize) {
    if vector.len() == len {
        return;
    }
    if vector.capacity() >= len {
        vector.clear();
        vector.resize(len, 0.0);
    } else {
        *vector = zeros(len);
    }
}

/// Copies `values` into `vector` with all threads, reusing its memory as
/// [`reuse`] does.
pub(crate) fn copy_into(values: &[f32], vector: &mut Vec<f32>) {
    reuse(vector, values.len());
    vector
        .par_chunks_mut(PIECE)
        .zip(values.par_chunks(PIECE))
        .for_each(|(dst, src)| dst.copy_from_slice(src));
}

/// Asks Linux to back the whole pages of `vector` with transparent huge
/// pages. Only a hint: where the kernel has them disabled, or on other
/// systems, the vector keeps ordinary pages.
fn advise_huge_pages(vector: &[f32]) {
    let bytes = std::mem::size_of_val(vector);
    if bytes < HUGE_PAGE_MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (vector.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (vector.as_ptr() as usize + bytes) / PAGE * PAGE;
        // SAFETY: [start, end) lies within the vector's allocation, which
        // this process owns; MADV_HUGEPAGE changes how its pages are backed,
        // never their contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_exact_at_every_size() {
        for len in [0, 1, PIECE - 1, PIECE + 3, HUGE_PAGE_MIN_BYTES / 4 + 5] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
            let mut vector = Vec::new();
            copy_into(&values, &mut vector);
            assert_eq!(vector, values);
            assert!(zeros(len).iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn reuse_keeps_memory_that_fits() {
        let mut vector = vec![1f32; 100];
        let memory = vector.as_ptr();
        copy_into(&[2.0; 100], &mut vector);
        assert_eq!((vector.as_ptr(), vector[99]), (memory, 2.0));
        copy_into(&[3.0; 40], &mut vector);
        assert_eq!((vector.as_ptr(), vector.len()), (memory, 40));
        reuse(&mut vector, 60);
        assert_eq!((vector.as_ptr(), vector.len()), (memory, 60));
        copy_into(&[4.0; 1000], &mut vector);
        assert_eq!(vector, vec![4.0; 1000]);
    }
}
