//! Launchers for `shaders/conv/`: im2col and col2im around the matmul, the direct
//! grouped convolution and the weight gradient; one thread per output element (the
//! weight gradient: per weight element and segment of the batch's rows).

use super::launch_window;
use super::reduce::reduce_middle;
use crate::kernels::Kernel;
use crate::loop_budget::{self, SOFTWARE_LOOP_BUDGET};
use crate::params::{to_u32, DirectConvParams, WeightGradParams, WindowParams};
use crate::storage::GpuStorage;
use kiln_core::{ReduceOp, Result, WindowSpec};

/// Threads the weight gradient aims for, about what an NVIDIA H200 keeps resident (132
/// SMs of 2,048). With one thread per weight element, a small layer's gradient ran on a
/// few thousand threads, each down the whole batch: 4.3 of the CNN's 5.0 ms per training
/// step there. Fewer weights than this split the batch's output rows into segments.
const WEIGHT_GRAD_THREADS: usize = 1 << 18;

pub(crate) fn im2col(x: &GpuStorage, s: &WindowSpec) -> Result<GpuStorage> {
    let n = s.n * s.c * s.kh * s.kw * s.oh * s.ow;
    Ok(launch_window(
        "conv2d",
        Kernel::Im2col,
        &[x],
        WindowParams::new("conv2d", s, n, 0)?,
        &[(n, x.dtype)],
    )?
    .remove(0))
}

pub(crate) fn conv2d_direct(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let op = "conv2d";
    // Each output walks its group's channels and the taps of each.
    let per_group = s.c / groups.max(1);
    let iterations = per_group * (s.kh * s.kw + s.kh + 1);
    loop_budget::check(op, &x.device, iterations, || {
        format!("{per_group} channels of {}x{} taps", s.kh, s.kw)
    })?;
    let n = s.n * out_channels * s.oh * s.ow;
    let w = WindowParams::new(op, s, n, 0)?;
    let p = DirectConvParams {
        image: w.image,
        window: w.window,
        step: w.step,
        extra: w.extra,
        channels: [
            to_u32(op, "channels", out_channels)?,
            to_u32(op, "groups", groups)?,
            0,
            0,
        ],
    };
    Ok(launch_window(op, Kernel::Conv2dDirect, &[x, weight], p, &[(n, x.dtype)])?.remove(0))
}

pub(crate) fn col2im(cols: &GpuStorage, s: &WindowSpec) -> Result<GpuStorage> {
    let iterations = s.kh * s.kw + s.kh;
    loop_budget::check("conv_transpose2d", &cols.device, iterations, || {
        format!("kernels of {}x{}", s.kh, s.kw)
    })?;
    let n = s.n * s.c * s.h * s.w;
    Ok(launch_window(
        "conv_transpose2d",
        Kernel::Col2im,
        &[cols],
        WindowParams::new("conv_transpose2d", s, n, 0)?,
        &[(n, cols.dtype)],
    )?
    .remove(0))
}

pub(crate) fn weight_grad_direct(
    x: &GpuStorage,
    dy: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let op = "conv2d_backward";
    let weights = out_channels * (s.c / groups) * s.kh * s.kw;
    // The split follows from the shape alone, so results do not vary by adapter; a
    // segment's rows (each a loop over the output's width) stay within a software
    // adapter's loops (`loop_budget`).
    let rows = (s.n * s.oh).max(1);
    let most = (SOFTWARE_LOOP_BUDGET / (s.ow + 2)).max(1);
    let per_segment = rows
        .div_ceil((WEIGHT_GRAD_THREADS / weights.max(1)).clamp(1, rows))
        .min(most);
    let segments = rows.div_ceil(per_segment);
    let threads = weights * segments;
    let w = WindowParams::new(op, s, threads, to_u32(op, "groups", groups)?)?;
    let p = WeightGradParams {
        image: w.image,
        window: w.window,
        step: w.step,
        extra: w.extra,
        split: [
            to_u32(op, "segments", segments)?,
            to_u32(op, "rows per segment", per_segment)?,
            to_u32(op, "weights", weights)?,
            0,
        ],
    };
    let outputs = [(threads, x.dtype)];
    let partial = launch_window(op, Kernel::ConvWeightGrad, &[x, dy], p, &outputs)?.remove(0);
    match segments {
        1 => Ok(partial),
        _ => reduce_middle(&partial, ReduceOp::Sum, 1, segments, weights),
    }
}
