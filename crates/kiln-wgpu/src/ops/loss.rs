//! Launchers for `shaders/loss/`: fused cross-entropy and its gradient, `row_lanes`
//! invocations per row as the row reductions take (short rows share a workgroup).

use super::reduce::{check_row_loops, row_groups, row_lanes};
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
    let shape = (rows, classes, smoothing);
    let inputs = [logits, targets];
    launch("cross_entropy", Kernel::CrossEntropy, &inputs, shape, rows)
}

pub(crate) fn cross_entropy_backward(
    logits: &GpuStorage,
    targets: &GpuStorage,
    dloss: &GpuStorage,
    rows: usize,
    classes: usize,
    smoothing: f32,
) -> Result<GpuStorage> {
    let shape = (rows, classes, smoothing);
    let inputs = [logits, targets, dloss];
    let kernel = Kernel::CrossEntropyBackward;
    launch(
        "cross_entropy_backward",
        kernel,
        &inputs,
        shape,
        rows * classes,
    )
}

/// Runs a loss kernel (its subgroup build where the device uses them) on `inputs`, the
/// logits first, for `rows` rows of `classes`, writing `out_len` elements.
fn launch(
    op: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    (rows, classes, smoothing): (usize, usize, f32),
    out_len: usize,
) -> Result<GpuStorage> {
    let logits = inputs[0];
    let device = &logits.device;
    check_row_loops(op, logits, kernel, classes)?;
    let params = CrossEntropyParams {
        rows: to_u32(op, "rows", rows)?,
        classes: to_u32(op, "classes", classes)?,
        smoothing,
        lanes: row_lanes(classes),
    };
    let out = device.alloc_output(op, out_len, logits.dtype)?;
    let mut buffers = inputs.iter().map(|s| s.raw()).collect::<Result<Vec<_>>>()?;
    buffers.push(out.buffer());
    let kernel = device.row_kernel(kernel);
    let groups = device.groups_for(op, row_groups(kernel, rows, params.lanes))?;
    device.dispatch(op, kernel, &[logits.dtype], &params, &buffers, groups)?;
    Ok(GpuStorage::new(out, logits.dtype, out_len, device))
}
