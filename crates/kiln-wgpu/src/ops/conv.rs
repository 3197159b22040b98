//! Launchers for `shaders/conv/`: im2col and col2im around the matmul, the direct
//! grouped convolution and the weight gradient; one thread per output element.

use super::launch_window;
use crate::kernels::Kernel;
use crate::params::{to_u32, DirectConvParams, WindowParams};
use crate::storage::GpuStorage;
use kiln_core::{Result, WindowSpec};

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
    let device = &x.device;
    let n = s.n * out_channels * s.oh * s.ow;
    let out = device.alloc_output(op, n, x.dtype)?;
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
    device.dispatch(
        op,
        Kernel::Conv2dDirect,
        &[x.dtype],
        &p,
        &[x.raw()?, weight.raw()?, out.buffer()],
        device.groups_1d(op, n)?,
    )?;
    Ok(GpuStorage::new(out, x.dtype, n, device))
}

pub(crate) fn col2im(cols: &GpuStorage, s: &WindowSpec) -> Result<GpuStorage> {
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

pub(crate) fn conv2d_weight_grad(
    x: &GpuStorage,
    dy: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let op = "conv2d_backward";
    let n = out_channels * (s.c / groups) * s.kh * s.kw;
    let p = WindowParams::new(op, s, n, to_u32(op, "groups", groups)?)?;
    Ok(launch_window(op, Kernel::ConvWeightGrad, &[x, dy], p, &[(n, x.dtype)])?.remove(0))
}
