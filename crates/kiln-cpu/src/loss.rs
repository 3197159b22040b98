//! Fused cross-entropy: per-row loss from logits and class ids, and its gradient.
//! With label smoothing `s` the target distribution is `(1 - s) * one_hot + s / classes`.

/// `logsumexp(row) - (1 - s) * row[target] - s * mean(row)` for each row.
pub fn cross_entropy(x: &[f64], targets: &[i32], rows: usize, classes: usize, s: f64) -> Vec<f64> {
    (0..rows)
        .map(|r| {
            let row = &x[r * classes..(r + 1) * classes];
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max
                + row
                    .iter()
                    .map(|&v| crate::special::exp(v - max))
                    .sum::<f64>()
                    .ln();
            let mean = row.iter().sum::<f64>() / classes as f64;
            lse - (1.0 - s) * row[targets[r] as usize] - s * mean
        })
        .collect()
}

/// `dloss[r] * (softmax(row) - target distribution)` for each row.
pub fn cross_entropy_backward(
    x: &[f64],
    targets: &[i32],
    dloss: &[f64],
    rows: usize,
    classes: usize,
    s: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * classes];
    for r in 0..rows {
        let row = &x[r * classes..(r + 1) * classes];
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&v| crate::special::exp(v - max)).sum();
        for (j, o) in out[r * classes..(r + 1) * classes].iter_mut().enumerate() {
            let target = if j == targets[r] as usize {
                1.0 - s
            } else {
                0.0
            } + s / classes as f64;
            *o = dloss[r] * (crate::special::exp(row[j] - max) / sum - target);
        }
    }
    out
}
