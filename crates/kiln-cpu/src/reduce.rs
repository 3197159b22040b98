//! Row reductions, softmax and layer norm over compact `[rows, k]` data.

use crate::CpuStorage;
use kiln_core::{BackendStorage, HostBuffer, ReduceOp, Result};

pub fn reduce(input: &CpuStorage, op: ReduceOp, rows: usize, k: usize) -> Result<CpuStorage> {
    let data = input.compact_floats();
    let row = |r: usize| &data[r * k..(r + 1) * k];
    if op.returns_index() {
        let better = |a: f32, b: f32| if op == ReduceOp::ArgMax { a > b } else { a < b };
        let out = (0..rows)
            .map(|r| {
                // The first extreme wins ties, as in PyTorch.
                let (mut best, mut idx) = (f32::NAN, 0);
                for (i, &x) in row(r).iter().enumerate() {
                    if i == 0 || better(x, best) {
                        best = x;
                        idx = i;
                    }
                }
                idx as i32
            })
            .collect();
        return Ok(CpuStorage(HostBuffer::I32(out)));
    }
    let out: Vec<f32> = (0..rows)
        .map(|r| {
            let xs = row(r);
            match op {
                ReduceOp::Sum => sum64(xs) as f32,
                ReduceOp::Mean => (sum64(xs) / k as f64) as f32,
                ReduceOp::Max => xs.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                ReduceOp::Min => xs.iter().copied().fold(f32::INFINITY, f32::min),
                ReduceOp::Prod => xs.iter().map(|&v| v as f64).product::<f64>() as f32,
                ReduceOp::ArgMax | ReduceOp::ArgMin => unreachable!("handled above"),
            }
        })
        .collect();
    if let HostBuffer::I32(_) = input.0 {
        return Ok(CpuStorage(HostBuffer::from_f32(kiln_core::DType::I32, out)));
    }
    Ok(CpuStorage::from_floats(input.dtype(), out))
}

/// Sums in f64: the reference should be the more accurate side of every comparison.
fn sum64(xs: &[f32]) -> f64 {
    xs.iter().map(|&v| v as f64).sum()
}

/// Subtracting the row maximum keeps `exp` from overflowing.
pub fn softmax(x: &[f32], rows: usize, k: usize, log: bool) -> Vec<f32> {
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        let xs = &x[r * k..(r + 1) * k];
        let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = xs.iter().map(|&v| ((v - max) as f64).exp()).sum();
        for (o, &v) in out[r * k..(r + 1) * k].iter_mut().zip(xs) {
            let shifted = (v - max) as f64;
            *o = if log {
                (shifted - sum.ln()) as f32
            } else {
                (shifted.exp() / sum) as f32
            };
        }
    }
    out
}

/// Biased variance, as PyTorch's layer_norm uses.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        let xs = &x[r * k..(r + 1) * k];
        let mean = sum64(xs) / k as f64;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / k as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (i, o) in out[r * k..(r + 1) * k].iter_mut().enumerate() {
            *o = ((xs[i] as f64 - mean) * rstd * w[i] as f64 + b[i] as f64) as f32;
        }
    }
    out
}
