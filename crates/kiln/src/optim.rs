//! Fused optimizer updates: one kernel per parameter and step instead of a dozen
//! elementwise ops. Outside autograd: an update is never differentiated.

use crate::Tensor;
use kiln_core::{AdamSpec, Error, Result};

impl Tensor {
    /// One Adam (or AdamW) update of this parameter (`AdamSpec` gives the formula):
    /// returns the new parameter, first moment and second moment. The gradient and the
    /// moments must have the parameter's shape, dtype and device.
    pub fn adam_update(
        &self,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        spec: &AdamSpec,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "adam_update";
        self.require_float(op)?;
        for other in [grad, m, v] {
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
        let [p, g, m, v] = [self, grad, m, v].map(Tensor::contiguous);
        let (p, g, m, v) = (p?, g?, m?, v?);
        let (p, m, v) = p
            .storage()
            .adam_update(&g.storage(), &m.storage(), &v.storage(), spec)?;
        let shape = self.shape().clone();
        Ok((
            Tensor::from_storage(p, shape.clone()),
            Tensor::from_storage(m, shape.clone()),
            Tensor::from_storage(v, shape),
        ))
    }
}
