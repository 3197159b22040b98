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
    launch(
        "cross_entropy",
        Kernel::CrossEntropy,
        logits,
        &inputs,
        shape,
        rows,
    )
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
    // The loss's gradient first: its load section computes a pending one (a mean's
    // constant) in the kernel.
    let inputs = [dloss, logits, targets];
    let kernel = Kernel::CrossEntropyBackward;
    launch(
        "cross_entropy_backward",
        kernel,
        logits,
        &inputs,
        shape,
        rows * classes,
    )
}

/// Runs a loss kernel (its subgroup build where the device uses them) on `inputs` (in
/// the order of its bindings), for `rows` rows of `classes` of `logits`, writing
/// `out_len` elements.
fn launch(
    op: &'static str,
    kernel: Kernel,
    logits: &GpuStorage,
    inputs: &[&GpuStorage],
    (rows, classes, smoothing): (usize, usize, f32),
    out_len: usize,
) -> Result<GpuStorage> {
    let device = &logits.device;
    check_row_loops(op, logits, kernel, classes)?;
    let params = CrossEntropyParams {
        rows: to_u32(op, "rows", rows)?,
        classes: to_u32(op, "classes", classes)?,
        smoothing,
        lanes: row_lanes(classes),
    };
    let out = device.alloc_output(op, out_len, logits.dtype)?;
    let kernel = device.row_kernel(kernel);
    let groups = device.groups_for(op, row_groups(kernel, rows, params.lanes))?;
    let rest = [out.buffer()];
    device.dispatch_with_inputs(op, kernel, &[logits.dtype], &params, inputs, &rest, groups)?;
    Ok(GpuStorage::new(out, logits.dtype, out_len, device))
}
