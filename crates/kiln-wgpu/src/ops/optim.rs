//! Fused optimizer updates (`shaders/optim/`): one kernel per parameter and step.

use crate::kernels::Kernel;
use crate::params::{to_u32, AdamParams};
use crate::storage::GpuStorage;
use kiln_core::{AdamSpec, Result};

/// `AdamSpec`'s update of `param` (compact, like `grad`, `m` and `v`): returns the new
/// parameter and moments.
pub(crate) fn adam(
    param: &GpuStorage,
    grad: &GpuStorage,
    m: &GpuStorage,
    v: &GpuStorage,
    spec: &AdamSpec,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    let op = "adam_update";
    let device = &param.device;
    let (n, dtype) = (param.len, param.dtype);
    let params = AdamParams {
        n: to_u32(op, "elements", n)?,
        beta1: spec.beta1,
        beta2: spec.beta2,
        eps: spec.eps,
        step_size: spec.step_size,
        inv_correction2: spec.inv_correction2,
        coupled_decay: spec.coupled_decay,
        decay_factor: spec.decay_factor,
    };
    let outs = [(); 3].map(|_| device.alloc_output(op, n, dtype));
    let [p_out, m_out, v_out] = outs;
    let (p_out, m_out, v_out) = (p_out?, m_out?, v_out?);
    if n > 0 {
        let buffers = [
            param.raw(),
            grad.raw(),
            m.raw(),
            v.raw(),
            p_out.buffer(),
            m_out.buffer(),
            v_out.buffer(),
        ];
        let groups = device.groups_1d(op, n)?;
        device.dispatch(op, Kernel::AdamUpdate, &[dtype], &params, &buffers, groups)?;
    }
    let wrap = |b| GpuStorage::new(b, dtype, n, device);
    Ok((wrap(p_out), wrap(m_out), wrap(v_out)))
}
