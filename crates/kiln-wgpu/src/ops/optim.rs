//! Fused optimizer steps (`shaders/optim/`): a kernel that reads each parameter,
//! gradient and state once and writes the new ones once, over the old where nothing
//! else holds them (`update_in_place`) or into new buffers; several parameters to a
//! launch where the adapter binds enough buffers (`optim_group`).

use super::optim_group::{self, Writes};
use crate::device::GpuDevice;
use crate::fusion::FusedOp;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::{
    to_u32, AdamParams, MovingAverageParams, RmsPropParams, SgdParams, ShaderParams,
};
use crate::pipelines::in_group0;
use crate::pool::PooledBuffer;
use crate::storage::GpuStorage;
use kiln_core::{OptimizerStep, ParamUpdate, ParamUpdateInPlace, Result, UnaryOp};
use std::time::Instant;

/// `step` applied to each update's parameter (compact, like its gradient and each of
/// its `step.states()` states, which the tensor layer checks): the new parameters and
/// states, in order.
pub(crate) fn update_all(
    updates: &[ParamUpdate<'_, GpuStorage>],
    step: &OptimizerStep,
) -> Result<Vec<(GpuStorage, Vec<GpuStorage>)>> {
    let op = "optimizer_update";
    let Some(first) = updates.first() else {
        return Ok(Vec::new());
    };
    let device = &first.param.device;
    let (kernel, params) = step_kernel(device, step)?;
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
    let most = optim_group::group_size(limit, states, Writes::New).max(1);
    let grads: Vec<_> = updates
        .iter()
        .map(|u| unscaled(u.grad, u.grad_scale))
        .collect();
    // Empty parameters launch nothing.
    let work: Vec<_> = updates
        .iter()
        .zip(&grads)
        .zip(&outs)
        .filter(|((u, _), _)| u.param.len > 0)
        .collect();
    for group in work.chunk_by(|a, b| a.0 .0.param.dtype == b.0 .0.param.dtype) {
        for launch in group.chunks(most) {
            match launch {
                // The shader as written binds its states and takes the gradient
                // unscaled: a step without them, or scaled, runs the group kernel.
                [((u, (grad, 1.0)), out)] if states > 0 => {
                    launch_one(u, grad, out, kernel, &params)?
                }
                _ => {
                    let buffers = launch
                        .iter()
                        .map(|((u, (grad, _)), out)| bindings(u, grad, out))
                        .collect::<Result<Vec<_>>>()?;
                    let parameters: Vec<_> = launch
                        .iter()
                        .map(|((u, (_, scale)), _)| (u.param, *scale))
                        .collect();
                    launch_group(
                        &parameters,
                        &buffers,
                        (Writes::New, states),
                        kernel,
                        &params,
                    )?
                }
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

/// `update_all` written over the parameters and states of the updates that hold them
/// alone (`GpuStorage::exclusive`), once every gradient is computed (the work that
/// computes a gradient may read a parameter); returns which were.
pub(crate) fn update_in_place(
    updates: &mut [ParamUpdateInPlace<'_, GpuStorage>],
    step: &OptimizerStep,
) -> Result<Vec<bool>> {
    let Some(first) = updates.first() else {
        return Ok(Vec::new());
    };
    let device = first.param.device.clone();
    let (kernel, params) = step_kernel(&device, step)?;
    let states = first.states.len();
    let grads: Vec<_> = updates
        .iter()
        .map(|u| unscaled(u.grad, u.grad_scale))
        .collect();
    for (grad, _) in &grads {
        grad.raw()?;
    }
    let mut in_place = Vec::with_capacity(updates.len());
    for u in updates.iter() {
        let mut alone = true;
        for t in std::iter::once(&*u.param).chain(u.states.iter().map(|s| &**s)) {
            // An expression still to run that reads it (a held loss reading the last
            // layer's bias) runs first: it would have the old values anyway, and
            // writing the update into new storage would hold two copies.
            alone &= t.exclusive()? || {
                device.run_readers(&t.data)?;
                t.exclusive()?
            };
        }
        in_place.push(alone);
    }
    // Empty parameters launch nothing.
    let work: Vec<_> = updates
        .iter()
        .zip(&grads)
        .zip(&in_place)
        .filter(|((u, _), alone)| **alone && u.param.len > 0)
        .map(|(work, _)| work)
        .collect();
    let limit = device.inner.limits.max_storage_buffers_per_shader_stage;
    let most = optim_group::group_size(limit, states, Writes::InPlace).max(1);
    for group in work.chunk_by(|a, b| a.0.param.dtype == b.0.param.dtype) {
        for launch in group.chunks(most) {
            let buffers = launch
                .iter()
                .map(|(u, (grad, _))| read_buffers(u.param, grad, u.states.iter().map(|s| &**s)))
                .collect::<Result<Vec<_>>>()?;
            let parameters: Vec<_> = launch
                .iter()
                .map(|(u, (_, scale))| (&*u.param, *scale))
                .collect();
            launch_group(
                &parameters,
                &buffers,
                (Writes::InPlace, states),
                kernel,
                &params,
            )?;
        }
    }
    // A step written in place ends a training step: submitted now, the GPU runs its tail
    // while the host records the next step, and each step's work starts a batch of its
    // own, so a repeated step binds what it bound before (`bind_groups`). A moving
    // average (batch norm's running statistics) comes anywhere in a step.
    if !matches!(step, OptimizerStep::MovingAverage(_)) {
        device.flush("optimizer step")?;
    }
    Ok(in_place)
}

/// An update's params for a launch over `n` elements, as bytes.
type StepParams = Box<dyn Fn(u32) -> Vec<u8>>;

/// `step`'s kernel and its params.
fn step_kernel(device: &GpuDevice, step: &OptimizerStep) -> Result<(Kernel, StepParams)> {
    fn with<P: ShaderParams>(
        device: &GpuDevice,
        kernel: Kernel,
        params: impl Fn(u32) -> P + 'static,
    ) -> Result<(Kernel, StepParams)> {
        device.check_params::<P>("optimizer_update", kernel)?;
        Ok((
            kernel,
            Box::new(move |n| bytemuck::bytes_of(&params(n)).to_vec()),
        ))
    }
    match *step {
        OptimizerStep::Adam(s) => with(device, Kernel::AdamUpdate, move |n| AdamParams {
            n,
            one_minus_beta1: s.one_minus_beta1,
            one_minus_beta2: s.one_minus_beta2,
            eps: s.eps,
            step_size: s.step_size,
            inv_correction2: s.inv_correction2,
            coupled_decay: s.coupled_decay,
            decay_factor: s.decay_factor,
        }),
        OptimizerStep::SgdMomentum(s) => with(device, Kernel::SgdUpdate, move |n| SgdParams {
            n,
            lr: s.lr,
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            nesterov: s.nesterov as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }),
        OptimizerStep::RmsProp(s) => with(device, Kernel::RmsPropUpdate, move |n| RmsPropParams {
            n,
            lr: s.lr,
            one_minus_alpha: s.one_minus_alpha,
            eps: s.eps,
            weight_decay: s.weight_decay,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }),
        OptimizerStep::MovingAverage(s) => with(device, Kernel::MovingAverageUpdate, move |n| {
            MovingAverageParams {
                n,
                decay: s.decay,
                one_minus_decay: s.one_minus_decay,
                _pad0: 0,
            }
        }),
    }
}

/// The gradient an update reads and the scale it takes it by: a gradient still to be
/// computed as `x * c` (gradient clipping's) is read as `x`, its scale times `c`, where
/// `x` is a whole storage of its own, so that no launch writes the scaled copy first.
fn unscaled(grad: &GpuStorage, scale: f32) -> (GpuStorage, f32) {
    if let Some(e) = grad.data.expr.lock().unwrap().as_ref() {
        if let (FusedOp::Unary(UnaryOp::MulScalar(c)), [x]) = (e.op, &e.args[..]) {
            let s = &x.storage;
            if x.layout.is_compact() && s.len == grad.len && s.dtype == grad.dtype {
                return (s.clone(), scale * c);
            }
        }
    }
    (grad.clone(), scale)
}

/// The buffers one parameter binds: `param, grad, states.., param_out, states_out..`.
fn bindings<'a>(
    u: &'a ParamUpdate<'_, GpuStorage>,
    grad: &'a GpuStorage,
    out: &'a [PooledBuffer],
) -> Result<Vec<&'a wgpu::Buffer>> {
    let mut buffers = read_buffers(u.param, grad, u.states.iter().copied())?;
    buffers.extend(out.iter().map(|b| b.buffer()));
    Ok(buffers)
}

/// `param, grad, states..`: what every update binds first (and all an update written
/// in place binds).
fn read_buffers<'a>(
    param: &'a GpuStorage,
    grad: &'a GpuStorage,
    states: impl Iterator<Item = &'a GpuStorage>,
) -> Result<Vec<&'a wgpu::Buffer>> {
    let mut buffers = vec![param.raw()?, grad.raw()?];
    for s in states {
        buffers.push(s.raw()?);
    }
    Ok(buffers)
}

/// One parameter into new buffers: the shader as written.
fn launch_one(
    u: &ParamUpdate<'_, GpuStorage>,
    grad: &GpuStorage,
    out: &[PooledBuffer],
    kernel: Kernel,
    params: &StepParams,
) -> Result<()> {
    let op = "optimizer_update";
    let start = Instant::now();
    let (device, n, dtype) = (&u.param.device, u.param.len, u.param.dtype);
    let bytes = params(to_u32(op, "elements", n)?);
    let pipeline = device.pipeline(op, kernel, &[dtype])?;
    let resources: Vec<_> = bindings(u, grad, out)?
        .iter()
        .map(|b| b.as_entire_binding())
        .collect();
    let bind = Bindings::numbered(&bytes, &resources, 1);
    let groups = device.groups_1d(op, n)?;
    let name = || format!("{} [{dtype:?}]", kernel.label());
    device.launch(op, &pipeline, &[bind], groups, start, name)
}

/// Several parameters of one dtype in one launch (`optim_group`), each with its
/// gradient's scale and `states` states, binding its `buffers` as `writes` orders them.
fn launch_group(
    parameters: &[(&GpuStorage, f32)],
    buffers: &[Vec<&wgpu::Buffer>],
    (writes, states): (Writes, usize),
    kernel: Kernel,
    params: &StepParams,
) -> Result<()> {
    let op = "optimizer_update";
    let start = Instant::now();
    let (device, dtype) = (&parameters[0].0.device, parameters[0].0.dtype);
    if !device.supports(dtype) {
        return Err(crate::device::GpuDevice::unsupported(op, dtype));
    }
    let mut starts = vec![0u32];
    for (p, _) in parameters {
        let total = *starts.last().expect("starts from 0") as usize + p.len;
        starts.push(to_u32(
            op,
            "elements of the parameters in one launch",
            total,
        )?);
    }
    let total = *starts.last().expect("starts from 0");
    let scales: Vec<f32> = parameters.iter().map(|&(_, scale)| scale).collect();
    let bytes = optim_group::params_bytes(&params(total), &starts, &scales)?;
    let resources: Vec<_> = buffers
        .iter()
        .flatten()
        .map(|b| b.as_entire_binding())
        .collect();
    let k = parameters.len();
    let key = format!("{kernel:?} [{dtype:?}] x{k} {states} states {writes:?}");
    let written = in_group0(&optim_group::written_bindings(k, states, writes));
    let pipeline = device.cached_pipeline(key, kernel, 1, written, || {
        optim_group::source(kernel, dtype, k, states, writes)
    })?;
    let groups = device.groups_1d(op, total as usize)?;
    let bind = Bindings::numbered(&bytes, &resources, 1);
    let name = || {
        let place = match writes {
            Writes::New => "",
            Writes::InPlace => " in place",
        };
        format!(
            "{}:main [{dtype:?}] x{k} parameters{place}",
            kernel.file().0
        )
    };
    device.launch(op, &pipeline, &[bind], groups, start, name)
}
