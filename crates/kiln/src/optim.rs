//! Fused optimizer steps: one kernel per parameter and step instead of several
//! elementwise ops. Outside autograd: an update is never differentiated.

use crate::Tensor;
use kiln_core::{Error, OptimizerStep, Result};

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
        let op = "optimizer_update";
        self.require_float(op)?;
        if states.len() != step.states() {
            let reason = format!(
                "{} takes {} state tensors, got {}",
                step.name(),
                step.states(),
                states.len()
            );
            return Err(Error::InvalidArgument { op, reason });
        }
        for other in std::iter::once(grad).chain(states.iter().copied()) {
            self.same_device(op, other)?;
            if other.dims() != self.dims() {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: other.shape().clone(),
                });
            }
            if other.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch {
                    op,
                    lhs: self.dtype(),
                    rhs: other.dtype(),
                });
            }
        }
        let (p, g) = (exact(self)?, exact(grad)?);
        let states = states
            .iter()
            .map(|s| exact(s))
            .collect::<Result<Vec<_>>>()?;
        let storages: Vec<_> = states.iter().map(|s| s.storage()).collect();
        let refs: Vec<&_> = storages.iter().map(|s| &**s).collect();
        let (p, states) = p.storage().optimizer_update(&g.storage(), &refs, step)?;
        let shape = self.shape();
        let states = states
            .into_iter()
            .map(|s| Tensor::from_storage(s, shape.clone()))
            .collect();
        Ok((Tensor::from_storage(p, shape.clone()), states))
    }
}

/// `t` compact in a storage of exactly its elements: the fused update runs over whole
/// storages, and a compact view of a longer one (a prefix `narrow`) would have it read
/// past the other operands.
fn exact(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    if t.storage().len() == t.elem_count() {
        return Ok(t);
    }
    let storage = t.storage().compact(t.layout())?;
    Ok(Tensor::from_storage(storage, t.shape().clone()))
}
