//! Batched matmul through `matrixmultiply`'s strided GEMM: transposed and broadcast
//! operands are read through their strides, never copied. f32 uses SGEMM on the data
//! in place, f16 is widened to f32 (f32 accumulation, as on the GPU), f64 uses DGEMM.

use crate::CpuStorage;
use kiln_core::{HostBuffer, MatmulSpec, Result};

/// One GEMM per batch; `gemm(a_offset, b_offset, c_offset)` runs it.
fn for_each_batch(spec: &MatmulSpec, mut gemm: impl FnMut(usize, usize, usize)) {
    if spec.m * spec.n == 0 || spec.k == 0 {
        return; // nothing to compute, or an empty sum (the output stays zero)
    }
    for b0 in 0..spec.batch[0] {
        for b1 in 0..spec.batch[1] {
            let a = spec.lhs.offset + b0 * spec.lhs.batch[0] + b1 * spec.lhs.batch[1];
            let b = spec.rhs.offset + b0 * spec.rhs.batch[0] + b1 * spec.rhs.batch[1];
            gemm(a, b, (b0 * spec.batch[1] + b1) * spec.m * spec.n);
        }
    }
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

fn gemm<T: Copy + Default>(
    lhs: &[T],
    rhs: &[T],
    spec: &MatmulSpec,
    kernel: Gemm<T>,
    one: T,
) -> Vec<T> {
    let mut out = vec![T::default(); spec.batch[0] * spec.batch[1] * spec.m * spec.n];
    let (l, r) = (&spec.lhs, &spec.rhs);
    for_each_batch(spec, |a, b, c| {
        // SAFETY: the tensor layer built these strides and offsets from layouts that lie
        // inside their storage; `out` holds m*n elements per batch.
        unsafe {
            kernel(
                spec.m,
                spec.k,
                spec.n,
                one,
                lhs.as_ptr().add(a),
                l.row_stride as isize,
                l.col_stride as isize,
                rhs.as_ptr().add(b),
                r.row_stride as isize,
                r.col_stride as isize,
                T::default(),
                out.as_mut_ptr().add(c),
                spec.n as isize,
                1,
            );
        }
    });
    out
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
