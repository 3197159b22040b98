//! The fused recurrent steps (`shaders/rnn/`): one kernel per LSTM time step forward,
//! one backward.

use crate::kernels::Kernel;
use crate::params::{to_u32, LstmParams};
use crate::storage::GpuStorage;
use kiln_core::{LstmCellSpec, Result};

fn params(op: &'static str, spec: &LstmCellSpec) -> Result<LstmParams> {
    Ok(LstmParams {
        batch: to_u32(op, "batch", spec.batch)?,
        hidden: to_u32(op, "hidden size", spec.hidden)?,
        _pad0: 0,
        _pad1: 0,
    })
}

/// `[h | c']` from the compact gate pre-activations `z` and cell state `c`.
pub(crate) fn lstm_cell(z: &GpuStorage, c: &GpuStorage, spec: &LstmCellSpec) -> Result<GpuStorage> {
    let op = "lstm_cell";
    let device = &z.device;
    let units = spec.batch * spec.hidden;
    let out = device.alloc_output(op, 2 * units, z.dtype)?;
    if units > 0 {
        let buffers = [z.raw(), c.raw(), out.buffer()];
        let groups = device.groups_1d(op, units)?;
        device.dispatch(
            op,
            Kernel::LstmCell,
            &[z.dtype],
            &params(op, spec)?,
            &buffers,
            groups,
        )?;
    }
    Ok(GpuStorage::new(out, z.dtype, 2 * units, device))
}

/// The gradients of `z` and `c` given the upstream gradient of `[h | c']`.
pub(crate) fn lstm_cell_backward(
    z: &GpuStorage,
    c: &GpuStorage,
    grad: &GpuStorage,
    spec: &LstmCellSpec,
) -> Result<(GpuStorage, GpuStorage)> {
    let op = "lstm_cell_backward";
    let device = &z.device;
    let units = spec.batch * spec.hidden;
    let dz = device.alloc_output(op, 4 * units, z.dtype)?;
    let dc = device.alloc_output(op, units, z.dtype)?;
    if units > 0 {
        let buffers = [z.raw(), c.raw(), grad.raw(), dz.buffer(), dc.buffer()];
        let groups = device.groups_1d(op, units)?;
        let p = params(op, spec)?;
        device.dispatch(
            op,
            Kernel::LstmCellBackward,
            &[z.dtype],
            &p,
            &buffers,
            groups,
        )?;
    }
    Ok((
        GpuStorage::new(dz, z.dtype, 4 * units, device),
        GpuStorage::new(dc, z.dtype, units, device),
    ))
}
