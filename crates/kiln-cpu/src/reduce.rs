//! Row reductions, softmax and layer norm over compact `[rows, k]` data, in f64.

use crate::CpuStorage;
use kiln_core::{BackendStorage, HostBuffer, ReduceOp, Result};

pub fn reduce(input: &CpuStorage, op: ReduceOp, rows: usize, k: usize) -> Result<CpuStorage> {
    let data = input.compact_floats();
    let row = |r: usize| &data[r * k..(r + 1) * k];
    if op.returns_index() {
        let better = |a: f64, b: f64| if op == ReduceOp::ArgMax { a > b } else { a < b };
        let out = (0..rows)
            .map(|r| {
                // The first extreme wins ties, as in PyTorch.
                let mut idx = 0;
                for (i, &x) in row(r).iter().enumerate() {
                    if better(x, row(r)[idx]) {
                        idx = i;
                    }
                }
                idx as i32
            })
            .collect();
        return Ok(CpuStorage(HostBuffer::I32(out)));
    }
    let out: Vec<f64> = (0..rows)
        .map(|r| {
            let xs = row(r);
            match op {
                ReduceOp::Sum => xs.iter().sum(),
                ReduceOp::Mean => xs.iter().sum::<f64>() / k as f64,
                ReduceOp::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ReduceOp::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                ReduceOp::Prod => xs.iter().product(),
                ReduceOp::ArgMax | ReduceOp::ArgMin => unreachable!("handled above"),
            }
        })
        .collect();
    Ok(CpuStorage::from_floats(input.dtype(), out))
}

/// The middle dim of a compact `[outer, k, inner]` tensor, walked in memory order.
pub fn reduce_middle(
    input: &CpuStorage,
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
) -> Result<CpuStorage> {
    let data = input.compact_floats();
    let (init, combine): (f64, fn(f64, f64) -> f64) = match op {
        ReduceOp::Sum | ReduceOp::Mean => (0.0, |a, b| a + b),
        ReduceOp::Max => (f64::NEG_INFINITY, f64::max),
        ReduceOp::Min => (f64::INFINITY, f64::min),
        ReduceOp::Prod => (1.0, |a, b| a * b),
        ReduceOp::ArgMax | ReduceOp::ArgMin => {
            return Err(kiln_core::Error::Unsupported {
                op: op.name(),
                reason: "index reductions go through `reduce`".into(),
            })
        }
    };
    let mut out = vec![init; outer * inner];
    for o in 0..outer {
        let acc = &mut out[o * inner..(o + 1) * inner];
        for j in 0..k {
            let row = &data[(o * k + j) * inner..(o * k + j + 1) * inner];
            for (a, &x) in acc.iter_mut().zip(row) {
                *a = combine(*a, x);
            }
        }
    }
    if op == ReduceOp::Mean {
        out.iter_mut().for_each(|a| *a /= k as f64);
    }
    Ok(CpuStorage::from_floats(input.dtype(), out))
}

/// Subtracting the row maximum keeps `exp` from overflowing.
pub fn softmax(x: &[f64], rows: usize, k: usize, log: bool) -> Vec<f64> {
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        let xs = &x[r * k..(r + 1) * k];
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = xs.iter().map(|&v| (v - max).exp()).sum();
        for (o, &v) in out[r * k..(r + 1) * k].iter_mut().zip(xs) {
            *o = if log {
                v - max - sum.ln()
            } else {
                (v - max).exp() / sum
            };
        }
    }
    out
}

/// Biased variance, as PyTorch's layer_norm uses.
pub fn layer_norm(x: &[f64], w: &[f64], b: &[f64], rows: usize, k: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        let xs = &x[r * k..(r + 1) * k];
        let mean = xs.iter().sum::<f64>() / k as f64;
        let var = xs.iter().map(|&v| (v - mean).powi(2)).sum::<f64>() / k as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (i, o) in out[r * k..(r + 1) * k].iter_mut().enumerate() {
            *o = (xs[i] - mean) * rstd * w[i] + b[i];
        }
    }
    out
}
