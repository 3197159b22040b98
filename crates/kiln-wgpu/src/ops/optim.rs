//! Fused optimizer steps (`shaders/optim/`): a kernel that reads each parameter,
//! gradient and state once and writes the new ones once, over the old where nothing
//! else holds them (`update_in_place`) or into new buffers; several parameters to a
//! launch where the adapter binds enough buffers (`optim_group`).

use super::optim_group::{self, Writes};
use crate::device::GpuDevice;
use crate::fusion::{self, Arg, FusedOp};
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::{
    to_u32, AdamParams, MovingAverageParams, RmsPropParams, SgdParams, ShaderParams,
};
use crate::pipelines::in_group0;
use crate::pool::PooledBuffer;
use crate::storage::GpuStorage;
use kiln_core::{BinaryOp, OptimizerStep, ParamUpdate, ParamUpdateInPlace, Result, UnaryOp};
use std::sync::Arc;
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
    let grads: Vec<_> = updates
        .iter()
        .map(|u| GradRead::of(u.grad, u.grad_scale))
        .collect();
    run_gradients(device, &grads)?;
    // Empty parameters launch nothing.
    let work: Vec<_> = updates
        .iter()
        .zip(&grads)
        .zip(&outs)
        .filter(|((u, _), _)| u.param.len > 0)
        .collect();
    for group in work.chunk_by(|((a, a_grad), _), ((b, b_grad), _)| {
        a.param.dtype == b.param.dtype && a_grad.same_device_scale(b_grad)
    }) {
        let by = group[0].0 .1.by.as_ref();
        let most = optim_group::group_size(limit, states, Writes::New, by.is_some()).max(1);
        for launch in group.chunks(most) {
            match launch {
                // The shader as written binds its states and takes the gradient
                // unscaled: a step without them, or scaled, runs the group kernel.
                [((u, grad), out)] if states > 0 && grad.is_plain() => {
                    launch_one(u, &grad.storage, out, kernel, &params)?
                }
                _ => {
                    let buffers = launch
                        .iter()
                        .map(|((u, grad), out)| bindings(u, &grad.storage, out))
                        .collect::<Result<Vec<_>>>()?;
                    let parameters: Vec<_> = launch
                        .iter()
                        .map(|((u, grad), _)| (u.param, grad.scale))
                        .collect();
                    launch_group(
                        &parameters,
                        &buffers,
                        by,
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
        .map(|u| GradRead::of(u.grad, u.grad_scale))
        .collect();
    run_gradients(&device, &grads)?;
    for grad in &grads {
        grad.storage.raw()?;
        if let Some(by) = &grad.by {
            by.raw()?;
        }
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
    for group in work.chunk_by(|(a, a_grad), (b, b_grad)| {
        a.param.dtype == b.param.dtype && a_grad.same_device_scale(b_grad)
    }) {
        let by = group[0].1.by.as_ref();
        let most = optim_group::group_size(limit, states, Writes::InPlace, by.is_some()).max(1);
        for launch in group.chunks(most) {
            let buffers = launch
                .iter()
                .map(|(u, grad)| {
                    read_buffers(u.param, &grad.storage, u.states.iter().map(|s| &**s))
                })
                .collect::<Result<Vec<_>>>()?;
            let parameters: Vec<_> = launch
                .iter()
                .map(|(u, grad)| (&*u.param, grad.scale))
                .collect();
            launch_group(
                &parameters,
                &buffers,
                by,
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

/// Computes the gradients the step reads, the small expressions among them several to
/// a launch.
fn run_gradients(device: &GpuDevice, grads: &[GradRead]) -> Result<()> {
    let storages: Vec<&GpuStorage> = grads.iter().map(|g| &g.storage).collect();
    fusion::run_together(device, &storages)
}

/// How an update reads its gradient: `storage` times `scale`, and times the one value of
/// `by` where there is one.
struct GradRead {
    storage: GpuStorage,
    scale: f32,
    by: Option<GpuStorage>,
}

impl GradRead {
    /// A gradient still to be computed as `x * c` or as `x * s`, `s` one value on the
    /// device (gradient clipping's, by a constant or by a coefficient the device
    /// computed), is read as `x`, where `x` is a whole storage of its own, so that no
    /// launch writes the scaled copy first.
    fn of(grad: &GpuStorage, scale: f32) -> GradRead {
        let whole = |x: &Arg| {
            let s = &x.storage;
            x.layout.is_compact() && s.len == grad.len && s.dtype == grad.dtype
        };
        let one = |x: &Arg| x.storage.len == 1 && x.storage.dtype == grad.dtype;
        let read = |x: &Arg, scale, by: Option<&Arg>| GradRead {
            storage: x.storage.clone(),
            scale,
            by: by.map(|b| b.storage.clone()),
        };
        if let Some(e) = grad.data.expr.lock().unwrap().as_ref() {
            match (e.op, &e.args[..]) {
                (FusedOp::Unary(UnaryOp::MulScalar(c)), [x]) if whole(x) => {
                    return read(x, scale * c, None)
                }
                (FusedOp::Binary(BinaryOp::Mul), [x, s]) if whole(x) && one(s) => {
                    return read(x, scale, Some(s))
                }
                (FusedOp::Binary(BinaryOp::Mul), [s, x]) if whole(x) && one(s) => {
                    return read(x, scale, Some(s))
                }
                _ => {}
            }
        }
        GradRead {
            storage: grad.clone(),
            scale,
            by: None,
        }
    }

    /// Read as it lies, as the shader as written reads it.
    fn is_plain(&self) -> bool {
        self.scale == 1.0 && self.by.is_none()
    }

    /// Whether both are multiplied by the same value on the device, or neither: one
    /// launch binds one such value.
    fn same_device_scale(&self, other: &GradRead) -> bool {
        match (&self.by, &other.by) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.data, &b.data),
            _ => false,
        }
    }
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
/// gradient's scale and `states` states, binding its `buffers` as `writes` orders them,
/// and then `by`, the value on the device every gradient is also multiplied by.
fn launch_group(
    parameters: &[(&GpuStorage, f32)],
    buffers: &[Vec<&wgpu::Buffer>],
    by: Option<&GpuStorage>,
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
    let by = by.map(|b| b.raw()).transpose()?;
    let resources: Vec<_> = buffers
        .iter()
        .flatten()
        .chain(&by)
        .map(|b| b.as_entire_binding())
        .collect();
    let k = parameters.len();
    let by_device = by.is_some();
    let key = format!("{kernel:?} [{dtype:?}] x{k} {states} states {writes:?} {by_device}");
    let written = in_group0(&optim_group::written_bindings(k, states, writes));
    let pipeline = device.cached_pipeline(key, kernel, 1, written, || {
        optim_group::source(kernel, dtype, k, states, writes, by_device)
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
