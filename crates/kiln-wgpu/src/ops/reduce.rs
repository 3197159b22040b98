//! Launchers for row-wise kernels: `reduce/` and `norm/`. One workgroup per row, or on
//! adapters that run on the CPU one invocation per row (`*_rows_serial.wgsl`) when the
//! rows are many and vec4-aligned.

use crate::kernels::Kernel;
use crate::params::{to_u32, Words};
use crate::storage::GpuStorage;
use kiln_core::{DType, ReduceOp, Result};

/// Rows below which the serial variant leaves too few invocations to fill the cores.
const SERIAL_MIN_ROWS: usize = 64;
const SERIAL_WORKGROUP: usize = 64;

/// True when `x`'s device is better served by the one-invocation-per-row kernels.
fn serial_rows(x: &GpuStorage, rows: usize, k: usize) -> bool {
    x.device.is_software() && rows >= SERIAL_MIN_ROWS && k > 0 && k.is_multiple_of(4)
}

fn rows_kernel(
    op: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    params: Words,
    rows: usize,
    out_len: usize,
    out_dtype: DType,
) -> Result<GpuStorage> {
    let x = inputs[0];
    let device = &x.device;
    let out = device.alloc_output(op, out_len, out_dtype)?;
    let groups = match kernel {
        Kernel::ReduceRowsSerial | Kernel::SoftmaxRowsSerial | Kernel::LayerNormRowsSerial => {
            device.groups_for(op, rows.div_ceil(SERIAL_WORKGROUP))?
        }
        _ => device.groups_for(op, rows)?,
    };
    let mut buffers: Vec<&wgpu::Buffer> = inputs.iter().map(|s| s.raw()).collect();
    buffers.push(out.buffer());
    device.dispatch(
        op,
        kernel,
        &[x.dtype],
        bytemuck::bytes_of(&params),
        &buffers,
        groups,
    )?;
    Ok(GpuStorage::new(out, out_dtype, out_len, device))
}

pub(crate) fn reduce(x: &GpuStorage, op: ReduceOp, rows: usize, k: usize) -> Result<GpuStorage> {
    let name = op.name();
    let params = Words([
        to_u32(name, "rows", rows)?,
        to_u32(name, "row length", k)?,
        op.code(),
        0,
    ]);
    if op.returns_index() {
        rows_kernel(
            name,
            Kernel::ArgReduce,
            &[x],
            params,
            rows,
            rows,
            DType::I32,
        )
    } else {
        let kernel = match serial_rows(x, rows, k) {
            true => Kernel::ReduceRowsSerial,
            false => Kernel::Reduce,
        };
        rows_kernel(name, kernel, &[x], params, rows, rows, x.dtype)
    }
}

pub(crate) fn reduce_middle(
    x: &GpuStorage,
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
) -> Result<GpuStorage> {
    let name = op.name();
    let params = Words([
        to_u32(name, "rows", outer)?,
        to_u32(name, "reduced size", k)?,
        to_u32(name, "columns", inner)?,
        op.code(),
    ]);
    let device = &x.device;
    let n = outer * inner;
    let out = device.alloc_output(name, n, x.dtype)?;
    device.dispatch(
        name,
        Kernel::ReduceColumns,
        &[x.dtype],
        bytemuck::bytes_of(&params),
        &[x.raw(), out.buffer()],
        device.groups_for(name, n.div_ceil(64))?,
    )?;
    Ok(GpuStorage::new(out, x.dtype, n, device))
}

pub(crate) fn softmax(x: &GpuStorage, rows: usize, k: usize, log: bool) -> Result<GpuStorage> {
    let name = if log { "log_softmax" } else { "softmax" };
    super::require_float(name, x.dtype)?;
    let params = Words([
        to_u32(name, "rows", rows)?,
        to_u32(name, "row length", k)?,
        log as u32,
        0,
    ]);
    let kernel = match serial_rows(x, rows, k) {
        true => Kernel::SoftmaxRowsSerial,
        false => Kernel::Softmax,
    };
    rows_kernel(name, kernel, &[x], params, rows, rows * k, x.dtype)
}

pub(crate) fn layer_norm(
    x: &GpuStorage,
    weight: &GpuStorage,
    bias: &GpuStorage,
    rows: usize,
    k: usize,
    eps: f32,
) -> Result<GpuStorage> {
    let name = "layer_norm";
    super::require_float(name, x.dtype)?;
    let params = Words([
        to_u32(name, "rows", rows)?,
        to_u32(name, "row length", k)?,
        eps.to_bits(),
        0,
    ]);
    let kernel = match serial_rows(x, rows, k) {
        true => Kernel::LayerNormRowsSerial,
        false => Kernel::LayerNorm,
    };
    rows_kernel(
        name,
        kernel,
        &[x, weight, bias],
        params,
        rows,
        rows * k,
        x.dtype,
    )
}
