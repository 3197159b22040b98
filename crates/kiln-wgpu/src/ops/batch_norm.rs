//! Launchers for batch norm's channel kernels (`shaders/norm/batch_norm_*.wgsl`): each
//! channel of a compact `[outer, c, inner]` tensor reduced as a row is, read where it
//! lies, into outputs of `[c]` each. The statistics take one launch where the composed
//! mean, deviations and variance took three (and wrote the squared deviations out);
//! the backward's two sums one where the composed form took three. A few long channels
//! are cut into parts as long rows are (`row_parts`), one workgroup each, and a second
//! launch puts each channel's parts together.

use super::reduce::{check_row_loops, row_groups, row_lanes, row_parts};
use crate::kernels::Kernel;
use crate::params::{to_u32, BatchNormCombineParams, BatchNormParams};
use crate::storage::GpuStorage;
use kiln_core::{DType, Result};

/// Runs `kernel` over the channels of `inputs[0]` (the others bound after it), into
/// `N` outputs of one value per channel: the statistics (3) or the backward's sums (2).
/// With parts, each part's two values go to f32 partials, which `BatchNormCombine`
/// puts together into the outputs.
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
    let (parts, part_len) = row_parts(c, per_channel);
    let params = BatchNormParams {
        channels: to_u32(op, "channels", c)?,
        outer: to_u32(op, "outer", outer)?,
        inner: to_u32(op, "inner", inner)?,
        lanes: row_lanes(part_len),
        eps,
        parts: to_u32(op, "parts", parts)?,
        part_len: to_u32(op, "part length", part_len)?,
        _pad0: 0,
    };
    check_row_loops(op, x, kernel, part_len)?;
    let kernel = device.row_kernel(kernel);
    let groups = device.groups_for(op, row_groups(kernel, c * parts, params.lanes))?;
    let outputs = [(); N].map(|_| device.alloc_output(op, c, x.dtype));
    let outputs: Vec<_> = outputs.into_iter().collect::<Result<_>>()?;
    // Per (channel, part): two values; the statistics also keep each channel's first
    // element.
    let partials_len = match (parts, N) {
        (1, _) => 1,
        (_, 3) => 2 * c * parts + c,
        _ => 2 * c * parts,
    };
    let partials = device.alloc_output(op, partials_len, DType::F32)?;
    let mut rest = inputs[1..]
        .iter()
        .map(|s| s.raw())
        .collect::<Result<Vec<_>>>()?;
    rest.extend(outputs.iter().map(|o| o.buffer()));
    rest.push(partials.buffer());
    device.dispatch_with_inputs(op, kernel, &[x.dtype], &params, &[x], &rest, groups)?;
    if parts > 1 {
        let combine = BatchNormCombineParams {
            channels: params.channels,
            parts: params.parts,
            part_len: params.part_len,
            n: to_u32(op, "elements per channel", per_channel)?,
            eps,
            sums: u32::from(N == 2),
            _pad0: 0,
            _pad1: 0,
        };
        // The sums' third output: a word of its own, never written.
        let unused = match N {
            3 => None,
            _ => Some(device.alloc_output(op, 1, x.dtype)?),
        };
        let mut buffers = vec![partials.buffer()];
        buffers.extend(outputs.iter().map(|o| o.buffer()));
        buffers.extend(unused.as_ref().map(|u| u.buffer()));
        let groups = device.groups_1d(op, c)?;
        let dtypes = [x.dtype];
        device.dispatch(
            op,
            Kernel::BatchNormCombine,
            &dtypes,
            &combine,
            &buffers,
            groups,
        )?;
    }
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
