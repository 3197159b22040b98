//! Roofline probes: the adapter's peak f32 FMA rate and its buffer copy bandwidth,
//! measured by `kiln bench` in the same run as the kernels they bound.

use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::params::{to_u32, CopyProbeParams, FmaParams};
use crate::pool::PooledBuffer;
use crate::shader_constants::{FMA_WORKGROUP, WORKGROUP};
use kiln_core::{DType, Result};

const FMA_ITERATIONS: u32 = 1024;

/// Eight vec4 FMA chains per invocation (`shaders/probe/fma.wgsl`).
pub struct FmaProbe {
    device: GpuDevice,
    data: PooledBuffer,
    invocations: usize,
}

impl FmaProbe {
    /// `invocations` (a multiple of 64): enough to fill every core of the adapter.
    pub fn new(device: &GpuDevice, invocations: usize) -> Result<Self> {
        let seeds: Vec<f32> = (0..invocations * 4)
            .map(|i| 0.5 + (i % 7) as f32 * 0.01)
            .collect();
        let bytes: &[u8] = bytemuck::cast_slice(&seeds);
        let data = device.upload_bytes("fma probe", bytes, seeds.len(), DType::F32)?;
        Ok(FmaProbe {
            device: device.clone(),
            data,
            invocations,
        })
    }

    /// Floating-point operations per run (an FMA counts two).
    pub fn flops(&self) -> f64 {
        self.invocations as f64 * f64::from(FMA_ITERATIONS) * 8.0 * 4.0 * 2.0
    }

    /// Records one run.
    pub fn run(&self) -> Result<()> {
        let op = "fma probe";
        let params = FmaParams {
            iterations: FMA_ITERATIONS,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        self.device.dispatch(
            op,
            Kernel::ProbeFma,
            &[DType::F32],
            &params,
            &[self.data.buffer()],
            self.device
                .groups_for(op, self.invocations.div_ceil(FMA_WORKGROUP as usize))?,
        )
    }
}

/// A streaming copy kernel (`shaders/probe/copy.wgsl`): the bandwidth a kernel reaches.
pub struct CopyProbe {
    device: GpuDevice,
    source: PooledBuffer,
    target: PooledBuffer,
    bytes: u64,
}

impl CopyProbe {
    /// Copies `bytes` (rounded down to a multiple of 16); 64 MiB is well past any cache.
    pub fn new(device: &GpuDevice, bytes: usize) -> Result<Self> {
        let n = bytes / 16 * 4;
        let source = device.alloc("copy probe", n, DType::F32)?;
        device.fill_words("copy probe", &source, 0x3f80_0000)?;
        let target = device.alloc("copy probe", n, DType::F32)?;
        Ok(CopyProbe {
            device: device.clone(),
            source,
            target,
            bytes: n as u64 * 4,
        })
    }

    /// Bytes moved per run: each byte read once and written once.
    pub fn bytes_moved(&self) -> f64 {
        2.0 * self.bytes as f64
    }

    /// Records one run.
    pub fn run(&self) -> Result<()> {
        let op = "copy probe";
        let count = (self.bytes / 16) as usize;
        let groups = self.device.groups_1d(op, count)?;
        let params = CopyProbeParams {
            count: to_u32(op, "vec4s", count)?,
            row: groups[0] * WORKGROUP,
            _pad0: 0,
            _pad1: 0,
        };
        self.device.dispatch(
            op,
            Kernel::ProbeCopy,
            &[DType::F32],
            &params,
            &[self.source.buffer(), self.target.buffer()],
            groups,
        )
    }
}
