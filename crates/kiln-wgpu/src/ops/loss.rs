//! Launchers for `shaders/loss/`: fused cross-entropy and its gradient, `row_lanes`
//! invocations per row as the row reductions take (short rows share a workgroup).

use super::reduce::{row_groups, row_lanes};
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
        lanes: row_lanes(classes),
    };
    let out = device.alloc_output(op, rows, logits.dtype)?;
    let buffers = [logits.raw()?, targets.raw()?, out.buffer()];
    let kernel = device.row_kernel(Kernel::CrossEntropy);
    let groups = row_groups(kernel, rows, params.lanes);
    device.dispatch(
        op,
        kernel,
        &[logits.dtype],
        &params,
        &buffers,
        device.groups_for(op, groups)?,
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
        lanes: row_lanes(classes),
    };
    let out = device.alloc_output(op, rows * classes, logits.dtype)?;
    let buffers = [logits.raw()?, targets.raw()?, dloss.raw()?, out.buffer()];
    let kernel = device.row_kernel(Kernel::CrossEntropyBackward);
    let groups = device.groups_for(op, row_groups(kernel, rows, params.lanes))?;
    device.dispatch(op, kernel, &[logits.dtype], &params, &buffers, groups)?;
    Ok(GpuStorage::new(out, logits.dtype, rows * classes, device))
}
