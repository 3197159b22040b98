//! The fused LSTM time step: one kernel forward and one backward per step, where the
//! gates took ten elementwise kernels each way.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{Error, LstmCellSpec, Result};

impl Tensor {
    /// One LSTM step from the gate pre-activations `self = [i | f | g | o]`
    /// (`[batch, 4 * hidden]`, PyTorch's gate order) and the cell state `c`
    /// (`[batch, hidden]`): returns `[h | c']` (`[batch, 2 * hidden]`) with
    /// `c' = sigmoid(f) * c + sigmoid(i) * tanh(g)` and `h = sigmoid(o) * tanh(c')`.
    /// Differentiable in both inputs.
    pub fn lstm_cell(&self, c: &Tensor) -> Result<Tensor> {
        let op = "lstm_cell";
        self.require_float(op)?;
        self.same_device(op, c)?;
        let spec = match (self.dims(), c.dims()) {
            (&[batch, gates], &[rows, hidden]) if rows == batch && gates == 4 * hidden => {
                LstmCellSpec { batch, hidden }
            }
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: c.shape().clone(),
                })
            }
        };
        if c.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: c.dtype(),
            });
        }
        let record = Op::LstmCell {
            z: self.clone(),
            c: c.clone(),
        };
        track(record, || {
            let (z, c) = (self.contiguous()?, c.contiguous()?);
            let storage = z.storage().lstm_cell(&c.storage(), &spec)?;
            Ok(Tensor::from_storage(storage, [spec.batch, 2 * spec.hidden]))
        })
    }

    /// The gradients of `lstm_cell`'s inputs `z` (self) and `c`, given the gradient of
    /// its output.
    pub(crate) fn lstm_cell_backward(&self, c: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let spec = LstmCellSpec {
            batch: c.dims()[0],
            hidden: c.dims()[1],
        };
        let (z, c, g) = (self.contiguous()?, c.contiguous()?, grad.contiguous()?);
        let (dz, dc) = z
            .storage()
            .lstm_cell_backward(&c.storage(), &g.storage(), &spec)?;
        Ok((
            Tensor::from_storage(dz, z.shape().clone()),
            Tensor::from_storage(dc, c.shape().clone()),
        ))
    }
}
