//! Launchers for `shaders/index/`: gather (and index_select) and scatter_add.

use crate::kernels::Kernel;
use crate::loop_budget::SOFTWARE_LOOP_BUDGET;
use crate::params::{to_u32, GatherParams, ScatterParams};
use crate::pool::PooledBuffer;
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
    // Each thread loops over a launch's sources: runs short enough for a software
    // adapter's loops (`loop_budget`), on every adapter, so the sums do not vary.
    let runs = s.src_dim.div_ceil(SOFTWARE_LOOP_BUDGET).max(1);
    let mut acc: Option<PooledBuffer> = None;
    for run in 0..runs {
        let first = run * SOFTWARE_LOOP_BUDGET;
        let params = ScatterParams {
            outer: u(s.outer)?,
            dim: u(s.dim)?,
            src_dim: u(s.src_dim)?,
            inner: u(s.inner)?,
            first: u(first)?,
            count: u(SOFTWARE_LOOP_BUDGET.min(s.src_dim - first))?,
            _pad0: 0,
            _pad1: 0,
            index_strides: [
                u(s.index_strides[0])?,
                u(s.index_strides[1])?,
                u(s.index_strides[2])?,
                0,
            ],
        };
        let out = device.alloc_output(op, n, x.dtype)?;
        let input = match &acc {
            Some(previous) => previous.buffer(),
            None => x.raw()?,
        };
        let buffers = [input, index.raw()?, src.raw()?, out.buffer()];
        // index_select's gradient (a 1-D index): one workgroup per output row reads
        // the index once, where a thread per output element read all of it.
        let (kernel, groups) = match s.index_strides == [0, 1, 0] {
            true => (
                Kernel::IndexAddRows,
                device.groups_for(op, s.outer * s.dim)?,
            ),
            false => (Kernel::ScatterAdd, device.groups_1d(op, n)?),
        };
        device.dispatch(op, kernel, &[x.dtype], &params, &buffers, groups)?;
        acc = Some(out);
    }
    let out = acc.expect("at least one run");
    Ok(GpuStorage::new(out, x.dtype, n, device))
}
