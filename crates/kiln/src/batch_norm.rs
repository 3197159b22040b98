//! Batch normalisation with the batch's own statistics (training mode), as one
//! recorded op. The backend computes the statistics channel by channel where they lie
//! (one launch on a GPU, where the composed mean, deviations and variance took three),
//! and the backward rule's two channel sums the same way; the normalisation and the
//! input's gradient are elementwise, which a GPU fuses with their neighbours. A layer's
//! running statistics move in the statistics' own launch (`batch_norm_running`).

use crate::autograd::{no_grad, track, Input, Op};
use crate::optim::moving_average;
use crate::Tensor;
use kiln_core::{Error, MovingAverageSpec, Result, RunningStatsUpdate, Shape};
use std::sync::Arc;

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

/// A batch norm layer's running statistics, each `[c]`, and how far a batch moves them
/// (PyTorch's `momentum`): `running = (1 - momentum) * running + momentum * batch`, the
/// batch's variance taken unbiased.
#[derive(Clone, Copy, Debug)]
pub struct RunningStats<'a> {
    /// The running mean, `[c]`.
    pub mean: &'a Tensor,
    /// The running (unbiased) variance, `[c]`.
    pub var: &'a Tensor,
    /// In [0, 1]: PyTorch's 0.1 moves each a tenth of the way to the batch's.
    pub momentum: f64,
}

impl Tensor {
    /// `batch_norm`, and `running` moved toward the batch's statistics, as PyTorch's
    /// training-mode batch norm does. On a GPU the averages are written over in the
    /// statistics' own kernel where nothing else holds them (no view, clone of their
    /// data or work still to run reads them); otherwise, and on the CPU, by
    /// `update_moving_averages`. Everything is checked before anything moves: the
    /// momentum in [0, 1], the statistics two compact `[c]` tensors of the input's
    /// dtype and device.
    pub fn batch_norm_running(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        running: RunningStats<'_>,
    ) -> Result<BatchStats> {
        self.batch_norm_with(weight, bias, eps, Some(running))
    }

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
        self.batch_norm_with(weight, bias, eps, None)
    }

    fn batch_norm_with(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        running: Option<RunningStats<'_>>,
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
            self.check_per_channel(op, p)?;
        }
        let running = match running {
            Some(r) => Some((r, self.check_running(&r)?)),
            None => None,
        };
        let shape = channel_shape(self);
        let [mean, var, rstd] = no_grad(|| self.batch_norm_stats(eps, running))?;
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

    /// An error unless `p` is one value per channel of this input: `[c]`, its device
    /// and dtype.
    fn check_per_channel(&self, op: &'static str, p: &Tensor) -> Result<()> {
        self.same_device(op, p)?;
        self.same_dtype(op, p)?;
        if p.dims() != [self.dims()[1]] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: p.shape().clone(),
            });
        }
        Ok(())
    }

    /// An error unless `r` can take this input's statistics, before anything runs;
    /// else the moving average its momentum makes.
    fn check_running(&self, r: &RunningStats<'_>) -> Result<MovingAverageSpec> {
        let op = "batch_norm";
        let average = moving_average(op, 1.0 - r.momentum).map_err(|_| Error::InvalidArgument {
            op,
            reason: format!("momentum must be in [0, 1], got {}", r.momentum),
        })?;
        if r.mean.id() == r.var.id() {
            let reason = "the running mean and variance are one tensor".into();
            return Err(Error::InvalidArgument { op, reason });
        }
        for t in [r.mean, r.var] {
            self.check_per_channel(op, t)?;
            if !t.layout().is_compact() {
                let reason = "running statistics must be compact tensors, not views".into();
                return Err(Error::InvalidArgument { op, reason });
            }
        }
        Ok(average)
    }

    /// Each channel's mean, biased variance and `1 / sqrt(variance + eps)`, each `[c]`;
    /// `running` (checked, with its moving average) moved toward the first two.
    fn batch_norm_stats(
        &self,
        eps: f64,
        running: Option<(RunningStats<'_>, MovingAverageSpec)>,
    ) -> Result<[Tensor; 3]> {
        let dims = self.channel_dims();
        let x = self.contiguous()?;
        let as_tensors =
            |stats: [_; 3]| stats.map(|s| Tensor::from_storage(s, Shape::new([dims[1]])));
        let Some((r, average)) = running else {
            return Ok(as_tensors(x.storage().batch_norm_stats(dims, eps as f32)?));
        };
        // The variance's average takes the unbiased variance.
        let n = (dims[0] * dims[2]) as f64;
        let var_scale = n / (n - 1.0).max(1.0);
        // Each statistic's storage, where it holds it whole and alone, written over in
        // the statistics' pass.
        let mut slots = [r.mean, r.var].map(|t| {
            let slot = t.try_write_storage()?;
            (slot.len() == t.elem_count()).then_some(slot)
        });
        let (stats, moved) = match &mut slots {
            [Some(mean), Some(var)] => match (Arc::get_mut(mean), Arc::get_mut(var)) {
                (Some(mean), Some(var)) => {
                    let update = RunningStatsUpdate {
                        mean,
                        var,
                        average,
                        var_scale: var_scale as f32,
                    };
                    x.storage()
                        .batch_norm_stats_running(dims, eps as f32, update)?
                }
                _ => (x.storage().batch_norm_stats(dims, eps as f32)?, false),
            },
            _ => (x.storage().batch_norm_stats(dims, eps as f32)?, false),
        };
        drop(slots);
        let stats = as_tensors(stats);
        if !moved {
            let updates = [(r.mean, &stats[0], 1.0), (r.var, &stats[1], var_scale)];
            Tensor::update_moving_averages(&updates, 1.0 - r.momentum)?;
        }
        Ok(stats)
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
