//! Batched matmul through `matrixmultiply`'s strided SGEMM: transposed and broadcast
//! operands are read through their strides, never copied.

use kiln_core::MatmulSpec;

pub fn matmul(lhs: &[f32], rhs: &[f32], spec: &MatmulSpec) -> Vec<f32> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let mut out = vec![0.0f32; spec.batch[0] * spec.batch[1] * m * n];
    if m * n == 0 {
        return out;
    }
    for b0 in 0..spec.batch[0] {
        for b1 in 0..spec.batch[1] {
            let a = spec.lhs.offset + b0 * spec.lhs.batch[0] + b1 * spec.lhs.batch[1];
            let b = spec.rhs.offset + b0 * spec.rhs.batch[0] + b1 * spec.rhs.batch[1];
            let c = (b0 * spec.batch[1] + b1) * m * n;
            if k == 0 {
                continue; // an empty sum is zero
            }
            // SAFETY: the tensor layer checked that every (row, col) of each operand,
            // at these strides and offsets, lies inside its storage; `out` is m*n per batch.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    lhs.as_ptr().add(a),
                    spec.lhs.row_stride as isize,
                    spec.lhs.col_stride as isize,
                    rhs.as_ptr().add(b),
                    spec.rhs.row_stride as isize,
                    spec.rhs.col_stride as isize,
                    0.0,
                    out.as_mut_ptr().add(c),
                    n as isize,
                    1,
                );
            }
        }
    }
    out
}
