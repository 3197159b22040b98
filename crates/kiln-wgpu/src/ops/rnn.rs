//! The fused recurrent steps (`shaders/rnn/`): one kernel per LSTM or GRU time step
//! forward, one backward; one invocation per (row, unit).

use crate::kernels::Kernel;
use crate::params::{to_u32, RecurrentParams};
use crate::storage::GpuStorage;
use kiln_core::{GruCellSpec, LstmCellSpec, Result};

fn params(op: &'static str, batch: usize, hidden: usize) -> Result<RecurrentParams> {
    Ok(RecurrentParams {
        batch: to_u32(op, "batch", batch)?,
        hidden: to_u32(op, "hidden size", hidden)?,
        _pad0: 0,
        _pad1: 0,
    })
}

/// `[h | c']` from the compact gate pre-activations `z` and cell state `c`: with the
/// product behind `z` where it can (`recurrent_step`), else by the cell kernel.
pub(crate) fn lstm_cell(z: &GpuStorage, c: &GpuStorage, spec: &LstmCellSpec) -> Result<GpuStorage> {
    let op = "lstm_cell";
    let device = &z.device;
    let units = spec.batch * spec.hidden;
    if units > 0 {
        if let Some(hc) = super::recurrent_step::lstm_step(z, c, spec)? {
            return Ok(hc);
        }
    }
    let out = device.alloc_output(op, 2 * units, z.dtype)?;
    if units > 0 {
        device.dispatch_with_inputs(
            op,
            Kernel::LstmCell,
            &[z.dtype],
            &params(op, spec.batch, spec.hidden)?,
            &[z, c],
            &[out.buffer()],
            device.groups_1d(op, units)?,
        )?;
    }
    Ok(GpuStorage::new(out, z.dtype, 2 * units, device))
}

/// The gradients of `z` and `c` given the upstream gradients of `h` and `c'`: with the
/// product behind `dh` where it can (`recurrent_backward`), else by the cell's kernel.
pub(crate) fn lstm_cell_backward(
    z: &GpuStorage,
    c: &GpuStorage,
    dh: &GpuStorage,
    dc1: &GpuStorage,
    spec: &LstmCellSpec,
) -> Result<(GpuStorage, GpuStorage)> {
    let op = "lstm_cell_backward";
    let device = &z.device;
    let units = spec.batch * spec.hidden;
    if units > 0 {
        if let Some(grads) = super::recurrent_backward::lstm_step(z, c, dh, dc1, spec)? {
            return Ok(grads);
        }
    }
    let dz = device.alloc_output(op, 4 * units, z.dtype)?;
    let dc = device.alloc_output(op, units, z.dtype)?;
    if units > 0 {
        device.dispatch_with_inputs(
            op,
            Kernel::LstmCellBackward,
            &[z.dtype],
            &params(op, spec.batch, spec.hidden)?,
            &[z, c, dh, dc1],
            &[dz.buffer(), dc.buffer()],
            device.groups_1d(op, units)?,
        )?;
    }
    Ok((
        GpuStorage::new(dz, z.dtype, 4 * units, device),
        GpuStorage::new(dc, z.dtype, units, device),
    ))
}

/// `h'` from the compact input projection `x`, hidden projection `hp` and state `h`:
/// with the product behind `hp` where it can (`recurrent_step`), else by the cell
/// kernel.
pub(crate) fn gru_cell(
    x: &GpuStorage,
    hp: &GpuStorage,
    h: &GpuStorage,
    spec: &GruCellSpec,
) -> Result<GpuStorage> {
    let op = "gru_cell";
    let device = &x.device;
    let units = spec.batch * spec.hidden;
    if units > 0 {
        if let Some(h1) = super::recurrent_step::gru_step(x, hp, h, spec)? {
            return Ok(h1);
        }
    }
    let out = device.alloc_output(op, units, x.dtype)?;
    if units > 0 {
        device.dispatch_with_inputs(
            op,
            Kernel::GruCell,
            &[x.dtype],
            &params(op, spec.batch, spec.hidden)?,
            &[x, hp, h],
            &[out.buffer()],
            device.groups_1d(op, units)?,
        )?;
    }
    Ok(GpuStorage::new(out, x.dtype, units, device))
}

/// The gradients of `x`, `hp` and `h` given the upstream gradient of `h'`: with the
/// product behind it where it can (`recurrent_backward`), else by the cell's kernel.
pub(crate) fn gru_cell_backward(
    x: &GpuStorage,
    hp: &GpuStorage,
    h: &GpuStorage,
    grad: &GpuStorage,
    spec: &GruCellSpec,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    let op = "gru_cell_backward";
    let device = &x.device;
    let units = spec.batch * spec.hidden;
    if units > 0 {
        if let Some(grads) = super::recurrent_backward::gru_step(x, hp, h, grad, spec)? {
            return Ok(grads);
        }
    }
    let dx = device.alloc_output(op, 3 * units, x.dtype)?;
    let dhp = device.alloc_output(op, 3 * units, x.dtype)?;
    let dh = device.alloc_output(op, units, x.dtype)?;
    if units > 0 {
        device.dispatch_with_inputs(
            op,
            Kernel::GruCellBackward,
            &[x.dtype],
            &params(op, spec.batch, spec.hidden)?,
            &[x, hp, h, grad],
            &[dx.buffer(), dhp.buffer(), dh.buffer()],
            device.groups_1d(op, units)?,
        )?;
    }
    let wrap = |b, n| GpuStorage::new(b, x.dtype, n, device);
    Ok((wrap(dx, 3 * units), wrap(dhp, 3 * units), wrap(dh, units)))
}
