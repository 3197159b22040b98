//! Launcher for `shaders/random/`: Philox draws, uniform or Bernoulli, bit-identical
//! to the CPU backend's for the same (seed, stream, element).

use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::params::PhiloxParams;
use crate::storage::GpuStorage;
use kiln_core::{DType, Result};

pub(crate) fn philox(
    device: &GpuDevice,
    n: usize,
    dtype: DType,
    mode: u32,
    threshold: u32,
    seed: u64,
    stream: u64,
) -> Result<GpuStorage> {
    let op = if mode == 0 { "rand" } else { "bernoulli" };
    let out = device.alloc_output(op, n, dtype)?;
    let params = PhiloxParams {
        numel: crate::params::to_u32(op, "element count", n)?,
        mode,
        threshold,
        _pad: 0,
        key: [
            seed as u32,
            (seed >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
    };
    device.dispatch(
        op,
        Kernel::Philox,
        &[dtype],
        &params,
        &[out.buffer()],
        device.groups_1d(op, n)?,
    )?;
    Ok(GpuStorage::new(out, dtype, n, device))
}
