//! Fused losses. `cross_entropy` computes log-softmax and the negative log-likelihood
//! of the target class in one kernel, and its gradient in one more.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{Error, Result};

impl Tensor {
    /// Mean cross-entropy of logits `[n, classes]` against i32 class ids `[n]`.
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Tensor> {
        self.cross_entropy_per_row(targets, 0.0)?.mean_all()
    }

    /// Mean cross-entropy against targets smoothed towards uniform:
    /// `(1 - smoothing) * one_hot + smoothing / classes` (PyTorch's `label_smoothing`).
    pub fn cross_entropy_smoothed(&self, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
        self.cross_entropy_per_row(targets, smoothing)?.mean_all()
    }

    /// The loss of each row, `[n]`, before any reduction.
    pub fn cross_entropy_per_row(&self, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
        let op = "cross_entropy";
        self.require_float(op)?;
        self.same_device(op, targets)?;
        self.require_rank(op, 2)?;
        let (rows, classes) = (self.dims()[0], self.dims()[1]);
        if targets.dims() != [rows] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: targets.shape().clone(),
            });
        }
        if !(0.0..=1.0).contains(&smoothing) {
            let reason = format!("label smoothing {smoothing} is outside [0, 1]");
            return Err(Error::InvalidArgument { op, reason });
        }
        targets.check_indices(op, classes)?;
        let smoothing = smoothing as f32;
        let record = Op::CrossEntropy {
            logits: self.into(),
            targets: targets.clone(),
            smoothing,
        };
        track(record, || {
            let (x, t) = (self.contiguous()?, targets.contiguous()?);
            let storage = x
                .storage()
                .cross_entropy(&t.storage(), rows, classes, smoothing)?;
            Ok(Tensor::from_storage(storage, [rows]))
        })
    }

    /// The logits' gradient given each row's loss gradient `dloss [n]`: one fused pass.
    pub(crate) fn cross_entropy_backward(
        &self,
        targets: &Tensor,
        dloss: &Tensor,
        smoothing: f32,
    ) -> Result<Tensor> {
        let (rows, classes) = (self.dims()[0], self.dims()[1]);
        let (x, t, d) = (
            self.contiguous()?,
            targets.contiguous()?,
            dloss.contiguous()?,
        );
        let storage = x.storage().cross_entropy_backward(
            &t.storage(),
            &d.storage(),
            rows,
            classes,
            smoothing,
        )?;
        Ok(Tensor::from_storage(storage, [rows, classes]))
    }
}
