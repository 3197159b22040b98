//! Fused optimizer steps: one kernel per parameter and step instead of several
//! elementwise ops, or on a GPU one launch for several parameters, written over the
//! parameters and states where nothing else holds them. Outside autograd: an update is
//! never differentiated.

use crate::storage::Storage;
use crate::Tensor;
use kiln_core::{Error, MovingAverageSpec, OptimizerStep, ParamUpdate, ParamUpdateInPlace, Result};
use std::collections::HashSet;
use std::sync::Arc;

impl Tensor {
    /// One optimizer step of this parameter (`OptimizerStep` gives the formulas): returns
    /// the new parameter and the new state tensors, in `step`'s order (Adam: the first
    /// and second moments). The gradient and the `step.states()` states must have the
    /// parameter's shape, dtype and device.
    pub fn optimizer_update(
        &self,
        grad: &Tensor,
        states: &[&Tensor],
        step: &OptimizerStep,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let update = ParamUpdate {
            param: self,
            grad,
            states: states.to_vec(),
            grad_scale: 1.0,
        };
        let mut out = Tensor::optimizer_update_all(&[update], step)?;
        Ok(out.pop().expect("one result per update"))
    }

    /// `optimizer_update` of every parameter in `updates` (all on one device), each
    /// checked before any runs. On a GPU the parameters share launches, as many to one
    /// as the adapter's storage bindings allow, where a step of one launch per
    /// parameter would be launch-bound.
    pub fn optimizer_update_all(
        updates: &[ParamUpdate<'_, Tensor>],
        step: &OptimizerStep,
    ) -> Result<Vec<(Tensor, Vec<Tensor>)>> {
        for u in updates {
            check(u, step)?;
            u.param.same_device("optimizer_update", updates[0].param)?;
        }
        // Compact storages of exactly the parameter's elements, held while borrowed.
        let held = updates
            .iter()
            .map(|u| {
                let states = u.states.iter().map(|s| exact(s)).collect::<Result<_>>()?;
                Ok((exact(u.param)?, exact(u.grad)?, states))
            })
            .collect::<Result<Vec<(Arc<Storage>, Arc<Storage>, Vec<Arc<Storage>>)>>>()?;
        let storages: Vec<ParamUpdate<'_, Storage>> = held
            .iter()
            .zip(updates)
            .map(|((p, g, states), u)| ParamUpdate {
                param: &**p,
                grad: &**g,
                states: states.iter().map(|s| &**s).collect(),
                grad_scale: u.grad_scale,
            })
            .collect();
        let outs = Storage::optimizer_update_all(&storages, step)?;
        let tensors = updates.iter().zip(outs).map(|(u, (p, states))| {
            let shape = u.param.shape();
            let states = states
                .into_iter()
                .map(|s| Tensor::from_storage(s, shape.clone()))
                .collect();
            (Tensor::from_storage(p, shape.clone()), states)
        });
        Ok(tensors.collect())
    }

    /// One optimizer step of each update's parameter, its states stepped with it, in
    /// place: each parameter and state tensor holds its new values after, as
    /// `set_data` would put them (whoever else holds these tensors sees them too).
    /// The values are written over the old where nothing else holds them: no view or
    /// detached tensor shares the data, no work still to run reads it (a GPU first runs
    /// the elementwise work that does, which reads the old values). A step then
    /// takes no memory beyond the tensors' own, where new storage for every parameter
    /// and state would double what they hold. Elsewhere they go into new storage.
    /// Returns, for each update, whether it was written over. Parameters and states
    /// must be compact (not views), each at most once; the rest is as for
    /// `optimizer_update_all`.
    pub fn optimizer_update_in_place(
        updates: &[ParamUpdate<'_, Tensor>],
        step: &OptimizerStep,
    ) -> Result<Vec<bool>> {
        let op = "optimizer_update_in_place";
        let mut seen = HashSet::new();
        for u in updates {
            check(u, step)?;
            u.param.same_device(op, updates[0].param)?;
            for t in std::iter::once(u.param).chain(u.states.iter().copied()) {
                if !t.layout().is_compact() {
                    let reason = "parameters and states must be compact tensors, not views";
                    let reason = reason.into();
                    return Err(Error::InvalidArgument { op, reason });
                }
                if !seen.insert(t.id()) {
                    let reason = "a tensor is given twice as a parameter or state".into();
                    return Err(Error::InvalidArgument { op, reason });
                }
            }
        }
        let grads = updates
            .iter()
            .map(|u| exact(u.grad))
            .collect::<Result<Vec<_>>>()?;
        // Each update's parameter and states locked, where each holds its storage whole
        // and alone: that update may be written over.
        let mut locked: Vec<_> = updates
            .iter()
            .map(|u| {
                let targets = std::iter::once(u.param).chain(u.states.iter().copied());
                targets
                    .map(|t| {
                        let mut slot = t.try_write_storage()?;
                        let whole = slot.len() == t.elem_count();
                        (whole && Arc::get_mut(&mut slot).is_some()).then_some(slot)
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .collect();
        let mut in_place = vec![false; updates.len()];
        let mut which = Vec::new();
        let mut storages = Vec::new();
        for (i, (slots, grad)) in locked.iter_mut().zip(&grads).enumerate() {
            let Some(slots) = slots else { continue };
            let mut targets = slots
                .iter_mut()
                .map(|slot| Arc::get_mut(slot).expect("held alone, under its lock"));
            let param = targets.next().expect("the parameter first");
            which.push(i);
            storages.push(ParamUpdateInPlace {
                param,
                grad: &**grad,
                states: targets.collect(),
                grad_scale: updates[i].grad_scale,
            });
        }
        let written = Storage::optimizer_update_in_place(&mut storages, step)?;
        for (&i, done) in which.iter().zip(written) {
            in_place[i] = done;
        }
        drop(storages);
        drop(locked);
        // The rest into new storage, which each tensor then holds.
        let rest: Vec<_> = updates
            .iter()
            .zip(&in_place)
            .filter(|(_, done)| !**done)
            .map(|(u, _)| ParamUpdate {
                param: u.param,
                grad: u.grad,
                states: u.states.clone(),
                grad_scale: u.grad_scale,
            })
            .collect();
        let outs = Tensor::optimizer_update_all(&rest, step)?;
        for (u, (param, states)) in rest.iter().zip(outs) {
            u.param.set_data(&param)?;
            for (s, new) in u.states.iter().zip(states) {
                s.set_data(&new)?;
            }
        }
        Ok(in_place)
    }

    /// Exponential moving averages, each `(average, value, scale)` updated in place to
    /// `decay * average + (1 - decay) * scale * value` (batch norm's running statistics,
    /// an average of a model's weights), all on one device. Each average takes the new
    /// values as `set_data` would (written over where nothing else holds it, as in
    /// `optimizer_update_in_place`); on a GPU the averages share launches, and no
    /// scaled copy of a value is made. `decay` must lie in [0, 1] and each scale be
    /// finite.
    pub fn update_moving_averages(updates: &[(&Tensor, &Tensor, f64)], decay: f64) -> Result<()> {
        let step = OptimizerStep::MovingAverage(moving_average("update_moving_averages", decay)?);
        let updates: Vec<_> = updates
            .iter()
            .map(|&(average, value, scale)| ParamUpdate {
                param: average,
                grad: value,
                states: Vec::new(),
                grad_scale: scale as f32,
            })
            .collect();
        Tensor::optimizer_update_in_place(&updates, &step).map(drop)
    }
}

/// The moving average of `decay` (in [0, 1], else an error for `op`): each of its
/// factors from the f64 decay.
pub(crate) fn moving_average(op: &'static str, decay: f64) -> Result<MovingAverageSpec> {
    if !(0.0..=1.0).contains(&decay) {
        let reason = format!("decay must be in [0, 1], got {decay}");
        return Err(Error::InvalidArgument { op, reason });
    }
    Ok(MovingAverageSpec {
        decay: decay as f32,
        one_minus_decay: (1.0 - decay) as f32,
    })
}

/// An error unless `u`'s gradient and states match its parameter, and there are as
/// many states as `step` takes.
fn check(u: &ParamUpdate<'_, Tensor>, step: &OptimizerStep) -> Result<()> {
    let op = "optimizer_update";
    let param = u.param;
    param.require_float(op)?;
    if !u.grad_scale.is_finite() {
        let reason = format!("the gradient's scale must be finite, got {}", u.grad_scale);
        return Err(Error::InvalidArgument { op, reason });
    }
    if u.states.len() != step.states() {
        let reason = format!(
            "{} takes {} state tensors, got {}",
            step.name(),
            step.states(),
            u.states.len()
        );
        return Err(Error::InvalidArgument { op, reason });
    }
    for other in std::iter::once(u.grad).chain(u.states.iter().copied()) {
        param.same_device(op, other)?;
        if other.dims() != param.dims() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: param.shape().clone(),
                rhs: other.shape().clone(),
            });
        }
        param.same_dtype(op, other)?;
    }
    Ok(())
}

/// `t`'s elements compact in a storage of exactly them: the fused update runs over
/// whole storages, and a compact view of a longer one (a prefix `narrow`) would have
/// it read past the other operands.
fn exact(t: &Tensor) -> Result<Arc<Storage>> {
    let t = t.contiguous()?;
    if t.storage().len() == t.elem_count() {
        return Ok(t.storage());
    }
    Ok(Arc::new(t.storage().compact(t.layout())?))
}
