//! Launchers for `shaders/loss/`: fused cross-entropy and its gradient, one workgroup
//! per row.

use crate::kernels::Kernel;
use crate::params::{to_u32, Words};
use crate::storage::GpuStorage;
use kiln_core::{DType, Error, Result};

fn check(op: &'static str, logits: &GpuStorage, targets: &GpuStorage) -> Result<()> {
    if !logits.dtype.is_float() {
        let reason = "logits must be floating-point";
        return Err(Error::UnsupportedDType {
            op,
            dtype: logits.dtype,
            reason,
        });
    }
    if targets.dtype != DType::I32 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: targets.dtype,
            reason: "targets must be i32",
        });
    }
    Ok(())
}

pub(crate) fn cross_entropy(
    logits: &GpuStorage,
    targets: &GpuStorage,
    rows: usize,
    classes: usize,
    smoothing: f32,
) -> Result<GpuStorage> {
    let op = "cross_entropy";
    check(op, logits, targets)?;
    let device = &logits.device;
    let params = Words([
        to_u32(op, "rows", rows)?,
        to_u32(op, "classes", classes)?,
        smoothing.to_bits(),
        0,
    ]);
    let out = device.alloc_output(op, rows, logits.dtype)?;
    let buffers = [logits.raw(), targets.raw(), out.buffer()];
    device.dispatch(
        op,
        Kernel::CrossEntropy,
        &[logits.dtype],
        bytemuck::bytes_of(&params),
        &buffers,
        device.groups_for(op, rows)?,
    )?;
    Ok(GpuStorage::new(out, logits.dtype, rows, device))
}

pub(crate) fn cross_entropy_backward(
    logits: &GpuStorage,
    targets: &GpuStorage,
    dloss: &GpuStorage,
    rows: usize,
    classes: usize,
    smoothing: f32,
) -> Result<GpuStorage> {
    let op = "cross_entropy_backward";
    check(op, logits, targets)?;
    let device = &logits.device;
    let params = Words([
        to_u32(op, "rows", rows)?,
        to_u32(op, "classes", classes)?,
        smoothing.to_bits(),
        0,
    ]);
    let out = device.alloc_output(op, rows * classes, logits.dtype)?;
    let buffers = [logits.raw(), targets.raw(), dloss.raw(), out.buffer()];
    let groups = device.groups_for(op, rows)?;
    device.dispatch(
        op,
        Kernel::CrossEntropyBackward,
        &[logits.dtype],
        bytemuck::bytes_of(&params),
        &buffers,
        groups,
    )?;
    Ok(GpuStorage::new(out, logits.dtype, rows * classes, device))
}
