//! Gradient clipping by global norm.

use kiln::{DType, Device, Error, Gradients, Result, Tensor};

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`,
/// as PyTorch's `clip_grad_norm_` does: each is multiplied by
/// `min(1, max_norm / (norm + 1e-6))`. Returns the norm before clipping, a scalar f32
/// tensor on the first gradient's device (on the CPU if no parameter has a gradient).
///
/// Nothing is read back: the gradients on each device are put end to end and their
/// squares summed there in one reduction (in f32), the coefficient is computed on the
/// device, and an optimizer step on a GPU (with fusion on, the default) reads each
/// clipped gradient as its unclipped one times that coefficient. Clipping adds no sync
/// point to a training step and writes no clipped copies; reading the returned norm
/// (`item`) waits for it. A NaN norm makes every gradient NaN, and an infinite one zero
/// where finite, as in PyTorch: check the norm to skip such a step.
pub fn clip_grad_norm(grads: &mut Gradients, params: &[Tensor], max_norm: f64) -> Result<Tensor> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::InvalidArgument {
            op: "clip_grad_norm",
            reason: format!("max_norm must be at least 0, not {max_norm}"),
        });
    }
    let with_grad: Vec<(&Tensor, Tensor)> = params
        .iter()
        .filter_map(|p| Some((p, grads.get(p)?.clone())))
        .collect();
    let Some((_, first)) = with_grad.first() else {
        return Tensor::zeros([], DType::F32, &Device::cpu());
    };
    let home = first.device();
    // Neighbouring gradients on one device in one dtype are put end to end, so that one
    // reduction (not one a gradient) sums their squares.
    let runs: Vec<&[(&Tensor, Tensor)]> = with_grad
        .chunk_by(|a, b| a.1.device() == b.1.device() && a.1.dtype() == b.1.dtype())
        .collect();
    let mut total: Option<Tensor> = None;
    for run in &runs {
        let flat = run
            .iter()
            .map(|(_, g)| g.to_dtype(DType::F32)?.reshape([g.elem_count()]))
            .collect::<Result<Vec<_>>>()?;
        let part = Tensor::cat(&flat, 0)?
            .square()?
            .sum_all()?
            .to_device(&home)?;
        total = Some(match total {
            None => part,
            Some(t) => t.add(&part)?,
        });
    }
    let norm = total.expect("at least one gradient").sqrt()?;
    let coefficient = norm
        .full_like(max_norm)?
        .div(&norm.add_scalar(1e-6)?)?
        .minimum_scalar(1.0)?;
    for run in &runs {
        let g = &run[0].1;
        let scale = coefficient.to_device(&g.device())?.to_dtype(g.dtype())?;
        for (p, g) in run.iter() {
            grads.insert(p, g.mul(&scale)?);
        }
    }
    Ok(norm)
}
