//! Layer norm over the rows of compact `[rows, k]` data, in f64 (the input widened as
//! it is read).

/// Biased variance, as PyTorch's layer_norm uses. Rows in parallel.
pub fn layer_norm<T: Copy + Sync + Into<f64>>(
    x: &[T],
    w: &[f64],
    b: &[f64],
    rows: usize,
    k: usize,
    eps: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * k];
    crate::threads::for_rows(&mut out, k, |first, part| {
        for (r, row) in part.chunks_exact_mut(k.max(1)).enumerate() {
            let xs = &x[(first + r) * k..][..k];
            let mean = xs.iter().map(|&v| v.into()).sum::<f64>() / k as f64;
            let var = xs.iter().map(|&v| (v.into() - mean).powi(2)).sum::<f64>() / k as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (i, o) in row.iter_mut().enumerate() {
                *o = (xs[i].into() - mean) * rstd * w[i] + b[i];
            }
        }
    });
    out
}
