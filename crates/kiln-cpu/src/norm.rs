//! Layer norm over the rows of compact `[rows, k]` data, in f64 (the input widened as
//! it is read).

use crate::threads::rows_per_task;
use crate::vector::lane_sum;
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
        normalize_rows(part, &x[first * k..], w, b, eps, &round)
    };
    // SAFETY: every task's rows are whole, and `normalize_rows` writes each element.
    unsafe { crate::threads::build_rows(rows * k, k, rows_of) }
}

widest_loop! {
    /// `layer_norm` of the whole rows of `out` (`x` from their first element on).
    fn normalize_rows<T, U>(
        out: &mut [MaybeUninit<U>],
        x: &[T],
        w: &[f64],
        b: &[f64],
        eps: f64,
        round: &impl Fn(f64) -> U,
    ) where [T: Copy + Into<f64>] {
        let k = w.len().max(1);
        for (row, xs) in out.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
            let (mean, rstd) = row_stats(xs, eps);
            for (i, o) in row.iter_mut().enumerate() {
                o.write(round((xs[i].into() - mean) * rstd * w[i] + b[i]));
            }
        }
    }
}

/// A row's mean and `1 / sqrt(variance + eps)` (the biased variance, as PyTorch's).
#[inline(always)]
fn row_stats<T: Copy + Into<f64>>(xs: &[T], eps: f64) -> (f64, f64) {
    let k = xs.len();
    let mean = lane_sum(k, |i| xs[i].into()) / k as f64;
    let var = lane_sum(k, |i| (xs[i].into() - mean).powi(2)) / k as f64;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The gradient of `layer_norm` with respect to its input, row by row, in f64 rounded
/// once: with `x_hat = (x - mean) * rstd` and `h = grad * w`,
/// `dx = rstd * (h - mean(h) - x_hat * mean(h * x_hat))`, the formula the autograd
/// composes from elementwise ops and reductions where a backend has no such kernel.
/// With `weight_products`, also `grad * x_hat`, whose sum over rows is the weight's
/// gradient. Rows in parallel.
pub fn layer_norm_backward<T: Copy + Sync + Into<f64>, U: Send>(
    x: &[T],
    grad: &[T],
    w: &[f64],
    [rows, k]: [usize; 2],
    eps: f64,
    weight_products: bool,
    round: impl Fn(f64) -> U + Sync,
) -> (Vec<U>, Option<Vec<U>>) {
    let rows_of = |start: usize, parts: &mut [&mut [MaybeUninit<U>]]| {
        backward_rows(parts, &x[start..], &grad[start..], w, eps, &round)
    };
    let (count, chunk) = (1 + weight_products as usize, rows_per_task(k) * k.max(1));
    // SAFETY: the chunks are whole rows, and `backward_rows` writes every element of
    // each of its parts.
    let mut outs = unsafe { crate::threads::build_several(count, rows * k, chunk, rows_of) };
    let products = weight_products.then(|| outs.pop()).flatten();
    (outs.remove(0), products)
}

widest_loop! {
    /// `layer_norm_backward` of whole rows: `parts[0]` the input's gradient, `parts[1]`
    /// (if asked for) `grad * x_hat`; `x` and `grad` from the rows' first element on.
    fn backward_rows<T, U>(
        parts: &mut [&mut [MaybeUninit<U>]],
        x: &[T],
        grad: &[T],
        w: &[f64],
        eps: f64,
        round: &impl Fn(f64) -> U,
    ) where [T: Copy + Into<f64>] {
        let k = w.len().max(1);
        let (dx, products) = match parts {
            [dx, rest @ ..] => (dx, rest.first_mut()),
            [] => return,
        };
        let mut products = products.map(|p| p.chunks_exact_mut(k));
        let rows = dx.chunks_exact_mut(k).zip(x.chunks_exact(k)).zip(grad.chunks_exact(k));
        for ((row, xs), gs) in rows {
            let (mean, rstd) = row_stats(xs, eps);
            let x_hat = |i: usize| (xs[i].into() - mean) * rstd;
            let h = |i: usize| gs[i].into() * w[i];
            let h_mean = lane_sum(k, h) / k as f64;
            let hx_mean = lane_sum(k, |i| h(i) * x_hat(i)) / k as f64;
            for (i, o) in row.iter_mut().enumerate() {
                o.write(round(rstd * (h(i) - h_mean - x_hat(i) * hx_mean)));
            }
            if let Some(out) = products.as_mut().and_then(|p| p.next()) {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(round(gs[i].into() * x_hat(i)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row kernel against the composed formula it replaces, each step rounded to
    /// f64 as the autograd's ops would be in f64: x_hat, then h = g * w, the two means,
    /// and `(h - mean(h) - x_hat * mean(h * x_hat)) * rstd`; and the weight products.
    #[test]
    fn the_backward_row_kernel_is_the_composed_formula() {
        let (rows, k, eps) = (5, 37, 1e-5);
        let x: Vec<f64> = (0..rows * k)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.3)
            .collect();
        let g: Vec<f64> = (0..rows * k)
            .map(|i| ((i * 13 % 17) as f64 - 8.0) * 0.1)
            .collect();
        let w: Vec<f64> = (0..k).map(|i| 0.5 + i as f64 * 0.01).collect();
        let (dx, products) = layer_norm_backward(&x, &g, &w, [rows, k], eps, true, |v| v);
        let products = products.expect("asked for");
        let (alone, none) = layer_norm_backward(&x, &g, &w, [rows, k], eps, false, |v| v);
        assert!(alone == dx && none.is_none());
        for r in 0..rows {
            let (xs, gs) = (&x[r * k..][..k], &g[r * k..][..k]);
            let mean = xs.iter().sum::<f64>() / k as f64;
            let centered: Vec<f64> = xs.iter().map(|v| v - mean).collect();
            let var = centered.iter().map(|c| c * c).sum::<f64>() / k as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let x_hat: Vec<f64> = centered.iter().map(|c| c * rstd).collect();
            let h: Vec<f64> = gs.iter().zip(&w).map(|(g, w)| g * w).collect();
            let h_mean = h.iter().sum::<f64>() / k as f64;
            let hx_mean = h.iter().zip(&x_hat).map(|(h, x)| h * x).sum::<f64>() / k as f64;
            for i in 0..k {
                let want = (h[i] - h_mean - x_hat[i] * hx_mean) * rstd;
                let got = dx[r * k + i];
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "dx[{r}, {i}]: {got} vs {want}"
                );
                let want = gs[i] * x_hat[i];
                let got = products[r * k + i];
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "g*x_hat[{r}, {i}]"
                );
            }
        }
    }
}
