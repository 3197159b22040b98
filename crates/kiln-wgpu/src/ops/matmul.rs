//! Launcher for `shaders/matmul/matmul.wgsl`: 64x64 output tiles, batches along z.

use crate::kernels::Kernel;
use crate::params::{to_u32, MatmulParams};
use crate::storage::GpuStorage;
use kiln_core::{Error, MatmulOperand, MatmulSpec, Result};

const TILE: usize = 64;

fn strides(op: &'static str, o: &MatmulOperand) -> Result<[u32; 4]> {
    Ok([
        to_u32(op, "stride", o.batch[0])?,
        to_u32(op, "stride", o.batch[1])?,
        to_u32(op, "stride", o.row_stride)?,
        to_u32(op, "stride", o.col_stride)?,
    ])
}

pub(crate) fn matmul(lhs: &GpuStorage, rhs: &GpuStorage, spec: &MatmulSpec) -> Result<GpuStorage> {
    let op = "matmul";
    if !lhs.dtype.is_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: lhs.dtype,
            reason: "this op needs a floating-point tensor",
        });
    }
    let device = &lhs.device;
    let batches = spec.batch[0] * spec.batch[1];
    let len = batches * spec.m * spec.n;
    let out = device.alloc_output(op, len, lhs.dtype)?;
    if len == 0 {
        return Ok(GpuStorage::new(out, lhs.dtype, len, device));
    }
    let groups = [spec.n.div_ceil(TILE), spec.m.div_ceil(TILE), batches];
    let max = device.max_workgroups_per_dim() as usize;
    if let Some(&g) = groups.iter().find(|&&g| g > max) {
        return Err(Error::LimitExceeded {
            op,
            what: "workgroups along one dimension",
            needed: g as u64,
            limit: max as u64,
        });
    }
    let params = MatmulParams {
        m: to_u32(op, "rows", spec.m)?,
        n: to_u32(op, "columns", spec.n)?,
        k: to_u32(op, "inner size", spec.k)?,
        batch1: to_u32(op, "batch", spec.batch[1].max(1))?,
        lhs_strides: strides(op, &spec.lhs)?,
        rhs_strides: strides(op, &spec.rhs)?,
        offsets: [
            to_u32(op, "offset", spec.lhs.offset)?,
            to_u32(op, "offset", spec.rhs.offset)?,
            0,
            0,
        ],
    };
    let groups = [groups[0] as u32, groups[1] as u32, groups[2] as u32];
    device.dispatch(
        op,
        Kernel::Matmul,
        &[lhs.dtype],
        bytemuck::bytes_of(&params),
        &[lhs.raw(), rhs.raw(), out.buffer()],
        groups,
    )?;
    Ok(GpuStorage::new(out, lhs.dtype, len, device))
}
