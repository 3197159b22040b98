//! Batch normalisation with the batch's own statistics (training mode), as one
//! recorded op: its backward rule is two channel sums and one elementwise kernel,
//! where autograd through the mean, the variance and the broadcasts took nine
//! launches a layer on a GPU.

use crate::autograd::{no_grad, track, Input, Op};
use crate::Tensor;
use kiln_core::{Error, Result};

/// `batch_norm`'s output, and the statistics it normalised with.
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// The normalised input, scaled and shifted.
    pub output: Tensor,
    /// Each channel's mean over the batch, `[c]`.
    pub mean: Tensor,
    /// Each channel's biased variance over the batch (divided by the element count),
    /// `[c]`; a layer's running variance takes the unbiased one.
    pub var: Tensor,
}

impl Tensor {
    /// PyTorch's `batch_norm` in training mode for `[n, c, ..]`: each channel
    /// normalised with its mean and biased variance over every other dim, then scaled by
    /// `weight` and shifted by `bias` (both `[c]`, 1 and 0 when `None`). The statistics
    /// come back too (constants: no gradient flows through them), for running averages.
    pub fn batch_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<BatchStats> {
        let op = "batch_norm";
        self.require_float(op)?;
        if self.rank() < 2 || self.elem_count() == 0 {
            return Err(Error::InvalidShape {
                op,
                shape: self.shape().clone(),
                reason: "expected [n, c, ..] with at least one element".into(),
            });
        }
        let c = self.dims()[1];
        for p in [weight, bias].into_iter().flatten() {
            self.same_device(op, p)?;
            self.same_dtype(op, p)?;
            if p.dims() != [c] {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: p.shape().clone(),
                });
            }
        }
        let mut channel = vec![1; self.rank()];
        channel[1] = c;
        let (mean, var, rstd) = no_grad(|| -> Result<_> {
            let dims = statistics_dims(self);
            let mean = self.mean(&dims, true)?;
            let var = self.sub(&mean)?.square()?.mean(&dims, true)?;
            let rstd = var.add_scalar(eps)?.rsqrt()?;
            Ok((mean, var, rstd))
        })?;
        let record = Op::BatchNorm {
            x: self.into(),
            weight: weight.map(Input::from),
            bias: bias.map(Input::from),
            mean: mean.clone(),
            rstd: rstd.clone(),
        };
        let output = track(record, || {
            let mut y = self.sub(&mean)?.mul(&rstd)?;
            if let Some(w) = weight {
                y = y.mul(&w.reshape(channel.clone())?)?;
            }
            if let Some(b) = bias {
                y = y.add(&b.reshape(channel.clone())?)?;
            }
            Ok(y)
        })?;
        Ok(BatchStats {
            output,
            mean: mean.reshape([c])?,
            var: var.reshape([c])?,
        })
    }
}

/// The dims a channel's statistics run over: all but dim 1.
pub(crate) fn statistics_dims(x: &Tensor) -> Vec<isize> {
    (0..x.rank() as isize).filter(|&d| d != 1).collect()
}
