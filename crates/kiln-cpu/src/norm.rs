//! Layer norm over the rows of compact `[rows, k]` data, in f64.

/// Biased variance, as PyTorch's layer_norm uses. Rows in parallel.
pub fn layer_norm(x: &[f64], w: &[f64], b: &[f64], rows: usize, k: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; rows * k];
    crate::threads::for_rows(&mut out, k, |first, part| {
        for (r, row) in part.chunks_exact_mut(k.max(1)).enumerate() {
            let xs = &x[(first + r) * k..][..k];
            let mean = xs.iter().sum::<f64>() / k as f64;
            let var = xs.iter().map(|&v| (v - mean).powi(2)).sum::<f64>() / k as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (i, o) in row.iter_mut().enumerate() {
                *o = (xs[i] - mean) * rstd * w[i] + b[i];
            }
        }
    });
    out
}
