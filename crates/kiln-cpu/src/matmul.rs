//! Batched matmul through `matrixmultiply`'s strided GEMM: transposed and broadcast
//! operands are read through their strides, never copied. f32 uses SGEMM on the data
//! in place, f16 is widened to f32 (f32 accumulation, as on the GPU), f64 uses DGEMM.

use crate::threads::{PARALLEL_FLOPS, TASK_FLOPS};
use crate::CpuStorage;
use kiln_core::{HostBuffer, MatmulSpec, Result};

/// Rows per task at least: each task packs the whole right operand again, which costs
/// about 1/rows of its arithmetic.
const MIN_TASK_ROWS: usize = 64;

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
    let mut out = vec![T::default(); spec.batch[0] * spec.batch[1] * m * n];
    if m * n == 0 || k == 0 {
        return out; // nothing to compute, or an empty sum (the output stays zero)
    }
    let (l, r) = (&spec.lhs, &spec.rhs);
    let rows = (TASK_FLOPS / (n * k)).max(MIN_TASK_ROWS).min(m);
    // (lhs offset of the task's first row, rhs offset, the task's output rows)
    let mut tasks = Vec::new();
    for (i, c) in out.chunks_mut(m * n).enumerate() {
        let (b0, b1) = (i / spec.batch[1], i % spec.batch[1]);
        let a = l.offset + b0 * l.batch[0] + b1 * l.batch[1];
        let b = r.offset + b0 * r.batch[0] + b1 * r.batch[1];
        for (t, part) in c.chunks_mut(rows * n).enumerate() {
            tasks.push((a + t * rows * l.row_stride, b, part));
        }
    }
    let run = |(a, b, part): (usize, usize, &mut [T])| {
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
                part.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    let parallel = flops(spec) >= PARALLEL_FLOPS;
    crate::threads::run_tasks(tasks, parallel, run);
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
