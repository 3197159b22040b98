//! Fused optimizer steps (`shaders/optim/`): one kernel per parameter and step, which
//! reads the parameter, gradient and states once and writes the new ones once.

use crate::kernels::Kernel;
use crate::params::{to_u32, AdamParams, RmsPropParams, SgdParams, ShaderParams};
use crate::storage::GpuStorage;
use kiln_core::{OptimizerStep, Result};

/// `step` applied to `param` (compact, like `grad` and each of the `step.states()`
/// states, which the tensor layer checks): the new parameter and states.
pub(crate) fn update(
    param: &GpuStorage,
    grad: &GpuStorage,
    states: &[&GpuStorage],
    step: &OptimizerStep,
) -> Result<(GpuStorage, Vec<GpuStorage>)> {
    let op = "optimizer_update";
    let n = to_u32(op, "elements", param.len)?;
    match *step {
        OptimizerStep::Adam(s) => launch(
            param,
            grad,
            states,
            Kernel::AdamUpdate,
            &AdamParams {
                n,
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.eps,
                step_size: s.step_size,
                inv_correction2: s.inv_correction2,
                coupled_decay: s.coupled_decay,
                decay_factor: s.decay_factor,
            },
        ),
        OptimizerStep::SgdMomentum(s) => launch(
            param,
            grad,
            states,
            Kernel::SgdUpdate,
            &SgdParams {
                n,
                lr: s.lr,
                momentum: s.momentum,
                weight_decay: s.weight_decay,
                nesterov: s.nesterov as u32,
                _pad0: 0,
                _pad1: 0,
                _pad2: 0,
            },
        ),
        OptimizerStep::RmsProp(s) => launch(
            param,
            grad,
            states,
            Kernel::RmsPropUpdate,
            &RmsPropParams {
                n,
                lr: s.lr,
                alpha: s.alpha,
                eps: s.eps,
                weight_decay: s.weight_decay,
                _pad0: 0,
                _pad1: 0,
                _pad2: 0,
            },
        ),
    }
}

/// Binds `param, grad, states.., param_out, states_out..` in that order.
fn launch<P: ShaderParams>(
    param: &GpuStorage,
    grad: &GpuStorage,
    states: &[&GpuStorage],
    kernel: Kernel,
    params: &P,
) -> Result<(GpuStorage, Vec<GpuStorage>)> {
    let op = "optimizer_update";
    let device = &param.device;
    let (n, dtype) = (param.len, param.dtype);
    let outs = (0..=states.len())
        .map(|_| device.alloc_output(op, n, dtype))
        .collect::<Result<Vec<_>>>()?;
    if n > 0 {
        let mut buffers = vec![param.raw()?, grad.raw()?];
        for s in states {
            buffers.push(s.raw()?);
        }
        buffers.extend(outs.iter().map(|b| b.buffer()));
        device.dispatch(
            op,
            kernel,
            &[dtype],
            params,
            &buffers,
            device.groups_1d(op, n)?,
        )?;
    }
    let mut outs = outs
        .into_iter()
        .map(|b| GpuStorage::new(b, dtype, n, device));
    let param_out = outs.next().expect("one output per state and the parameter");
    Ok((param_out, outs.collect()))
}
