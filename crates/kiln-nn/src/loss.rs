//! Loss functions with PyTorch's names and their default mean reduction.

use kiln::{Error, Result, Tensor};

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.shape().clone(),
            rhs: b.shape().clone(),
        });
    }
    Ok(())
}

/// Mean squared error.
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    same_shape("mse_loss", pred, target)?;
    pred.sub(target)?.square()?.mean_all()
}

/// Mean absolute error.
pub fn l1_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    same_shape("l1_loss", pred, target)?;
    pred.sub(target)?.abs()?.mean_all()
}

/// Quadratic within `delta` of the target, linear beyond (PyTorch's HuberLoss).
pub fn huber_loss(pred: &Tensor, target: &Tensor, delta: f64) -> Result<Tensor> {
    same_shape("huber_loss", pred, target)?;
    let err = pred.sub(target)?.abs()?;
    let quadratic = err.square()?.mul_scalar(0.5)?;
    let linear = err.sub_scalar(0.5 * delta)?.mul_scalar(delta)?;
    err.lt_scalar(delta)?
        .where_cond(&quadratic, &linear)?
        .mean_all()
}

/// Cross-entropy of logits `[n, classes]` against i32 class ids `[n]`, with optional
/// label smoothing (fused log-softmax and NLL, one backward kernel).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    logits.cross_entropy_smoothed(targets, label_smoothing)
}

/// Negative log-likelihood of log-probabilities `[n, classes]` at i32 class ids `[n]`.
pub fn nll_loss(log_probs: &Tensor, targets: &Tensor) -> Result<Tensor> {
    log_probs
        .gather(1, &targets.unsqueeze(1)?)?
        .mean_all()?
        .neg()
}

/// Binary cross-entropy of probabilities in (0, 1); logs are clamped at -100 as in PyTorch.
pub fn binary_cross_entropy(probs: &Tensor, target: &Tensor) -> Result<Tensor> {
    same_shape("binary_cross_entropy", probs, target)?;
    let log_p = probs.log()?.maximum_scalar(-100.0)?;
    let log_q = probs
        .neg()?
        .add_scalar(1.0)?
        .log()?
        .maximum_scalar(-100.0)?;
    target
        .mul(&log_p)?
        .add(&target.neg()?.add_scalar(1.0)?.mul(&log_q)?)?
        .mean_all()?
        .neg()
}

/// Binary cross-entropy on logits, computed stably: `max(x, 0) - x y + log(1 + exp(-|x|))`.
pub fn binary_cross_entropy_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    same_shape("binary_cross_entropy_with_logits", logits, target)?;
    let softplus = logits.abs()?.neg()?.exp()?.add_scalar(1.0)?.log()?;
    logits
        .relu()?
        .sub(&logits.mul(target)?)?
        .add(&softplus)?
        .mean_all()
}
