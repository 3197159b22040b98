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

/// Mean cross-entropy of logits `[n, classes]` against i32 class ids `[n]`, with
/// optional label smoothing: one fused kernel each way, the path training takes. Every
/// target must be a class id: PyTorch's default of ignoring targets of -100, its class
/// weights, other reductions and `[n, classes, d1, ..]` logits are in
/// `cross_entropy_with`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    logits.cross_entropy_smoothed(targets, label_smoothing)
}

/// How a loss's per-element values become the result (PyTorch's `reduction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Each element's loss, in the targets' shape.
    None,
    /// The mean (for a weighted cross-entropy: divided by the summed weights).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// `cross_entropy_with`'s options, with PyTorch's names and defaults.
#[derive(Clone, Debug)]
pub struct CrossEntropyOptions {
    /// A weight per class `[classes]`, scaling each target's loss.
    pub weight: Option<Tensor>,
    /// Targets equal to this contribute nothing, to the sum or to the mean's count
    /// (PyTorch's default: -100, as padding is often marked).
    pub ignore_index: Option<i32>,
    /// How the elements' losses are combined.
    pub reduction: Reduction,
    /// Targets smoothed towards uniform: `(1 - s) * one_hot + s / classes`.
    pub label_smoothing: f64,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions {
            weight: None,
            ignore_index: Some(-100),
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
        }
    }
}

/// Cross-entropy as PyTorch's `F.cross_entropy`: logits `[n, classes]` or
/// `[n, classes, d1, ..]` (one distribution per position) against i32 class ids `[n]`
/// or `[n, d1, ..]`, with class weights, an ignored target value, label smoothing and
/// a reduction. With weights, each element's loss is
/// `(1 - s) w[y] (-log p_y) + (s / C) sum_c w[c] (-log p_c)` and the mean divides by
/// the summed `w[y]` of the targets not ignored (NaN when every target is, as in
/// PyTorch). Reads the targets back once to check them.
pub fn cross_entropy_with(
    logits: &Tensor,
    targets: &Tensor,
    options: &CrossEntropyOptions,
) -> Result<Tensor> {
    let op = "cross_entropy_with";
    let dims = logits.dims().to_vec();
    let spatial_match = dims.len() >= 2
        && targets.rank() == dims.len() - 1
        && targets.dims()[0] == dims[0]
        && targets.dims()[1..] == dims[2..];
    if !spatial_match {
        return Err(Error::ShapeMismatch {
            op,
            lhs: logits.shape().clone(),
            rhs: targets.shape().clone(),
        });
    }
    let classes = dims[1];
    let s = options.label_smoothing;
    if !(0.0..=1.0).contains(&s) {
        let reason = format!("label smoothing {s} is outside [0, 1]");
        return Err(Error::InvalidArgument { op, reason });
    }
    if let Some(w) = &options.weight {
        if w.dims() != [classes] {
            let reason = format!("{:?} weights for {classes} classes", w.dims());
            return Err(Error::InvalidArgument { op, reason });
        }
    }
    // Positions as rows: [n * d1 * .., classes].
    let rows = targets.elem_count();
    let flat = match dims.len() {
        2 => logits.clone(),
        r => {
            let mut perm: Vec<isize> = vec![0];
            perm.extend(2..r as isize);
            perm.push(1);
            logits.permute(&perm)?.reshape([rows, classes])?
        }
    };
    let ids = targets.reshape([rows])?;
    let host = ids.to_vec::<i32>()?;
    let ignored = |t: i32| options.ignore_index == Some(t);
    if let Some(&bad) = host
        .iter()
        .find(|&&t| !ignored(t) && (t < 0 || t as usize >= classes))
    {
        return Err(Error::IndexOutOfRange {
            op,
            index: bad as i64,
            size: classes,
        });
    }
    let device = logits.device();
    let kept: Vec<f32> = host.iter().map(|&t| (!ignored(t)) as u8 as f32).collect();
    let safe: Vec<i32> = host
        .iter()
        .map(|&t| if ignored(t) { 0 } else { t })
        .collect();
    let kept = Tensor::from_vec(kept, [rows], &device)?.to_dtype(logits.dtype())?;
    let safe = Tensor::from_vec(safe, [rows, 1], &device)?;
    let neg_log_p = flat.log_softmax(-1)?.neg()?;
    let nll = neg_log_p.gather(1, &safe)?.reshape([rows])?;
    let (target_weight, smooth) = match &options.weight {
        Some(w) => {
            let w = w.to_dtype(logits.dtype())?;
            (
                w.index_select(0, &safe.reshape([rows])?)?,
                neg_log_p.mul(&w)?.sum(&[1], false)?,
            )
        }
        None => (kept.ones_like()?, neg_log_p.sum(&[1], false)?),
    };
    let target_weight = target_weight.mul(&kept)?;
    let per_row = nll
        .mul(&target_weight)?
        .mul_scalar(1.0 - s)?
        .add(&smooth.mul(&kept)?.mul_scalar(s / classes as f64)?)?;
    match options.reduction {
        Reduction::None => per_row.reshape(targets.dims().to_vec()),
        Reduction::Sum => per_row.sum_all(),
        Reduction::Mean => per_row.sum_all()?.div(&target_weight.sum_all()?),
    }
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
