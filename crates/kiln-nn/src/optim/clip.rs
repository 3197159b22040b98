//! Gradient clipping by global norm.

use kiln::{Gradients, Result, Tensor};

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`;
/// returns the norm before clipping (as PyTorch's `clip_grad_norm_` does).
pub fn clip_grad_norm(grads: &mut Gradients, params: &[Tensor], max_norm: f64) -> Result<f64> {
    let mut total = 0.0;
    for p in params {
        if let Some(g) = grads.get(p) {
            total += g.square()?.sum_all()?.to_f64_vec()?[0];
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for p in params {
            if let Some(g) = grads.get(p) {
                let clipped = g.mul_scalar(scale)?;
                grads.insert(p, clipped);
            }
        }
    }
    Ok(norm)
}
