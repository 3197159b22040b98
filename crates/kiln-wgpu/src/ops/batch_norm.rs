//! Launchers for batch norm's channel kernels (`shaders/norm/batch_norm_*.wgsl`): each
//! channel of a compact `[outer, c, inner]` tensor reduced as a row is, read where it
//! lies, into outputs of `[c]` each. The statistics take one launch where the composed
//! mean, deviations and variance took three (and wrote the squared deviations out);
//! the backward's two sums one where the composed form took three.

use super::reduce::{check_row_loops, row_groups, row_lanes};
use crate::kernels::Kernel;
use crate::params::{to_u32, BatchNormParams};
use crate::storage::GpuStorage;
use kiln_core::Result;

/// Runs `kernel` over the channels of `inputs[0]` (the others bound after it), into
/// `N` outputs of one value per channel.
fn channels_kernel<const N: usize>(
    op: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    [outer, c, inner]: [usize; 3],
    eps: f32,
) -> Result<[GpuStorage; N]> {
    let x = inputs[0];
    let device = &x.device;
    let per_channel = outer * inner;
    // Element offsets are u32 in the kernels.
    to_u32(op, "elements", per_channel * c)?;
    let params = BatchNormParams {
        channels: to_u32(op, "channels", c)?,
        outer: to_u32(op, "outer", outer)?,
        inner: to_u32(op, "inner", inner)?,
        lanes: row_lanes(per_channel),
        eps,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    check_row_loops(op, x, kernel, per_channel)?;
    let kernel = device.row_kernel(kernel);
    let groups = device.groups_for(op, row_groups(kernel, c, params.lanes))?;
    let outputs = [(); N].map(|_| device.alloc_output(op, c, x.dtype));
    let outputs: Vec<_> = outputs.into_iter().collect::<Result<_>>()?;
    let mut rest = inputs[1..]
        .iter()
        .map(|s| s.raw())
        .collect::<Result<Vec<_>>>()?;
    rest.extend(outputs.iter().map(|o| o.buffer()));
    device.dispatch_with_inputs(op, kernel, &[x.dtype], &params, &[x], &rest, groups)?;
    let stored: Vec<_> = outputs
        .into_iter()
        .map(|o| GpuStorage::new(o, x.dtype, c, device))
        .collect();
    Ok(stored
        .try_into()
        .unwrap_or_else(|_| unreachable!("N outputs made")))
}

/// Each channel's mean, biased variance and `1 / sqrt(variance + eps)`.
pub(crate) fn batch_norm_stats(
    x: &GpuStorage,
    dims: [usize; 3],
    eps: f32,
) -> Result<[GpuStorage; 3]> {
    channels_kernel("batch_norm", Kernel::BatchNormStats, &[x], dims, eps)
}

/// Each channel's sum of `grad` and of `grad * x_hat`.
pub(crate) fn batch_norm_backward_sums(
    x: &GpuStorage,
    grad: &GpuStorage,
    mean: &GpuStorage,
    rstd: &GpuStorage,
    dims: [usize; 3],
) -> Result<[GpuStorage; 2]> {
    let kernel = Kernel::BatchNormBackwardSums;
    channels_kernel(
        "batch_norm_backward",
        kernel,
        &[x, grad, mean, rstd],
        dims,
        0.0,
    )
}
