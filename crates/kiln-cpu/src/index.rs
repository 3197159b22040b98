//! Gather and deterministic scatter-add along one dim of compact `[outer, dim, inner]` data.

use crate::CpuStorage;
use kiln_core::{GatherSpec, HostBuffer, Result, ScatterSpec};

pub fn gather(input: &CpuStorage, index: &[i32], s: &GatherSpec) -> Result<CpuStorage> {
    fn run<T: Copy>(x: &[T], index: &[i32], s: &GatherSpec) -> Vec<T> {
        let mut out = Vec::with_capacity(s.outer * s.out_dim * s.inner);
        for o in 0..s.outer {
            for j in 0..s.out_dim {
                for i in 0..s.inner {
                    let at =
                        o * s.index_strides[0] + j * s.index_strides[1] + i * s.index_strides[2];
                    out.push(x[(o * s.in_dim + index[at] as usize) * s.inner + i]);
                }
            }
        }
        out
    }
    Ok(CpuStorage(match &input.0 {
        HostBuffer::F32(x) => HostBuffer::F32(run(x, index, s)),
        HostBuffer::F16(x) => HostBuffer::F16(run(x, index, s)),
        HostBuffer::I32(x) => HostBuffer::I32(run(x, index, s)),
        HostBuffer::F64(x) => HostBuffer::F64(run(x, index, s)),
    }))
}

/// Sources are added in ascending `j`, the order the GPU kernel uses.
pub fn scatter_add(x: &[f64], index: &[i32], src: &[f64], s: &ScatterSpec) -> Vec<f64> {
    let mut out = x.to_vec();
    let [so, sj, si] = s.index_strides;
    for o in 0..s.outer {
        for j in 0..s.src_dim {
            for i in 0..s.inner {
                let at = (o * s.src_dim + j) * s.inner + i;
                let to = index[o * so + j * sj + i * si] as usize;
                out[(o * s.dim + to) * s.inner + i] += src[at];
            }
        }
    }
    out
}
