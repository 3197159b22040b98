//! Large host copies of transfers (a readback out of its mapped staging buffer, an
//! upload into one) on a pool of threads: on an NVIDIA H200 one thread moved 7-10 GB/s
//! out of a mapped range, most of a large readback's time.

use kiln_core::copy_bytes;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Bytes per task. Threads started per transfer cost more than they saved up to 4 MiB
/// (docs/BENCHMARKS.md, "Hardware GPU"), so a pool of `COPY_THREADS` waits.
const BYTES_PER_COPY_TASK: usize = 1 << 20;
/// Threads of the pool.
const COPY_THREADS: usize = 8;

/// The pool: its own threads, so that the CPU backend's pool keeps the size
/// `KILN_NUM_THREADS` gives it. `None` where threads cannot start.
fn copy_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.min(COPY_THREADS))
            .thread_name(|i| format!("kiln-transfer-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Writes every byte of `dst` from `src` (the same length): in tasks of
/// `BYTES_PER_COPY_TASK` on the pool when there are at least two, else on this thread.
pub(crate) fn copy_parallel(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    match copy_pool() {
        Some(pool) if src.len() >= 2 * BYTES_PER_COPY_TASK => pool.install(|| {
            dst.par_chunks_mut(BYTES_PER_COPY_TASK)
                .zip(src.par_chunks(BYTES_PER_COPY_TASK))
                .for_each(|(d, s)| copy_bytes(d, s))
        }),
        _ => copy_bytes(dst, src),
    }
}

/// Writes `src` into the mapped range `dst` (the same length), split as
/// `copy_parallel` splits.
pub(crate) fn copy_into_mapped(mut dst: wgpu::WriteOnly<'_, [u8]>, src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_into_mapped: lengths differ");
    let Some(pool) = copy_pool().filter(|_| src.len() >= 2 * BYTES_PER_COPY_TASK) else {
        dst.copy_from_slice(src);
        return;
    };
    // As an address, which the tasks may share (a `WriteOnly` of a slice is not `Send`).
    let base = dst.as_raw_element_ptr().as_ptr() as usize;
    pool.install(|| {
        src.par_chunks(BYTES_PER_COPY_TASK)
            .enumerate()
            .for_each(|(i, piece)| {
                // SAFETY: the tasks write disjoint ranges inside `dst` (as long as `src`),
                // which stays borrowed until they have all finished, and only write.
                unsafe {
                    let at = (base as *mut u8).add(i * BYTES_PER_COPY_TASK);
                    std::ptr::copy_nonoverlapping(piece.as_ptr(), at, piece.len());
                }
            })
    });
}

/// Threads that `copy_parallel` uses for `bytes`.
pub(crate) fn copy_threads(bytes: usize) -> usize {
    match copy_pool() {
        Some(pool) if bytes >= 2 * BYTES_PER_COPY_TASK => pool.current_num_threads(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_copy_writes_every_byte_in_place() {
        // Enough for several tasks, and not a whole number of them.
        let n = COPY_THREADS * BYTES_PER_COPY_TASK + 4 * 1001 + 3;
        let src: Vec<u8> = (0..n).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut dst = vec![MaybeUninit::new(0xAA_u8); n];
        copy_parallel(&mut dst, &src);
        // SAFETY: every element was initialised above.
        let dst: Vec<u8> = dst.iter().map(|b| unsafe { b.assume_init() }).collect();
        assert!(dst == src, "some byte differs");

        let mut mapped = vec![0xAA_u8; n];
        copy_into_mapped(wgpu::WriteOnly::from(&mut mapped[..]), &src);
        assert!(mapped == src, "some byte differs in the mapped copy");
    }
}
