//! The CPU backend's threads: one rayon pool for every op, sized by `KILN_NUM_THREADS`
//! (else `RAYON_NUM_THREADS`, else every core). Work is split into chunks whose bounds
//! depend on the sizes alone, never on the thread count, and each output element is
//! computed by one chunk in a fixed order: a result is bitwise the same on 1, 2 or 16
//! threads.

use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Elements below which an elementwise map runs on the calling thread: a hand-off to
/// the pool costs microseconds, which small maps would not earn back. Chosen, not yet
/// swept (docs/BENCHMARKS.md, "CPU backend threads").
pub const PARALLEL_ELEMENTS: usize = 1 << 15;
/// Elements per chunk of a parallel elementwise map.
pub const CHUNK_ELEMENTS: usize = 1 << 14;
/// Multiply-adds per run of images in the conv weight gradient, whose partial sums are
/// added in run order.
pub const WEIGHT_GRAD_RUN_FLOPS: usize = 1 << 22;
/// Multiply-adds below which a product runs on the calling thread.
pub const PARALLEL_FLOPS: usize = 1 << 20;

/// The pool threads' stacks: a main thread's size, since `run_on_pool` runs whole
/// programs on them.
const POOL_STACK_BYTES: usize = 8 << 20;

static STARTED: OnceLock<usize> = OnceLock::new();

/// Sizes rayon's global pool from `KILN_NUM_THREADS` on first use (a program that built
/// the global pool itself keeps its own), and returns the pool's thread count.
pub fn num_threads() -> usize {
    *STARTED.get_or_init(|| start(None))
}

/// Asks for `n` threads unless `KILN_NUM_THREADS` says otherwise: for processes that
/// share a machine's cores (data-parallel ranks). Only before the first CPU op; returns
/// the count in force.
pub fn set_num_threads(n: usize) -> usize {
    *STARTED.get_or_init(|| start(Some(n.max(1))))
}

fn start(fallback: Option<usize>) -> usize {
    let set = std::env::var("KILN_NUM_THREADS").ok();
    let parsed = set
        .as_deref()
        .map(|v| v.parse::<usize>().ok().filter(|&n| n > 0));
    if let (Some(v), Some(None)) = (&set, &parsed) {
        eprintln!("kiln: KILN_NUM_THREADS={v:?} is not a positive whole number; ignoring it");
    }
    // 0 leaves the count to rayon: RAYON_NUM_THREADS, else every core.
    let wanted = parsed.flatten().or(fallback).unwrap_or(0);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(wanted)
        .stack_size(POOL_STACK_BYTES)
        .build_global();
    rayon::current_num_threads()
}

/// Runs `f` on one of the pool's threads and returns what it returns. A program that
/// drives many CPU ops from one thread (a training loop) should run that loop here: each
/// op's chunks are then shared out on the spot, with the loop's thread taking its part,
/// rather than handed to the pool while the caller sleeps and waits to be woken. On two
/// cores that took the char transformer from 96 to 106-109 steps in 18 s (one pair of
/// runs on a noisy machine).
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    num_threads();
    rayon::scope(|_| f())
}

/// The thread count of the pool that would run the work: the one `install`ed, else the
/// global one.
pub fn count() -> usize {
    num_threads();
    rayon::current_num_threads()
}

/// Whether the pool that would run the work has more than one thread: with one, the
/// calling thread runs it and saves a hand-off.
fn several_threads() -> bool {
    count() > 1
}

/// `f(start, chunk)` over `out` in chunks of `chunk` elements (the last may be shorter),
/// in parallel when `out` holds at least `PARALLEL_ELEMENTS`. The chunks are the same
/// either way.
pub fn for_chunks<T: Send>(out: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    for_chunks_when(out, chunk, out.len() >= PARALLEL_ELEMENTS, f)
}

/// `for_chunks`, in parallel when `parallel` (for ops whose work is not their output's
/// size, such as a reduction to a few outputs).
pub fn for_chunks_when<T: Send>(
    out: &mut [T],
    chunk: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    if !parallel || chunk >= out.len() || !several_threads() {
        return out
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, part)| f(i * chunk, part));
    }
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, part)| f(i * chunk, part));
}

/// `f(i)` for each `i` in `0..n`, collected in order; in parallel when `parallel`.
pub fn map_indices<T: Send>(
    n: usize,
    parallel: bool,
    f: impl Fn(usize) -> T + Sync + Send,
) -> Vec<T> {
    if !parallel || n < 2 || !several_threads() {
        return (0..n).map(f).collect();
    }
    (0..n).into_par_iter().map(f).collect()
}

/// A vector of `len` elements written by `f(start, chunk)` over chunks of `chunk`
/// elements, split as `for_chunks` splits them. Nothing is written first: zero-filling
/// each output before computing it was a tenth of a CNN step on one core.
///
/// # Safety
/// `f` must initialise every element of each chunk it is given.
pub unsafe fn build<U: Send>(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync,
) -> Vec<U> {
    let mut out = Vec::with_capacity(len);
    for_chunks(&mut out.spare_capacity_mut()[..len], chunk, f);
    // SAFETY: the chunks cover `0..len`, and the caller's `f` wrote each of them.
    unsafe { out.set_len(len) };
    out
}

/// `build` for `count` vectors of `len` elements written together: `f(start, parts)`
/// gets the chunk starting at `start` of every one (an op with several outputs, such as
/// an optimizer step's parameter and states).
///
/// # Safety
/// `f` must initialise every element of each chunk it is given.
pub unsafe fn build_several<U: Send>(
    count: usize,
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [&mut [MaybeUninit<U>]]) + Sync + Send,
) -> Vec<Vec<U>> {
    let chunk = chunk.max(1);
    let mut outs: Vec<Vec<U>> = (0..count).map(|_| Vec::with_capacity(len)).collect();
    let mut splits: Vec<_> = outs
        .iter_mut()
        .map(|o| o.spare_capacity_mut()[..len].chunks_mut(chunk))
        .collect();
    let tasks: Vec<(usize, Vec<&mut [MaybeUninit<U>]>)> = (0..len.div_ceil(chunk))
        .map(|i| {
            let parts = splits.iter_mut().map(|s| s.next().expect("equally long"));
            (i * chunk, parts.collect())
        })
        .collect();
    run_tasks(tasks, len >= PARALLEL_ELEMENTS, |(start, mut parts)| {
        f(start, &mut parts)
    });
    // SAFETY: the chunks cover `0..len` of every vector, and the caller's `f` wrote them.
    outs.iter_mut().for_each(|o| unsafe { o.set_len(len) });
    outs
}

/// `f(v)` of each element of `v`, in parallel chunks for long slices, each compiled for
/// the CPU's widest vector unit.
pub fn map<T: Copy + Sync, U: Send>(v: &[T], f: impl Fn(T) -> U + Sync) -> Vec<U> {
    // SAFETY: a chunk starting at `start` is no longer than `v[start..]`, so the zip
    // writes each of its elements.
    unsafe {
        build(v.len(), CHUNK_ELEMENTS, |start, part| {
            crate::vector::map_into(part, &v[start..], &f)
        })
    }
}

/// `f(a, b)` of each pair of elements of two equally long slices, in parallel chunks for
/// long slices.
pub fn zip<T: Copy + Sync, U: Send>(a: &[T], b: &[T], f: impl Fn(T, T) -> U + Sync) -> Vec<U> {
    let len = a.len().min(b.len());
    // SAFETY: as in `map`; both slices hold at least `len` elements.
    unsafe {
        build(len, CHUNK_ELEMENTS, |start, part| {
            crate::vector::zip_into(part, &a[start..], &b[start..], &f)
        })
    }
}

/// Runs `f` on each task, on the pool when `parallel`. Tasks own disjoint outputs, so
/// the order they run in does not change the result.
pub fn run_tasks<T: Send>(tasks: Vec<T>, parallel: bool, f: impl Fn(T) + Sync + Send) {
    if !parallel || tasks.len() < 2 || !several_threads() {
        return tasks.into_iter().for_each(f);
    }
    tasks.into_par_iter().for_each(f);
}

/// Rows of `k` elements in a task of a row-wise op: about `CHUNK_ELEMENTS` elements.
pub fn rows_per_task(k: usize) -> usize {
    (CHUNK_ELEMENTS / k.max(1)).max(1)
}

/// Like `build`, in tasks of whole rows of `k` elements (row-wise ops: softmax, layer
/// norm, cross-entropy's gradient), each row computed by one task: `f(first_row, rows)`.
///
/// # Safety
/// `f` must initialise every element of each chunk it is given.
pub unsafe fn build_rows<U: Send>(
    len: usize,
    k: usize,
    f: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync,
) -> Vec<U> {
    let k = k.max(1);
    // SAFETY: passed on to the caller.
    unsafe { build(len, rows_per_task(k) * k, |start, part| f(start / k, part)) }
}
