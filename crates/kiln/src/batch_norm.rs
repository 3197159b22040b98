//! Batch normalisation with the batch's own statistics (training mode), as one
//! recorded op. The backend computes the statistics channel by channel where they lie
//! (one launch on a GPU, where the composed mean, deviations and variance took three),
//! and the backward rule's two channel sums the same way; the normalisation and the
//! input's gradient are elementwise, which a GPU fuses with their neighbours.

use crate::autograd::{no_grad, track, Input, Op};
use crate::Tensor;
use kiln_core::{Error, Result, Shape};

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
        // One value a channel normalises to 0 whatever it is, and trains nothing:
        // refused, as PyTorch refuses it.
        if self.elem_count() == c {
            return Err(Error::InvalidShape {
                op,
                shape: self.shape().clone(),
                reason: "expected more than one value per channel in training mode (a batch of \
                         one sample?)"
                    .into(),
            });
        }
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
        let shape = channel_shape(self);
        let [mean, var, rstd] = no_grad(|| self.batch_norm_stats(eps))?;
        let (mean, rstd) = (mean.reshape(shape.clone())?, rstd.reshape(shape.clone())?);
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
                y = y.mul(&w.reshape(shape.clone())?)?;
            }
            if let Some(b) = bias {
                y = y.add(&b.reshape(shape.clone())?)?;
            }
            Ok(y)
        })?;
        Ok(BatchStats {
            output,
            mean: mean.reshape([c])?,
            var,
        })
    }

    /// `[n, c, ..]` as the backend's channel kernels take it: compact
    /// `[n, c, inner]`.
    fn channel_dims(&self) -> [usize; 3] {
        let d = self.dims();
        [d[0], d[1], d[2..].iter().product()]
    }

    /// Each channel's mean, biased variance and `1 / sqrt(variance + eps)`, each `[c]`.
    fn batch_norm_stats(&self, eps: f64) -> Result<[Tensor; 3]> {
        let dims = self.channel_dims();
        let x = self.contiguous()?;
        let stats = x.storage().batch_norm_stats(dims, eps as f32)?;
        Ok(stats.map(|s| Tensor::from_storage(s, Shape::new([dims[1]]))))
    }

    /// `batch_norm`'s backward sums for this input, the output's gradient `grad` and
    /// the forward's `mean` and `rstd` (`[1, c, 1, ..]`): each channel's sum of `grad`
    /// and of `grad * x_hat`, `[1, c, 1, ..]`.
    pub(crate) fn batch_norm_backward_sums(
        &self,
        grad: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
    ) -> Result<[Tensor; 2]> {
        let dims = self.channel_dims();
        let [x, g, mean, rstd] = [self, grad, mean, rstd].map(Tensor::contiguous);
        let sums = x?.storage().batch_norm_backward_sums(
            &g?.storage(),
            &mean?.storage(),
            &rstd?.storage(),
            dims,
        )?;
        let shape = Shape::new(channel_shape(self));
        Ok(sums.map(|s| Tensor::from_storage(s, shape.clone())))
    }
}

/// `[1, c, 1, ..]`: a channel's value broadcast over `[n, c, ..]`.
fn channel_shape(x: &Tensor) -> Vec<usize> {
    let mut shape = vec![1; x.rank()];
    shape[1] = x.dims()[1];
    shape
}
