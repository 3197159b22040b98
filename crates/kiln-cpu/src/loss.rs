//! Fused cross-entropy: per-row loss from logits and class ids, and its gradient.
//! With label smoothing `s` the target distribution is `(1 - s) * one_hot + s / classes`.
//! Rows are computed in parallel blocks, each row by one task in a fixed order.

use std::mem::MaybeUninit;

widest_loop! {
    /// `out[j] = exp(row[j] - max)` for each `j` (`row` at least as long as `out`).
    fn shifted_exp<>(out: &mut [MaybeUninit<f64>], row: &[f64], max: f64) {
        for (o, &v) in out.iter_mut().zip(row) {
            o.write(crate::special::exp(v - max));
        }
    }
}

/// `exp(row - max(row))` into `out` (as long as `row`); returns `max(row)` and the sum
/// of the terms, added in order.
fn softmax_terms(out: &mut [MaybeUninit<f64>], row: &[f64]) -> (f64, f64) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    shifted_exp(out, row, max);
    // SAFETY: `shifted_exp` wrote every element of `out`.
    let terms = unsafe { &*(out as *const [MaybeUninit<f64>] as *const [f64]) };
    (max, terms.iter().sum())
}

/// `logsumexp(row) - (1 - s) * row[target] - s * mean(row)` for each row.
pub fn cross_entropy(x: &[f64], targets: &[i32], rows: usize, classes: usize, s: f64) -> Vec<f64> {
    let block = crate::threads::rows_per_task(classes);
    let loss_of_block = |b: usize| {
        let mut terms = Vec::with_capacity(classes);
        let first = b * block;
        (first..(first + block).min(rows))
            .map(|r| {
                let row = &x[r * classes..(r + 1) * classes];
                let (max, sum) = softmax_terms(&mut terms.spare_capacity_mut()[..classes], row);
                let lse = max + sum.ln();
                let mean = row.iter().sum::<f64>() / classes as f64;
                lse - (1.0 - s) * row[targets[r] as usize] - s * mean
            })
            .collect::<Vec<_>>()
    };
    let blocks = rows.div_ceil(block);
    let parallel = rows * classes >= crate::threads::PARALLEL_ELEMENTS;
    crate::threads::map_indices(blocks, parallel, loss_of_block).concat()
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
    let rows_of = |first: usize, out: &mut [MaybeUninit<f64>]| {
        for (i, out) in out.chunks_exact_mut(classes).enumerate() {
            let r = first + i;
            let (_, sum) = softmax_terms(out, &x[r * classes..(r + 1) * classes]);
            for (j, o) in out.iter_mut().enumerate() {
                let target = if j == targets[r] as usize {
                    1.0 - s
                } else {
                    0.0
                } + s / classes as f64;
                // SAFETY: `softmax_terms` wrote every element of the row.
                let e = unsafe { o.assume_init() };
                o.write(dloss[r] * (e / sum - target));
            }
        }
    };
    // SAFETY: every chunk is whole rows, and `rows_of` writes each element of each.
    unsafe { crate::threads::build_rows(rows * classes, classes, rows_of) }
}
