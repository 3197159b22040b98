//! Launchers for `shaders/pool/`: max and average pooling and their gradients; one
//! thread per output element.

use super::launch_window;
use crate::kernels::Kernel;
use crate::params::WindowParams;
use crate::storage::GpuStorage;
use kiln_core::{DType, PoolKind, Result, WindowSpec};

pub(crate) fn max_pool2d(x: &GpuStorage, s: &WindowSpec) -> Result<(GpuStorage, GpuStorage)> {
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
    let n = s.n * s.c * s.h * s.w;
    let p = WindowParams::new(op, s, n, 0)?;
    Ok(launch_window(
        op,
        Kernel::MaxPool2dBackward,
        &[dy, indices],
        p,
        &[(n, dy.dtype)],
    )?
    .remove(0))
}

pub(crate) fn avg_pool2d_backward(
    dy: &GpuStorage,
    s: &WindowSpec,
    kind: PoolKind,
) -> Result<GpuStorage> {
    let op = "avg_pool2d_backward";
    let n = s.n * s.c * s.h * s.w;
    let p = WindowParams::new(op, s, n, pool_mode(kind))?;
    Ok(launch_window(op, Kernel::AvgPool2dBackward, &[dy], p, &[(n, dy.dtype)])?.remove(0))
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
