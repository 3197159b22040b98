//! Launchers for `shaders/loss/`: fused cross-entropy and its gradient, one workgroup
//! per row.

use crate::kernels::Kernel;
use crate::params::{to_u32, CrossEntropyParams};
use crate::storage::GpuStorage;
use kiln_core::Result;

pub(crate) fn cross_entropy(
    logits: &GpuStorage,
    targets: &GpuStorage,
    rows: usize,
    classes: usize,
    smoothing: f32,
) -> Result<GpuStorage> {
    let op = "cross_entropy";
    let device = &logits.device;
    let params = CrossEntropyParams {
        rows: to_u32(op, "rows", rows)?,
        classes: to_u32(op, "classes", classes)?,
        smoothing,
        _pad: 0,
    };
    let out = device.alloc_output(op, rows, logits.dtype)?;
    let buffers = [logits.raw()?, targets.raw()?, out.buffer()];
    device.dispatch(
        op,
        Kernel::CrossEntropy,
        &[logits.dtype],
        &params,
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
    let device = &logits.device;
    let params = CrossEntropyParams {
        rows: to_u32(op, "rows", rows)?,
        classes: to_u32(op, "classes", classes)?,
        smoothing,
        _pad: 0,
    };
    let out = device.alloc_output(op, rows * classes, logits.dtype)?;
    let buffers = [logits.raw()?, targets.raw()?, dloss.raw()?, out.buffer()];
    let groups = device.groups_for(op, rows)?;
    device.dispatch(
        op,
        Kernel::CrossEntropyBackward,
        &[logits.dtype],
        &params,
        &buffers,
        groups,
    )?;
    Ok(GpuStorage::new(out, logits.dtype, rows * classes, device))
}
