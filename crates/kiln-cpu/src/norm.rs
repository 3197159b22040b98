//! Layer norm over the rows of compact `[rows, k]` data, in f64 (the input widened as
//! it is read).

use std::mem::MaybeUninit;

/// Biased variance, as PyTorch's layer_norm uses. Each value is computed in f64 and
/// rounded by `round` into the output's type as it is written. Rows in parallel.
pub fn layer_norm<T: Copy + Sync + Into<f64>, U: Send>(
    x: &[T],
    w: &[f64],
    b: &[f64],
    [rows, k]: [usize; 2],
    eps: f64,
    round: impl Fn(f64) -> U + Sync,
) -> Vec<U> {
    let rows_of = |first: usize, part: &mut [MaybeUninit<U>]| {
        for (r, row) in part.chunks_exact_mut(k.max(1)).enumerate() {
            let xs = &x[(first + r) * k..][..k];
            let mean = xs.iter().map(|&v| v.into()).sum::<f64>() / k as f64;
            let var = xs.iter().map(|&v| (v.into() - mean).powi(2)).sum::<f64>() / k as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (i, o) in row.iter_mut().enumerate() {
                o.write(round((xs[i].into() - mean) * rstd * w[i] + b[i]));
            }
        }
    };
    // SAFETY: every task's rows are whole, and each of their elements is written.
    unsafe { crate::threads::build_rows(rows * k, k, rows_of) }
}
