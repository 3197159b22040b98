//! Attribution: which parts of an input drove a model's score for a class. Every method
//! takes the model as a function from a batch to logits `[N, classes]` (a kiln-nn
//! module's `forward`, in evaluation mode) and explains, for each input of the batch,
//! the logit of its own class; each runs on the input's device, with the samples a
//! method needs (SmoothGrad's noisy copies, Integrated Gradients' steps, occluded
//! copies) run as one batch.
//!
//! - `gradient`, `gradient_x_input`, `smoothgrad`, `integrated_gradients`
//!   (`gradient.rs`, `integrated.rs`);
//! - `grad_cam`, for a convolutional model split into features and head (`grad_cam.rs`);
//! - `occlusion` and `feature_ablation` (`perturb.rs`);
//! - the sanity checks that say whether a map means anything: rank correlation for
//!   model randomisation, deletion curves (`sanity.rs`);
//! - pictures: each input with its attribution overlaid (`picture.rs`); a text shaded
//!   by its characters' attributions (`text.rs`); a tabular model's features by mean
//!   |attribution| (`bars.rs`).

mod bars;
mod grad_cam;
mod gradient;
mod integrated;
mod perturb;
mod picture;
mod sanity;
mod text;

pub use bars::{feature_importance, save_feature_bars};
pub use grad_cam::grad_cam;
pub use gradient::{gradient, gradient_x_input, smoothgrad, SmoothGrad};
pub use integrated::{integrated_gradients, IntegratedGradients};
pub use perturb::{feature_ablation, occlusion, Occlusion};
pub use picture::{save_overlays, Overlay};
pub use sanity::{by_attribution, deletion_curve, mean_area, random_order, spearman};
pub use text::{save_text_attribution_png, text_attribution_html, text_attribution_plain};

use kiln::{DType, Error, Result, Tensor};

/// A model as the methods see it: a batch in, logits `[N, classes]` out.
pub type Model<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// The logit of `classes[i]` for each row `i` of `logits` `[N, C]`: `[N]`.
pub(crate) fn class_scores(logits: &Tensor, classes: &[usize]) -> Result<Tensor> {
    let op = "explain";
    let dims = logits.dims();
    if dims.len() != 2 || dims[0] != classes.len() {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "the model gave logits of shape {dims:?} for {} inputs; it must give [N, classes]",
                classes.len()
            ),
        });
    }
    if let Some(&c) = classes.iter().find(|&&c| c >= dims[1]) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("class {c} for a model of {} classes", dims[1]),
        });
    }
    let mut mask = vec![0.0f32; dims[0] * dims[1]];
    for (i, &c) in classes.iter().enumerate() {
        mask[i * dims[1] + c] = 1.0;
    }
    let mask = Tensor::from_vec(mask, dims.to_vec(), &logits.device())?.to_dtype(logits.dtype())?;
    logits.mul(&mask)?.sum(&[1], false)
}

/// `x` (a batch `[N, ..]`) repeated `times` times along the batch: `[times * N, ..]`.
pub(crate) fn repeat_batch(x: &Tensor, times: usize) -> Result<Tensor> {
    Tensor::cat(&vec![x.clone(); times], 0)
}

/// The gradient of the summed class scores with respect to the batch `x`: each row's
/// gradient is its own score's, since the rows are independent.
pub(crate) fn score_gradient(model: &Model<'_>, x: &Tensor, classes: &[usize]) -> Result<Tensor> {
    let x = x.detach().into_var()?;
    let scores = class_scores(&model(&x)?, classes)?;
    let grads = scores.sum_all()?.backward()?;
    match grads.get(&x) {
        Some(g) => Ok(g.clone()),
        // The scores do not depend on the input at all: every attribution is zero.
        None => x.detach().zeros_like(),
    }
}

/// An error unless `x` is a float batch with one class per input.
pub(crate) fn check_batch(op: &'static str, x: &Tensor, classes: &[usize]) -> Result<()> {
    if x.rank() == 0 || x.dims()[0] != classes.len() {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "{} classes for a batch of shape {:?}: one class per input",
                classes.len(),
                x.dims()
            ),
        });
    }
    match x.dtype() {
        DType::F32 | DType::F16 | DType::F64 => Ok(()),
        d => Err(Error::InvalidArgument {
            op,
            reason: format!("inputs must be floating point, not {d:?}"),
        }),
    }
}
