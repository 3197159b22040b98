//! Row reductions and softmax over compact `[rows, k]` data, accumulated in f64. The
//! input is read in its own dtype and widened element by element, not copied wide first.

use crate::elementwise::{max_nan, min_nan};
use crate::threads::CHUNK_ELEMENTS;
use crate::vector::lane_fold;
use crate::CpuStorage;
use kiln_core::{BackendStorage, HostBuffer, ReduceOp, Result};

pub fn reduce(input: &CpuStorage, op: ReduceOp, rows: usize, k: usize) -> Result<CpuStorage> {
    if op.returns_index() {
        let out = with_elements!(&input.0, data => arg_reduce(data, op, rows, k));
        return Ok(CpuStorage(HostBuffer::I32(out)));
    }
    let out = with_elements!(&input.0, data => fold_middle(data, op, rows, k, 1));
    Ok(CpuStorage::from_floats(input.dtype(), out))
}

/// The index of each row's first extreme. NaN beats every number (PyTorch's argmax and
/// argmin both pick the first NaN).
fn arg_reduce<T: Copy + Into<f64>>(data: &[T], op: ReduceOp, rows: usize, k: usize) -> Vec<i32> {
    let better = |a: f64, b: f64| match (a.is_nan(), b.is_nan()) {
        (_, true) => false,
        (true, false) => true,
        _ if op == ReduceOp::ArgMax => a > b,
        _ => a < b,
    };
    (0..rows)
        .map(|r| {
            let row = &data[r * k..(r + 1) * k];
            // The first extreme wins ties, as in PyTorch.
            let mut idx = 0;
            for (i, &x) in row.iter().enumerate() {
                if better(x.into(), row[idx].into()) {
                    idx = i;
                }
            }
            idx as i32
        })
        .collect()
}

/// The middle dim of a compact `[outer, k, inner]` tensor, walked in memory order.
pub fn reduce_middle(
    input: &CpuStorage,
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
) -> Result<CpuStorage> {
    if op.returns_index() {
        return Err(kiln_core::Error::Unsupported {
            op: op.name(),
            reason: "index reductions go through `reduce`".into(),
        });
    }
    let out = with_elements!(&input.0, data => fold_middle(data, op, outer, k, inner));
    Ok(CpuStorage::from_floats(input.dtype(), out))
}

/// Columns per task at least when reducing over a middle dim: 16 f32s fill a cache line.
const MIN_TASK_COLUMNS: usize = 16;

/// Sum, mean, max, min or product over the middle dim of `[outer, k, inner]` data, each
/// output accumulated in a fixed order: a row (`inner == 1`) in `lane_fold`'s lanes, a
/// column in order of k.
fn fold_middle<T: Copy + Sync + Into<f64>>(
    data: &[T],
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
) -> Vec<f64> {
    fn fold<T: Copy + Sync + Into<f64>>(
        data: &[T],
        [outer, k, inner]: [usize; 3],
        init: f64,
        combine: impl Fn(f64, f64) -> f64 + Sync,
    ) -> Vec<f64> {
        let mut out = vec![init; outer * inner];
        // Split by the work, not by the outputs: a bias gradient sums 2048 rows into 128.
        let parallel = outer * k * inner >= crate::threads::PARALLEL_ELEMENTS;
        if inner == 1 && k > 0 {
            // Whole rows: a fold per row in lanes, rows in parallel. (A plain fold waits
            // on each add: with it, a conv's bias gradient was 6% of a CNN step.)
            let rows = crate::threads::rows_per_task(k);
            crate::threads::for_chunks_when(&mut out, rows, parallel, |first, part| {
                for (r, acc) in part.iter_mut().enumerate() {
                    let row = &data[(first + r) * k..][..k];
                    *acc = lane_fold(k, init, |i| row[i].into(), &combine);
                }
            });
            return out;
        }
        // Tasks of a few columns of `inner` (a task may span the end of one outer slice
        // and the start of the next); each output accumulates in order of k.
        let columns = (CHUNK_ELEMENTS / k.max(1)).max(MIN_TASK_COLUMNS);
        crate::threads::for_chunks_when(&mut out, columns, parallel, |start, acc| {
            let mut done = 0;
            while done < acc.len() {
                let (o, c) = ((start + done) / inner, (start + done) % inner);
                let len = (inner - c).min(acc.len() - done);
                let part = &mut acc[done..][..len];
                for j in 0..k {
                    let row = &data[(o * k + j) * inner + c..][..part.len()];
                    for (a, &x) in part.iter_mut().zip(row) {
                        *a = combine(*a, x.into());
                    }
                }
                done += part.len();
            }
        });
        out
    }
    let dims = [outer, k, inner];
    match op {
        ReduceOp::Sum => fold(data, dims, 0.0, |a, b| a + b),
        ReduceOp::Mean => {
            let mut out = fold(data, dims, 0.0, |a, b| a + b);
            out.iter_mut().for_each(|a| *a /= k as f64);
            out
        }
        ReduceOp::Max => fold(data, dims, f64::NEG_INFINITY, max_nan),
        ReduceOp::Min => fold(data, dims, f64::INFINITY, min_nan),
        ReduceOp::Prod => fold(data, dims, 1.0, |a, b| a * b),
        ReduceOp::ArgMax | ReduceOp::ArgMin => unreachable!("index reductions are handled apart"),
    }
}

/// Subtracting the row maximum keeps `exp` from overflowing. Computed in f64 and
/// rounded by `round` into the output's type a task at a time, so that the wide values
/// stay in cache. Rows in parallel.
pub fn softmax<T: Copy + Sync + Into<f64>, U: Send>(
    x: &[T],
    rows: usize,
    k: usize,
    log: bool,
    round: impl Fn(f64) -> U + Sync,
) -> Vec<U> {
    rows_in_f64(rows, k, round, |first, wide| {
        softmax_rows(wide, &x[first * k..], k.max(1), log)
    })
}

/// A `[rows, k]` output built a task of rows at a time: `wide(first, out)` computes the
/// task's rows from row `first` in f64, rounded by `round` while they are in cache.
fn rows_in_f64<U: Send>(
    rows: usize,
    k: usize,
    round: impl Fn(f64) -> U + Sync,
    wide: impl Fn(usize, &mut [f64]) + Sync,
) -> Vec<U> {
    let rows_of = |first: usize, part: &mut [std::mem::MaybeUninit<U>]| {
        let mut out = vec![0.0; part.len()];
        wide(first, &mut out);
        crate::vector::map_into(part, &out, &round);
    };
    // SAFETY: `map_into` writes every element of each task's rows.
    unsafe { crate::threads::build_rows(rows * k, k, rows_of) }
}

widest_loop! {
    /// Softmax (or log-softmax) of the rows of `x` into the `[rows, k]` of `out`.
    fn softmax_rows<T>(out: &mut [f64], x: &[T], k: usize, log: bool)
    where [T: Copy + Into<f64>] {
        for (row, xs) in out.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
            let max = xs
                .iter()
                .map(|&v| v.into())
                .fold(f64::NEG_INFINITY, f64::max);
            // Each exponential is computed once: kept for the division, or summed for the log.
            for (o, &v) in row.iter_mut().zip(xs) {
                *o = crate::special::exp(v.into() - max);
            }
            let sum: f64 = row.iter().sum();
            if log {
                let ln_sum = sum.ln();
                for (o, &v) in row.iter_mut().zip(xs) {
                    *o = v.into() - max - ln_sum;
                }
            } else {
                row.iter_mut().for_each(|o| *o /= sum);
            }
        }
    }
}

/// The gradient of softmax (or log-softmax) over rows, from the forward's output `y`
/// and its gradient `g`: `y * (g - sum(g * y))`, or `g - exp(y) * sum(g)`, in f64 and
/// rounded by `round` as `softmax` rounds. Rows in parallel.
pub fn softmax_backward<T: Copy + Sync + Into<f64>, U: Send>(
    y: &[T],
    g: &[T],
    rows: usize,
    k: usize,
    log: bool,
    round: impl Fn(f64) -> U + Sync,
) -> Vec<U> {
    rows_in_f64(rows, k, round, |first, wide| {
        let (y, g) = (&y[first * k..], &g[first * k..]);
        softmax_backward_rows(wide, y, g, k.max(1), log)
    })
}

widest_loop! {
    /// The gradient of softmax (or log-softmax) for the rows of `y` and `g` into the
    /// `[rows, k]` of `out`.
    fn softmax_backward_rows<T>(out: &mut [f64], y: &[T], g: &[T], k: usize, log: bool)
    where [T: Copy + Into<f64>] {
        let rows = out.chunks_exact_mut(k).zip(y.chunks_exact(k)).zip(g.chunks_exact(k));
        for ((row, ys), gs) in rows {
            let total: f64 = match log {
                true => gs.iter().map(|&g| g.into()).sum(),
                false => ys.iter().zip(gs).map(|(&y, &g)| y.into() * g.into()).sum(),
            };
            for ((o, &y), &g) in row.iter_mut().zip(ys).zip(gs) {
                let (y, g): (f64, f64) = (y.into(), g.into());
                *o = match log {
                    true => g - crate::special::exp(y) * total,
                    false => y * (g - total),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel split against each output summed alone in its documented order
    /// (a column in order of k; a row in 8 lanes, term j into lane j % 8, the lanes
    /// added in order): bitwise, on values whose sum depends on the order. Shapes with
    /// long rows, few outputs over many rows (tasks of 16 columns), and tasks that
    /// cross outer slices.
    #[test]
    fn split_reductions_add_in_a_fixed_order() {
        for [outer, k, inner] in [
            [3000, 70, 1],
            [3, 36867, 1],
            [1, 2048, 128],
            [3, 2000, 37],
            [5, 50, 37],
        ] {
            let data: Vec<f32> = (0..outer * k * inner)
                .map(|i| ((i * 7919) % 1000) as f32 * [1e-3, 1.0, 1e5][i % 3])
                .collect();
            let got = fold_middle(&data, ReduceOp::Sum, outer, k, inner);
            for o in 0..outer {
                for c in 0..inner {
                    let term = |j: usize| data[(o * k + j) * inner + c] as f64;
                    let want = if inner == 1 {
                        let mut lanes = [0.0f64; 8];
                        (0..k).for_each(|j| lanes[j % 8] += term(j));
                        lanes.iter().fold(0.0, |a, l| a + l)
                    } else {
                        (0..k).fold(0.0, |a, j| a + term(j))
                    };
                    assert_eq!(
                        got[o * inner + c],
                        want,
                        "[{outer}, {k}, {inner}] at ({o}, {c})"
                    );
                }
            }
        }
    }
}
