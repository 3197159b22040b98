//! Fused optimizer steps: one kernel per parameter and step instead of several
//! elementwise ops, or on a GPU one launch for several parameters. Outside autograd:
//! an update is never differentiated.

use crate::storage::Storage;
use crate::Tensor;
use kiln_core::{Error, OptimizerStep, ParamUpdate, Result};
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
            .map(|(p, g, states)| ParamUpdate {
                param: &**p,
                grad: &**g,
                states: states.iter().map(|s| &**s).collect(),
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
}

/// An error unless `u`'s gradient and states match its parameter, and there are as
/// many states as `step` takes.
fn check(u: &ParamUpdate<'_, Tensor>, step: &OptimizerStep) -> Result<()> {
    let op = "optimizer_update";
    let param = u.param;
    param.require_float(op)?;
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
