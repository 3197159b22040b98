//! Launchers for `shaders/conv/` and `shaders/pool/`: one thread per output element.

use crate::kernels::Kernel;
use crate::params::{to_u32, DirectConvParams, WindowParams};
use crate::storage::GpuStorage;
use kiln_core::{DType, PoolKind, Result, WindowSpec};

fn params(op: &'static str, s: &WindowSpec, threads: usize, mode: u32) -> Result<WindowParams> {
    let u = |v: usize| to_u32(op, "window size", v);
    Ok(WindowParams {
        image: [u(s.n)?, u(s.c)?, u(s.h)?, u(s.w)?],
        window: [u(s.kh)?, u(s.kw)?, u(s.oh)?, u(s.ow)?],
        step: [
            u(s.stride.0)?,
            u(s.stride.1)?,
            u(s.padding.0)?,
            u(s.padding.1)?,
        ],
        extra: [
            u(s.dilation.0)?,
            u(s.dilation.1)?,
            to_u32(op, "element count", threads)?,
            mode,
        ],
    })
}

/// Runs a window kernel; `inputs[0]` is the floating-point tensor that sets the dtype.
fn launch(
    op: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    p: WindowParams,
    outputs: &[(usize, DType)],
) -> Result<Vec<GpuStorage>> {
    let x = inputs[0];
    super::require_float(op, x.dtype)?;
    let device = &x.device;
    let outs = outputs
        .iter()
        .map(|&(n, d)| device.alloc_output(op, n, d))
        .collect::<Result<Vec<_>>>()?;
    let mut buffers: Vec<&wgpu::Buffer> = inputs.iter().map(|t| t.raw()).collect();
    buffers.extend(outs.iter().map(|b| b.buffer()));
    let groups = device.groups_1d(op, p.extra[2] as usize)?;
    device.dispatch(
        op,
        kernel,
        &[x.dtype],
        bytemuck::bytes_of(&p),
        &buffers,
        groups,
    )?;
    Ok(outs
        .into_iter()
        .zip(outputs)
        .map(|(b, &(n, d))| GpuStorage::new(b, d, n, device))
        .collect())
}

pub(crate) fn im2col(x: &GpuStorage, s: &WindowSpec) -> Result<GpuStorage> {
    let n = s.n * s.c * s.kh * s.kw * s.oh * s.ow;
    Ok(launch(
        "conv2d",
        Kernel::Im2col,
        &[x],
        params("conv2d", s, n, 0)?,
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
    super::require_float(op, x.dtype)?;
    let device = &x.device;
    let n = s.n * out_channels * s.oh * s.ow;
    let out = device.alloc_output(op, n, x.dtype)?;
    let p = DirectConvParams {
        window: params(op, s, n, 0)?,
        channels: [
            to_u32(op, "channels", out_channels)?,
            to_u32(op, "groups", groups)?,
            0,
            0,
        ],
    };
    device.dispatch(
        op,
        Kernel::Conv2dDirect,
        &[x.dtype],
        bytemuck::bytes_of(&p),
        &[x.raw(), weight.raw(), out.buffer()],
        device.groups_1d(op, n)?,
    )?;
    Ok(GpuStorage::new(out, x.dtype, n, device))
}

pub(crate) fn col2im(cols: &GpuStorage, s: &WindowSpec) -> Result<GpuStorage> {
    let n = s.n * s.c * s.h * s.w;
    Ok(launch(
        "conv_transpose2d",
        Kernel::Col2im,
        &[cols],
        params("conv_transpose2d", s, n, 0)?,
        &[(n, cols.dtype)],
    )?
    .remove(0))
}

pub(crate) fn max_pool2d(x: &GpuStorage, s: &WindowSpec) -> Result<(GpuStorage, GpuStorage)> {
    let n = s.n * s.c * s.oh * s.ow;
    let mut outs = launch(
        "max_pool2d",
        Kernel::MaxPool2d,
        &[x],
        params("max_pool2d", s, n, 0)?,
        &[(n, x.dtype), (n, DType::I32)],
    )?;
    let indices = outs.remove(1);
    Ok((outs.remove(0), indices))
}

pub(crate) fn avg_pool2d(x: &GpuStorage, s: &WindowSpec, kind: PoolKind) -> Result<GpuStorage> {
    let n = s.n * s.c * s.oh * s.ow;
    let mode = pool_mode(kind);
    Ok(launch(
        "avg_pool2d",
        Kernel::AvgPool2d,
        &[x],
        params("avg_pool2d", s, n, mode)?,
        &[(n, x.dtype)],
    )?
    .remove(0))
}

pub(crate) fn conv2d_weight_grad(
    x: &GpuStorage,
    dy: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let op = "conv2d_backward";
    let n = out_channels * (s.c / groups) * s.kh * s.kw;
    let p = params(op, s, n, to_u32(op, "groups", groups)?)?;
    Ok(launch(op, Kernel::ConvWeightGrad, &[x, dy], p, &[(n, x.dtype)])?.remove(0))
}

pub(crate) fn max_pool2d_backward(
    dy: &GpuStorage,
    indices: &GpuStorage,
    s: &WindowSpec,
) -> Result<GpuStorage> {
    let op = "max_pool2d_backward";
    let n = s.n * s.c * s.h * s.w;
    let p = params(op, s, n, 0)?;
    Ok(launch(
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
    let p = params(op, s, n, pool_mode(kind))?;
    Ok(launch(op, Kernel::AvgPool2dBackward, &[dy], p, &[(n, dy.dtype)])?.remove(0))
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
