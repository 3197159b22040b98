//! The fused LSTM and GRU time steps: one kernel forward and one backward per step,
//! where the gates took ten or more elementwise kernels each way.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{Error, GruCellSpec, LstmCellSpec, Result};

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
            z: self.into(),
            c: c.into(),
        };
        track(record, || {
            let (z, c) = (self.contiguous()?, c.contiguous()?);
            let storage = z.storage().lstm_cell(&c.storage(), &spec)?;
            Ok(Tensor::from_storage(storage, [spec.batch, 2 * spec.hidden]))
        })
    }

    /// The gradients of `lstm_cell`'s inputs `z` (self) and `c`, given those of its
    /// output's `h` and `c'`.
    pub(crate) fn lstm_cell_backward(
        &self,
        c: &Tensor,
        dh: &Tensor,
        dc: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let spec = LstmCellSpec {
            batch: c.dims()[0],
            hidden: c.dims()[1],
        };
        let [z, c, dh, dc] = [self, c, dh, dc].map(Tensor::contiguous);
        let (z, c, dh, dc) = (z?, c?, dh?, dc?);
        let (dz, dc) =
            z.storage()
                .lstm_cell_backward(&c.storage(), &dh.storage(), &dc.storage(), &spec)?;
        Ok((
            Tensor::from_storage(dz, z.shape().clone()),
            Tensor::from_storage(dc, c.shape().clone()),
        ))
    }

    /// One GRU step from the input projection `self = [r | z | n]` and the hidden
    /// projection `hp` (both `[batch, 3 * hidden]`, biases included, PyTorch's gate
    /// order) and the hidden state `h` (`[batch, hidden]`): returns
    /// `h' = (1 - z) * n + z * h` with `r = sigmoid(x_r + hp_r)`,
    /// `z = sigmoid(x_z + hp_z)` and `n = tanh(x_n + r * hp_n)`. Differentiable in all
    /// three inputs.
    pub fn gru_cell(&self, hp: &Tensor, h: &Tensor) -> Result<Tensor> {
        let op = "gru_cell";
        self.require_float(op)?;
        let spec = match (self.dims(), h.dims()) {
            (&[batch, gates], &[rows, hidden]) if rows == batch && gates == 3 * hidden => {
                GruCellSpec { batch, hidden }
            }
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: h.shape().clone(),
                })
            }
        };
        for other in [hp, h] {
            self.same_device(op, other)?;
            if other.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch {
                    op,
                    lhs: self.dtype(),
                    rhs: other.dtype(),
                });
            }
        }
        if hp.dims() != self.dims() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: hp.shape().clone(),
            });
        }
        let record = Op::GruCell {
            x: self.into(),
            hp: hp.into(),
            h: h.into(),
        };
        track(record, || {
            let (x, hp, h) = (self.contiguous()?, hp.contiguous()?, h.contiguous()?);
            let storage = x.storage().gru_cell(&hp.storage(), &h.storage(), &spec)?;
            Ok(Tensor::from_storage(storage, [spec.batch, spec.hidden]))
        })
    }

    /// The gradients of `gru_cell`'s inputs `x` (self), `hp` and `h`, given the gradient
    /// of its output.
    pub(crate) fn gru_cell_backward(
        &self,
        hp: &Tensor,
        h: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let spec = GruCellSpec {
            batch: h.dims()[0],
            hidden: h.dims()[1],
        };
        let [x, hp, h, g] = [self, hp, h, grad].map(Tensor::contiguous);
        let (x, hp, h, g) = (x?, hp?, h?, g?);
        let (dx, dhp, dh) =
            x.storage()
                .gru_cell_backward(&hp.storage(), &h.storage(), &g.storage(), &spec)?;
        Ok((
            Tensor::from_storage(dx, x.shape().clone()),
            Tensor::from_storage(dhp, hp.shape().clone()),
            Tensor::from_storage(dh, h.shape().clone()),
        ))
    }
}
