//! Batched matmul through the `gemm` crate's strided GEMM: transposed and broadcast
//! operands are read through their strides, never copied. f32 and f64 are multiplied
//! in place, f16 is widened to f32 (f32 accumulation, as on the GPU).

use crate::threads::PARALLEL_FLOPS;
use crate::CpuStorage;
use kiln_core::{HostBuffer, MatmulSpec, Result};

/// A GEMM operand in memory: its first element, and its row and column strides in
/// elements.
#[derive(Clone, Copy)]
pub(crate) struct Operand<T> {
    pub at: *const T,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// Terms one GEMM call sums per output at most. Longer products are split here into
/// `depth_blocks`, added into the output in order. The `gemm` crate would otherwise split
/// the depth itself, at places that depend on the shape (512 for a product with at most
/// 64 rows and columns, balanced blocks of its cache-sized depth, 512 or more, for the
/// rest) and on the cache it finds; it never splits a block of 512 or fewer. So each
/// output's bits depend on `k` alone: not on how a product is cut into blocks of rows or
/// columns (convolution cuts its products differently from the plain matmul), nor on
/// the machine's caches. (A cut down to a single row or column is the exception: gemm
/// computes those as matrix-vector products, in an order of its own.)
const DEPTH_BLOCK: usize = 512;

/// `(first, count)` blocks of a `k`-term sum: as few as `DEPTH_BLOCK` allows, of equal
/// length but the last.
fn depth_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let block = k.div_ceil(k.div_ceil(DEPTH_BLOCK).max(1)).max(1);
    (0..k)
        .step_by(block)
        .map(move |first| (first, block.min(k - first)))
}

/// `out = lhs @ rhs`, or `out += lhs @ rhs` when `accumulate`, for an `m x k` lhs and a
/// `k x n` rhs; `out` is `m x n` with row stride `ld`. Without `accumulate`, `out` is
/// written and never read. The GEMM may split the product over `threads` of the pool.
///
/// # Safety
/// The operands' and the output's elements lie inside live allocations, the output
/// overlaps neither operand, and nothing else touches the output meanwhile. `k > 0`.
pub(crate) unsafe fn product<T: Copy + From<f32> + 'static>(
    (m, n, k): (usize, usize, usize),
    out: *mut T,
    ld: usize,
    accumulate: bool,
    lhs: Operand<T>,
    rhs: Operand<T>,
    threads: usize,
) {
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let one = T::from(1.0);
    debug_assert!(
        k > 0,
        "an empty sum writes nothing: callers fill zeros themselves"
    );
    for (first, depth) in depth_blocks(k) {
        // SAFETY: passed on from the caller; the block's terms are columns `first..` of
        // lhs and rows `first..` of rhs. `gemm` computes `out = alpha*out +
        // beta*lhs@rhs`, reading `out` only when told to: from the second block on.
        unsafe {
            gemm::gemm(
                m,
                n,
                depth,
                out,
                1,
                ld as isize,
                accumulate || first > 0,
                lhs.at.wrapping_offset(first as isize * lhs.col_stride),
                lhs.col_stride,
                lhs.row_stride,
                rhs.at.wrapping_offset(first as isize * rhs.row_stride),
                rhs.col_stride,
                rhs.row_stride,
                one,
                one,
                false,
                false,
                false,
                parallelism,
            )
        }
    }
}

/// Multiply-adds per block when a short, wide product is split into blocks of columns.
const BLOCK_FLOPS: usize = 1 << 21;
/// Columns per block at least: each block packs the left operand again.
const MIN_BLOCK_COLUMNS: usize = 256;

/// The blocks of output columns, `(first, count)`, an `m x k @ k x n` product is
/// computed in: one block unless it has fewer rows than columns. The GEMM splits a
/// short, wide product badly between threads (64x768 @ 768x3072: 5.1 ms on two threads,
/// 3.1 on one; in two halves of columns side by side, 1.7), so such products are split
/// into blocks of about `BLOCK_FLOPS` here, by size alone.
pub(crate) fn column_blocks(m: usize, n: usize, k: usize) -> impl Iterator<Item = (usize, usize)> {
    let width = if m >= n {
        n
    } else {
        (BLOCK_FLOPS / (m * k).max(1))
            .next_multiple_of(64)
            .max(MIN_BLOCK_COLUMNS)
    };
    (0..n)
        .step_by(width.max(1))
        .map(move |first| (first, width.min(n - first)))
}

/// How `count` products (or blocks of products), `flops` multiply-adds in all, share the
/// pool: whether to spread them over it, and how many threads each one's GEMM may use.
/// With at least as many products as threads, each runs on one thread; with fewer, they
/// run one after another, each split over the pool by the GEMM. Its split changes no bit
/// of a product (`a_split_product_keeps_its_bits`) and each output is computed by one
/// product, so neither choice changes the result.
pub(crate) fn share_pool(count: usize, flops: usize) -> (bool, usize) {
    let threads = if flops >= PARALLEL_FLOPS {
        crate::threads::count()
    } else {
        1
    };
    if count >= threads {
        (threads > 1, 1)
    } else {
        (false, threads)
    }
}

/// A pointer to an output that tasks write in disjoint parts.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: each task writes only its own part of the output.
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The output element `i` places on. A method, so that a closure captures the
    /// whole `SharedOut` (which is `Sync`) rather than its pointer field.
    fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// One GEMM per batch, in the blocks of `column_blocks`.
fn gemm<T: Copy + Default + From<f32> + Send + Sync + 'static>(
    lhs: &[T],
    rhs: &[T],
    spec: &MatmulSpec,
) -> Vec<T> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let len = spec.batch[0] * spec.batch[1] * m * n;
    if m * n == 0 || k == 0 {
        return vec![T::default(); len]; // nothing to compute, or an empty sum: zeros
    }
    // Not zero-filled first: the GEMM writes every output without reading it.
    let mut out: Vec<T> = Vec::with_capacity(len);
    let (l, r) = (&spec.lhs, &spec.rhs);
    // (batch, first column, columns)
    let tasks: Vec<_> = (0..spec.batch[0] * spec.batch[1])
        .flat_map(|i| column_blocks(m, n, k).map(move |(first, cols)| (i, first, cols)))
        .collect();
    let (spread, threads) = share_pool(tasks.len(), flops(spec));
    let to = SharedOut(out.as_mut_ptr());
    let run = |(i, first, cols): (usize, usize, usize)| {
        let (b0, b1) = (i / spec.batch[1], i % spec.batch[1]);
        let a = l.offset + b0 * l.batch[0] + b1 * l.batch[1];
        let b = r.offset + b0 * r.batch[0] + b1 * r.batch[1] + first * r.col_stride;
        // SAFETY: the tensor layer built these strides and offsets from layouts that lie
        // inside their storage; the task's outputs are the m x cols block at column
        // `first` of the batch's m x n, inside `len`, and no other task's.
        unsafe {
            product(
                (m, cols, k),
                to.at(i * m * n + first),
                n,
                false,
                Operand {
                    at: lhs.as_ptr().add(a),
                    row_stride: l.row_stride as isize,
                    col_stride: l.col_stride as isize,
                },
                Operand {
                    at: rhs.as_ptr().add(b),
                    row_stride: r.row_stride as isize,
                    col_stride: r.col_stride as isize,
                },
                threads,
            )
        }
    };
    crate::threads::run_tasks(tasks, spread, run);
    // SAFETY: the tasks' blocks cover the `len` elements, and each GEMM wrote its block.
    unsafe { out.set_len(len) };
    out
}

/// The product's multiply-adds over every batch.
fn flops(spec: &MatmulSpec) -> usize {
    spec.batch[0] * spec.batch[1] * spec.m * spec.n * spec.k
}

pub fn matmul(lhs: &CpuStorage, rhs: &CpuStorage, spec: &MatmulSpec) -> Result<CpuStorage> {
    Ok(CpuStorage(match (&lhs.0, &rhs.0) {
        (HostBuffer::F32(a), HostBuffer::F32(b)) => HostBuffer::F32(gemm(a, b, spec)),
        (HostBuffer::F64(a), HostBuffer::F64(b)) => HostBuffer::F64(gemm(a, b, spec)),
        (a, b) => {
            let out = gemm(&a.to_f32_vec(), &b.to_f32_vec(), spec);
            HostBuffer::from_f32(a.dtype(), out)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::MatmulOperand;

    /// Leaves NaN in freed heap memory, so that an output the GEMM failed to write
    /// (it is not zero-filled first) shows up as NaN rather than as a lucky zero.
    fn poison_the_heap() {
        for len in [1 << 10, 1 << 14, 1 << 18] {
            drop(std::hint::black_box(vec![f32::NAN; len]));
        }
    }

    #[test]
    fn every_output_is_written_and_matches_the_plain_sum() {
        // Odd sizes, a batch, a transposed rhs, a broadcast lhs, a single row or column
        // (the GEMM's matrix-vector paths), sizes the GEMM splits between threads, and
        // short, wide products split into blocks of columns (the last one narrower).
        for &(batch, m, n, k, rhs_transposed) in &[
            (1, 1, 1, 1, false),
            (3, 5, 7, 9, true),
            (2, 65, 33, 17, false),
            (1, 1, 40, 33, true),
            (2, 37, 1, 50, false),
            (1, 300, 129, 70, true),
            (1, 300, 129, 70, false),
            (2, 8, 2000, 300, false),
            (1, 8, 2000, 300, true),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let rhs: Vec<f32> = (0..batch * k * n)
                .map(|i| ((i * 13) % 7) as f32 - 3.0)
                .collect();
            let (rs, cs) = if rhs_transposed { (1, k) } else { (n, 1) };
            let spec = MatmulSpec {
                batch: [1, batch],
                m,
                n,
                k,
                // lhs broadcast over the batch (batch stride 0).
                lhs: MatmulOperand {
                    batch: [0, 0],
                    row_stride: k,
                    col_stride: 1,
                    offset: 0,
                },
                rhs: MatmulOperand {
                    batch: [0, k * n],
                    row_stride: rs,
                    col_stride: cs,
                    offset: 0,
                },
            };
            poison_the_heap();
            let out = gemm(&lhs, &rhs, &spec);
            for b in 0..batch {
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k)
                            .map(|p| lhs[i * k + p] * rhs[b * k * n + p * rs + j * cs])
                            .sum();
                        let got = out[(b * m + i) * n + j];
                        assert_eq!(got, want, "{batch}x{m}x{n}x{k}: [{b}, {i}, {j}]");
                    }
                }
            }
        }
    }

    /// A product split over 2, 3 or 4 threads by the GEMM has every bit of the product
    /// on one thread, for shapes on each of its paths (small, matrix-vector, large, a
    /// broadcast row of stride 0); the thread-count guarantee rests on this.
    #[test]
    fn a_split_product_keeps_its_bits() {
        let mut draw = crate::test_draws::uniform_draws(9);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for &(m, n, k, lhs_row_stride) in &[
            (300, 129, 700, 700),
            (1024, 96, 1000, 1000),
            (64, 64, 777, 777),
            (1, 3000, 800, 800),
            (700, 500, 300, 0),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|_| draw()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|_| draw()).collect();
            let on = |threads: usize| {
                let mut out = vec![f32::NAN; m * n];
                // SAFETY: lhs is m x k (or one row read m times), rhs k x n, out m x n.
                pool.install(|| unsafe {
                    product(
                        (m, n, k),
                        out.as_mut_ptr(),
                        n,
                        false,
                        Operand {
                            at: lhs.as_ptr(),
                            row_stride: lhs_row_stride as isize,
                            col_stride: 1,
                        },
                        Operand {
                            at: rhs.as_ptr(),
                            row_stride: n as isize,
                            col_stride: 1,
                        },
                        threads,
                    )
                });
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let one = on(1);
            let nan = one.iter().filter(|&&b| f32::from_bits(b).is_nan()).count();
            assert_eq!(nan, 0, "{m}x{n}x{k}: outputs left unwritten");
            for threads in [2, 3, 4] {
                assert!(on(threads) == one, "{m}x{n}x{k} on {threads} threads");
            }
        }
    }

    /// A product cut into blocks of rows or of columns, each computed by its own GEMM,
    /// keeps the whole product's bits: `product` sums the same depth blocks whatever
    /// the shape. The shapes straddle the size (64 rows and columns) at which the
    /// `gemm` crate would otherwise change where it splits a sum of more than 512 terms.
    #[test]
    fn a_product_cut_into_blocks_keeps_its_bits() {
        let mut draw = crate::test_draws::uniform_draws(5);
        for &(m, n, k, (row_cut, column_cut)) in &[
            (80, 36, 1152, (48, 20)),
            (36, 80, 1152, (20, 30)),
            (300, 129, 700, (64, 65)),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|_| draw()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|_| draw()).collect();
            // rows `r` and columns `c` of the product, into `out` (m x n)
            let block = |out: &mut [f32], r: std::ops::Range<usize>, c: std::ops::Range<usize>| {
                // SAFETY: lhs is m x k, rhs k x n, and out m x n, of which the block
                // of rows `r` and columns `c` is written.
                unsafe {
                    product(
                        (r.len(), c.len(), k),
                        out.as_mut_ptr().add(r.start * n + c.start),
                        n,
                        false,
                        Operand {
                            at: lhs.as_ptr().add(r.start * k),
                            row_stride: k as isize,
                            col_stride: 1,
                        },
                        Operand {
                            at: rhs.as_ptr().add(c.start),
                            row_stride: n as isize,
                            col_stride: 1,
                        },
                        1,
                    )
                }
            };
            let mut whole = vec![f32::NAN; m * n];
            block(&mut whole, 0..m, 0..n);
            let (mut by_rows, mut by_columns) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            block(&mut by_rows, 0..row_cut, 0..n);
            block(&mut by_rows, row_cut..m, 0..n);
            block(&mut by_columns, 0..m, 0..column_cut);
            block(&mut by_columns, 0..m, column_cut..n);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(whole.iter().all(|v| v.is_finite()), "{m}x{n}x{k}");
            assert!(
                bits(&by_rows) == bits(&whole),
                "{m}x{n}x{k} cut at row {row_cut}"
            );
            let cut = column_cut;
            assert!(
                bits(&by_columns) == bits(&whole),
                "{m}x{n}x{k} cut at column {cut}"
            );
        }
    }
}
