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
use crate::pool::PooledBuffer;
use crate::storage::GpuStorage;
use kiln_core::{DType, MovingAverageSpec, Result, RunningStatsUpdate};

/// Running statistics the statistics' kernels write over as they write the batch's.
#[derive(Clone, Copy)]
struct Running<'a> {
    mean: &'a GpuStorage,
    var: &'a GpuStorage,
    average: MovingAverageSpec,
    var_scale: f32,
}

impl Running<'_> {
    /// The params' `running`, `decay`, `one_minus_decay` and `var_scale`, of `running`.
    fn params(running: Option<Running<'_>>) -> (u32, f32, f32, f32) {
        running.map_or((0, 0.0, 0.0, 0.0), |r| {
            let a = r.average;
            (1, a.decay, a.one_minus_decay, r.var_scale)
        })
    }

    /// The two bindings of the running statistics: theirs when `running` is given to
    /// this launch, else a word each, never written.
    fn bindings<'a>(
        op: &'static str,
        running: Option<Running<'a>>,
        x: &GpuStorage,
    ) -> Result<[Binding<'a>; 2]> {
        Ok(match running {
            Some(r) => [Binding::Held(r.mean.raw()?), Binding::Held(r.var.raw()?)],
            None => {
                let unused = || x.device.alloc_output(op, 1, x.dtype).map(Binding::Unused);
                [unused()?, unused()?]
            }
        })
    }
}

/// A buffer a launch binds: a storage's, or one of its own.
enum Binding<'a> {
    Held(&'a wgpu::Buffer),
    Unused(PooledBuffer),
}

impl Binding<'_> {
    fn buffer(&self) -> &wgpu::Buffer {
        match self {
            Binding::Held(b) => b,
            Binding::Unused(b) => b.buffer(),
        }
    }
}

/// Runs `kernel` over the channels of `inputs[0]` (the others bound after it), into
/// `N` outputs of one value per channel: the statistics (3) or the backward's sums (2).
/// With parts, each part's two values go to f32 partials, which `BatchNormCombine`
/// puts together into the outputs. The statistics move `running` where they are
/// written.
fn channels_kernel<const N: usize>(
    op: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    [outer, c, inner]: [usize; 3],
    eps: f32,
    running: Option<Running<'_>>,
) -> Result<[GpuStorage; N]> {
    let x = inputs[0];
    let device = &x.device;
    let per_channel = outer * inner;
    // Element offsets are u32 in the kernels.
    to_u32(op, "elements", per_channel * c)?;
    let (parts, part_len) = row_parts(c, per_channel);
    // With parts the combine kernel writes the statistics, and moves the averages.
    let (here, combined) = match parts {
        1 => (running, None),
        _ => (None, running),
    };
    let (tracks, decay, one_minus_decay, var_scale) = Running::params(here);
    let params = BatchNormParams {
        channels: to_u32(op, "channels", c)?,
        outer: to_u32(op, "outer", outer)?,
        inner: to_u32(op, "inner", inner)?,
        lanes: row_lanes(part_len),
        eps,
        parts: to_u32(op, "parts", parts)?,
        part_len: to_u32(op, "part length", part_len)?,
        running: tracks,
        decay,
        one_minus_decay,
        var_scale,
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
    // The statistics' kernel binds the running statistics too.
    let bound = match N {
        3 => Running::bindings(op, here, x)?.into_iter().collect(),
        _ => Vec::new(),
    };
    rest.extend(bound.iter().map(Binding::buffer));
    device.dispatch_with_inputs(op, kernel, &[x.dtype], &params, &[x], &rest, groups)?;
    if parts > 1 {
        let (running, decay, one_minus_decay, var_scale) = Running::params(combined);
        let combine = BatchNormCombineParams {
            channels: params.channels,
            parts: params.parts,
            part_len: params.part_len,
            n: to_u32(op, "elements per channel", per_channel)?,
            eps,
            sums: u32::from(N == 2),
            running,
            decay,
            one_minus_decay,
            var_scale,
            _pad0: 0,
            _pad1: 0,
        };
        // The sums' third output: a word of its own, never written.
        let unused = match N {
            3 => None,
            _ => Some(device.alloc_output(op, 1, x.dtype)?),
        };
        let averages = Running::bindings(op, combined, x)?;
        let mut buffers = vec![partials.buffer()];
        buffers.extend(outputs.iter().map(|o| o.buffer()));
        buffers.extend(unused.as_ref().map(|u| u.buffer()));
        buffers.extend(averages.iter().map(Binding::buffer));
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
    channels_kernel("batch_norm", Kernel::BatchNormStats, &[x], dims, eps, None)
}

/// `batch_norm_stats`, writing `running`'s averages over in the same launches where
/// each is `x`'s dtype and length and nothing else holds it (work still to run that
/// reads one runs first: it reads the old values either way); returns whether it did.
pub(crate) fn batch_norm_stats_running(
    x: &GpuStorage,
    dims: [usize; 3],
    eps: f32,
    running: RunningStatsUpdate<'_, GpuStorage>,
) -> Result<([GpuStorage; 3], bool)> {
    let mut alone = true;
    for t in [&*running.mean, &*running.var] {
        alone &= t.dtype == x.dtype && t.len == dims[1];
        alone = alone
            && (t.exclusive()? || {
                x.device.run_readers(&t.data)?;
                t.exclusive()?
            });
    }
    let tracked = alone.then_some(Running {
        mean: running.mean,
        var: running.var,
        average: running.average,
        var_scale: running.var_scale,
    });
    let kernel = Kernel::BatchNormStats;
    let stats = channels_kernel("batch_norm", kernel, &[x], dims, eps, tracked)?;
    Ok((stats, alone))
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
        None,
    )
}
