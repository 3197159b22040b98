//! Gradient clipping by global norm.

use kiln::{Gradients, Result, Tensor};

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`;
/// returns the norm before clipping (as PyTorch's `clip_grad_norm_` does). Each
/// gradient's sum of squares is computed where it lies, and those of neighbouring
/// parameters on one device and dtype are read back together: one sync point for a
/// model on one device in one dtype, not one a parameter. They are added on the host
/// in f64, in the order of `params`.
pub fn clip_grad_norm(grads: &mut Gradients, params: &[Tensor], max_norm: f64) -> Result<f64> {
    let with_grad: Vec<(&Tensor, &Tensor)> = params
        .iter()
        .filter_map(|p| Some((p, grads.get(p)?)))
        .collect();
    let mut total = 0.0;
    for same in
        with_grad.chunk_by(|a, b| a.1.device() == b.1.device() && a.1.dtype() == b.1.dtype())
    {
        let sums = same
            .iter()
            .map(|(_, g)| g.square()?.sum_all()?.reshape([1]))
            .collect::<Result<Vec<_>>>()?;
        total += Tensor::cat(&sums, 0)?.to_f64_vec()?.iter().sum::<f64>();
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        let clipped = with_grad
            .iter()
            .map(|(p, g)| Ok(((*p).clone(), g.mul_scalar(scale)?)))
            .collect::<Result<Vec<_>>>()?;
        for (p, g) in clipped {
            grads.insert(&p, g);
        }
    }
    Ok(norm)
}
