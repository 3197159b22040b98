//! Launchers for `shaders/index/`: gather (and index_select) and scatter_add.

use crate::kernels::Kernel;
use crate::params::{to_u32, GatherParams, ScatterParams};
use crate::storage::GpuStorage;
use kiln_core::{GatherSpec, Result, ScatterSpec};

pub(crate) fn gather(x: &GpuStorage, index: &GpuStorage, s: &GatherSpec) -> Result<GpuStorage> {
    let op = "gather";
    let device = &x.device;
    let n = s.outer * s.out_dim * s.inner;
    let u = |v: usize| to_u32(op, "size", v);
    let params = GatherParams {
        outer: u(s.outer)?,
        in_dim: u(s.in_dim)?,
        out_dim: u(s.out_dim)?,
        inner: u(s.inner)?,
        index_strides: [
            u(s.index_strides[0])?,
            u(s.index_strides[1])?,
            u(s.index_strides[2])?,
            0,
        ],
    };
    let out = device.alloc_output(op, n, x.dtype)?;
    device.dispatch(
        op,
        Kernel::Gather,
        &[x.dtype],
        &params,
        &[x.raw()?, index.raw()?, out.buffer()],
        device.groups_1d(op, n)?,
    )?;
    Ok(GpuStorage::new(out, x.dtype, n, device))
}

pub(crate) fn scatter_add(
    x: &GpuStorage,
    index: &GpuStorage,
    src: &GpuStorage,
    s: &ScatterSpec,
) -> Result<GpuStorage> {
    let op = "scatter_add";
    let device = &x.device;
    let n = s.outer * s.dim * s.inner;
    let u = |v: usize| to_u32(op, "size", v);
    let params = ScatterParams {
        outer: u(s.outer)?,
        dim: u(s.dim)?,
        src_dim: u(s.src_dim)?,
        inner: u(s.inner)?,
    };
    let out = device.alloc_output(op, n, x.dtype)?;
    let buffers = [x.raw()?, index.raw()?, src.raw()?, out.buffer()];
    device.dispatch(
        op,
        Kernel::ScatterAdd,
        &[x.dtype],
        &params,
        &buffers,
        device.groups_1d(op, n)?,
    )?;
    Ok(GpuStorage::new(out, x.dtype, n, device))
}
