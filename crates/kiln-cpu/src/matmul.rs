//! Batched matmul through `matrixmultiply`'s strided GEMM: transposed and broadcast
//! operands are read through their strides, never copied. f32 uses SGEMM on the data
//! in place, f16 is widened to f32 (f32 accumulation, as on the GPU), f64 uses DGEMM.

use crate::threads::{GEMM_TASK_FLOPS, PARALLEL_FLOPS};
use crate::CpuStorage;
use kiln_core::{HostBuffer, MatmulSpec, Result};
use std::mem::MaybeUninit;

/// Rows per task at least: each task packs the whole right operand again, which costs
/// about 1/rows of its arithmetic.
const MIN_TASK_ROWS: usize = 64;

/// Output rows per task of an `m x k @ k x n` product: about `GEMM_TASK_FLOPS`
/// multiply-adds, at least `MIN_TASK_ROWS`, at most `m`.
pub(crate) fn task_rows(m: usize, n: usize, k: usize) -> usize {
    (GEMM_TASK_FLOPS / (n * k).max(1)).max(MIN_TASK_ROWS).min(m)
}

/// `matrixmultiply`'s SGEMM and DGEMM share this signature.
type Gemm<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

/// One GEMM per batch, each split into tasks of whole output rows. The split depends on
/// the shapes alone and every output element is computed by one task, so the result is
/// the same on any number of threads.
fn gemm<T: Copy + Default + Send + Sync>(
    lhs: &[T],
    rhs: &[T],
    spec: &MatmulSpec,
    kernel: Gemm<T>,
    one: T,
) -> Vec<T> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let len = spec.batch[0] * spec.batch[1] * m * n;
    if m * n == 0 || k == 0 {
        return vec![T::default(); len]; // nothing to compute, or an empty sum: zeros
    }
    // Not zero-filled first: with beta = 0 the GEMM writes every element of C without
    // reading it (matrixmultiply's documented contract).
    let mut out = Vec::with_capacity(len);
    let (l, r) = (&spec.lhs, &spec.rhs);
    let rows = task_rows(m, n, k);
    // (lhs offset of the task's first row, rhs offset, the task's output rows)
    let mut tasks = Vec::new();
    for (i, c) in out.spare_capacity_mut()[..len]
        .chunks_mut(m * n)
        .enumerate()
    {
        let (b0, b1) = (i / spec.batch[1], i % spec.batch[1]);
        let a = l.offset + b0 * l.batch[0] + b1 * l.batch[1];
        let b = r.offset + b0 * r.batch[0] + b1 * r.batch[1];
        for (t, part) in c.chunks_mut(rows * n).enumerate() {
            tasks.push((a + t * rows * l.row_stride, b, part));
        }
    }
    let run = |(a, b, part): (usize, usize, &mut [MaybeUninit<T>])| {
        // SAFETY: the tensor layer built these strides and offsets from layouts that lie
        // inside their storage; `part` holds whole rows of the batch's m*n outputs, and
        // `a` is the offset of its first row.
        unsafe {
            kernel(
                part.len() / n,
                k,
                n,
                one,
                lhs.as_ptr().add(a),
                l.row_stride as isize,
                l.col_stride as isize,
                rhs.as_ptr().add(b),
                r.row_stride as isize,
                r.col_stride as isize,
                T::default(),
                part.as_mut_ptr().cast::<T>(),
                n as isize,
                1,
            );
        }
    };
    let parallel = flops(spec) >= PARALLEL_FLOPS;
    crate::threads::run_tasks(tasks, parallel, run);
    // SAFETY: the tasks' parts cover the `len` elements, and each GEMM wrote its part.
    unsafe { out.set_len(len) };
    out
}

/// The product's multiply-adds over every batch.
fn flops(spec: &MatmulSpec) -> usize {
    spec.batch[0] * spec.batch[1] * spec.m * spec.n * spec.k
}

pub fn matmul(lhs: &CpuStorage, rhs: &CpuStorage, spec: &MatmulSpec) -> Result<CpuStorage> {
    Ok(CpuStorage(match (&lhs.0, &rhs.0) {
        (HostBuffer::F32(a), HostBuffer::F32(b)) => {
            HostBuffer::F32(gemm(a, b, spec, matrixmultiply::sgemm, 1.0))
        }
        (HostBuffer::F64(a), HostBuffer::F64(b)) => {
            HostBuffer::F64(gemm(a, b, spec, matrixmultiply::dgemm, 1.0))
        }
        (a, b) => {
            let out = gemm(
                &a.to_f32_vec(),
                &b.to_f32_vec(),
                spec,
                matrixmultiply::sgemm,
                1.0,
            );
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
        // Odd sizes, a batch, a transposed rhs, a broadcast lhs, and sizes that split
        // into several row tasks.
        for &(batch, m, n, k, rhs_transposed) in &[
            (1, 1, 1, 1, false),
            (3, 5, 7, 9, true),
            (2, 65, 33, 17, false),
            (1, 300, 129, 70, true),
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
            let out = gemm(&lhs, &rhs, &spec, matrixmultiply::sgemm, 1.0);
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
}
