//! Fused optimizer steps (`shaders/optim/`): a kernel that reads each parameter,
//! gradient and state once and writes the new ones once; several parameters to a
//! launch where the adapter binds enough buffers (`optim_group`).

use super::optim_group;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::{to_u32, AdamParams, RmsPropParams, SgdParams, ShaderParams};
use crate::pipelines::in_group0;
use crate::pool::PooledBuffer;
use crate::storage::GpuStorage;
use kiln_core::{OptimizerStep, ParamUpdate, Result};
use std::time::Instant;

/// `step` applied to each update's parameter (compact, like its gradient and each of
/// its `step.states()` states, which the tensor layer checks): the new parameters and
/// states, in order.
pub(crate) fn update_all(
    updates: &[ParamUpdate<'_, GpuStorage>],
    step: &OptimizerStep,
) -> Result<Vec<(GpuStorage, Vec<GpuStorage>)>> {
    match *step {
        OptimizerStep::Adam(s) => run(updates, Kernel::AdamUpdate, |n| AdamParams {
            n,
            one_minus_beta1: s.one_minus_beta1,
            one_minus_beta2: s.one_minus_beta2,
            eps: s.eps,
            step_size: s.step_size,
            inv_correction2: s.inv_correction2,
            coupled_decay: s.coupled_decay,
            decay_factor: s.decay_factor,
        }),
        OptimizerStep::SgdMomentum(s) => run(updates, Kernel::SgdUpdate, |n| SgdParams {
            n,
            lr: s.lr,
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            nesterov: s.nesterov as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }),
        OptimizerStep::RmsProp(s) => run(updates, Kernel::RmsPropUpdate, |n| RmsPropParams {
            n,
            lr: s.lr,
            one_minus_alpha: s.one_minus_alpha,
            eps: s.eps,
            weight_decay: s.weight_decay,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }),
    }
}

/// The updates with `kernel`, whose params for `n` elements are `params(n)`: the
/// outputs allocated first, then neighbouring parameters of one dtype launched
/// together, as many as a launch can bind.
fn run<P: ShaderParams>(
    updates: &[ParamUpdate<'_, GpuStorage>],
    kernel: Kernel,
    params: impl Fn(u32) -> P,
) -> Result<Vec<(GpuStorage, Vec<GpuStorage>)>> {
    let op = "optimizer_update";
    let Some(first) = updates.first() else {
        return Ok(Vec::new());
    };
    let device = &first.param.device;
    device.check_params::<P>(op, kernel)?;
    let states = first.states.len();
    let outs = updates
        .iter()
        .map(|u| {
            (0..=states)
                .map(|_| device.alloc_output(op, u.param.len, u.param.dtype))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let limit = device.inner.limits.max_storage_buffers_per_shader_stage;
    let most = optim_group::group_size(limit, states).max(1);
    // Empty parameters launch nothing.
    let work: Vec<_> = updates
        .iter()
        .zip(&outs)
        .filter(|(u, _)| u.param.len > 0)
        .collect();
    for group in work.chunk_by(|a, b| a.0.param.dtype == b.0.param.dtype) {
        for launch in group.chunks(most) {
            match launch {
                [(u, out)] => launch_one(u, out, kernel, &params)?,
                _ => launch_group(launch, kernel, &params)?,
            }
        }
    }
    let results = updates.iter().zip(outs).map(|(u, outs)| {
        let (n, dtype) = (u.param.len, u.param.dtype);
        let mut outs = outs
            .into_iter()
            .map(|b| GpuStorage::new(b, dtype, n, device));
        let param = outs.next().expect("one output per state and the parameter");
        (param, outs.collect())
    });
    Ok(results.collect())
}

/// The buffers one parameter binds: `param, grad, states.., param_out, states_out..`.
fn bindings<'a>(
    u: &'a ParamUpdate<'_, GpuStorage>,
    out: &'a [PooledBuffer],
) -> Result<Vec<&'a wgpu::Buffer>> {
    let mut buffers = vec![u.param.raw()?, u.grad.raw()?];
    for s in &u.states {
        buffers.push(s.raw()?);
    }
    buffers.extend(out.iter().map(|b| b.buffer()));
    Ok(buffers)
}

/// One parameter: the shader as written.
fn launch_one<P: ShaderParams>(
    u: &ParamUpdate<'_, GpuStorage>,
    out: &[PooledBuffer],
    kernel: Kernel,
    params: &impl Fn(u32) -> P,
) -> Result<()> {
    let op = "optimizer_update";
    let (device, n) = (&u.param.device, u.param.len);
    let params = params(to_u32(op, "elements", n)?);
    let groups = device.groups_1d(op, n)?;
    device.dispatch(
        op,
        kernel,
        &[u.param.dtype],
        &params,
        &bindings(u, out)?,
        groups,
    )
}

/// Several parameters of one dtype in one launch (`optim_group`).
fn launch_group<P: ShaderParams>(
    launch: &[(&ParamUpdate<'_, GpuStorage>, &Vec<PooledBuffer>)],
    kernel: Kernel,
    params: &impl Fn(u32) -> P,
) -> Result<()> {
    let op = "optimizer_update";
    let start = Instant::now();
    let (u, _) = launch[0];
    let (device, dtype, states) = (&u.param.device, u.param.dtype, u.states.len());
    if !device.supports(dtype) {
        return Err(crate::device::GpuDevice::unsupported(op, dtype));
    }
    let mut starts = vec![0u32];
    for (u, _) in launch {
        let total = *starts.last().expect("starts from 0") as usize + u.param.len;
        starts.push(to_u32(
            op,
            "elements of the parameters in one launch",
            total,
        )?);
    }
    let total = *starts.last().expect("starts from 0");
    let bytes = optim_group::params_bytes(&params(total), &starts)?;
    let mut buffers = Vec::new();
    for (u, out) in launch {
        buffers.extend(bindings(u, out)?);
    }
    let resources: Vec<_> = buffers.iter().map(|b| b.as_entire_binding()).collect();
    let k = launch.len();
    let key = format!("{kernel:?} [{dtype:?}] x{k}");
    let written = in_group0(&optim_group::written_bindings(k, states));
    let pipeline = device.cached_pipeline(key, kernel, 1, written, || {
        optim_group::source(kernel, dtype, k, states)
    })?;
    let groups = device.groups_1d(op, total as usize)?;
    let bind = Bindings::numbered(&bytes, &resources, 1);
    let name = || format!("{}:main [{dtype:?}] x{k} parameters", kernel.file().0);
    device.launch(op, &pipeline, &[bind], groups, start, name)
}
