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
                ReduceOp::Sum => xs.iter().sum(),
                ReduceOp::Mean => xs.iter().sum::<f32>() / k as f32,
                ReduceOp::Max => xs.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                ReduceOp::Min => xs.iter().copied().fold(f32::INFINITY, f32::min),
                ReduceOp::Prod => xs.iter().product(),
                ReduceOp::ArgMax | ReduceOp::ArgMin => unreachable!("handled above"),
            }
        })
        .collect();
    if let HostBuffer::I32(_) = input.0 {
        return Ok(CpuStorage(HostBuffer::from_f32(kiln_core::DType::I32, out)));
    }
    Ok(CpuStorage::from_floats(input.dtype(), out))
}

/// Subtracting the row maximum keeps `exp` from overflowing.
pub fn softmax(x: &[f32], rows: usize, k: usize, log: bool) -> Vec<f32> {
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        let xs = &x[r * k..(r + 1) * k];
        let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = xs.iter().map(|&v| (v - max).exp()).sum();
        for (o, &v) in out[r * k..(r + 1) * k].iter_mut().zip(xs) {
            *o = if log { v - max - sum.ln() } else { (v - max).exp() / sum };
        }
    }
    out
}

/// Biased variance, as PyTorch's layer_norm uses.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        let xs = &x[r * k..(r + 1) * k];
        let mean = xs.iter().sum::<f32>() / k as f32;
        let var = xs.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / k as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for (i, o) in out[r * k..(r + 1) * k].iter_mut().enumerate() {
            *o = (xs[i] - mean) * rstd * w[i] + b[i];
        }
    }
    out
}
