//! Launchers for `shaders/pool/`: max and average pooling and their gradients; one
//! thread per output element.

use super::launch_window;
use crate::kernels::Kernel;
use crate::loop_budget;
use crate::params::WindowParams;
use crate::storage::GpuStorage;
use kiln_core::{DType, PoolKind, ReduceOp, Result, WindowSpec};

pub(crate) fn max_pool2d(x: &GpuStorage, s: &WindowSpec) -> Result<(GpuStorage, GpuStorage)> {
    check_window("max_pool2d", x, s.kh, s.kw)?;
    let n = s.n * s.c * s.oh * s.ow;
    let mut outs = launch_window(
        "max_pool2d",
        Kernel::MaxPool2d,
        &[x],
        WindowParams::new("max_pool2d", s, n, 0)?,
        &[(n, x.dtype), (n, DType::I32)],
    )?;
    let indices = outs.remove(1);
    Ok((outs.remove(0), indices))
}

pub(crate) fn avg_pool2d(x: &GpuStorage, s: &WindowSpec, kind: PoolKind) -> Result<GpuStorage> {
    // A window over the whole map is each map's mean: a row reduction, its lanes
    // sharing the map, where one invocation per output walked all of it.
    let whole = match kind {
        PoolKind::AdaptiveAvg => true,
        PoolKind::Avg { .. } => (s.kh, s.kw, s.padding) == (s.h, s.w, (0, 0)),
    };
    if whole && (s.oh, s.ow) == (1, 1) {
        return super::reduce::reduce(x, ReduceOp::Mean, s.n * s.c, s.h * s.w);
    }
    let (kh, kw) = match kind {
        // The longest adaptive window: a start rounded down, an end rounded up.
        PoolKind::AdaptiveAvg => (s.h.div_ceil(s.oh) + 1, s.w.div_ceil(s.ow) + 1),
        PoolKind::Avg { .. } => (s.kh, s.kw),
    };
    check_window("avg_pool2d", x, kh, kw)?;
    let n = s.n * s.c * s.oh * s.ow;
    let mode = pool_mode(kind);
    Ok(launch_window(
        "avg_pool2d",
        Kernel::AvgPool2d,
        &[x],
        WindowParams::new("avg_pool2d", s, n, mode)?,
        &[(n, x.dtype)],
    )?
    .remove(0))
}

pub(crate) fn max_pool2d_backward(
    dy: &GpuStorage,
    indices: &GpuStorage,
    s: &WindowSpec,
) -> Result<GpuStorage> {
    let op = "max_pool2d_backward";
    check_window(op, dy, s.kh, s.kw)?;
    let n = s.n * s.c * s.h * s.w;
    let p = WindowParams::new(op, s, n, 0)?;
    let (kernel, device) = (Kernel::MaxPool2dBackward, &dy.device);
    if n > 0 && device.defers(kernel) {
        // The activation's mask before the pool runs in its stores.
        let groups = device.groups_1d(op, n)?;
        return device.defer(
            op,
            kernel,
            &[dy.dtype],
            p,
            &[dy, indices],
            groups,
            n,
            dy.dtype,
        );
    }
    Ok(launch_window(op, kernel, &[dy, indices], p, &[(n, dy.dtype)])?.remove(0))
}

pub(crate) fn avg_pool2d_backward(
    dy: &GpuStorage,
    s: &WindowSpec,
    kind: PoolKind,
) -> Result<GpuStorage> {
    let op = "avg_pool2d_backward";
    // Each input element walks the outputs whose windows cover it.
    let (rows, cols) = match kind {
        PoolKind::AdaptiveAvg => (s.oh.div_ceil(s.h) + 1, s.ow.div_ceil(s.w) + 1),
        PoolKind::Avg { .. } => (s.kh.div_ceil(s.stride.0) + 1, s.kw.div_ceil(s.stride.1) + 1),
    };
    check_window(op, dy, rows, cols)?;
    let n = s.n * s.c * s.h * s.w;
    let p = WindowParams::new(op, s, n, pool_mode(kind))?;
    Ok(launch_window(op, Kernel::AvgPool2dBackward, &[dy], p, &[(n, dy.dtype)])?.remove(0))
}

/// On a software adapter, an error for windows of `kh` x `kw` too large for a pooling
/// kernel's loops (`loop_budget`).
fn check_window(op: &'static str, x: &GpuStorage, kh: usize, kw: usize) -> Result<()> {
    let iterations = kh * kw + kh;
    loop_budget::check(op, &x.device, iterations, || {
        format!("windows of {kh}x{kw}")
    })
}

/// The `mode` word of `pool/avg_pool2d*.wgsl`.
fn pool_mode(kind: PoolKind) -> u32 {
    match kind {
        PoolKind::Avg {
            count_include_pad: true,
        } => 0,
        PoolKind::Avg {
            count_include_pad: false,
        } => 1,
        PoolKind::AdaptiveAvg => 2,
    }
}
