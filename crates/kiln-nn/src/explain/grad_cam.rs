//! Grad-CAM (Selvaraju et al., 2017): where in a convolutional layer's feature maps
//! the evidence for a class lies, from the maps weighted by their mean gradient.

use super::{check_batch, class_scores, Model};
use kiln::{DType, Error, Result, Tensor};

/// Grad-CAM for a model split at a convolutional layer: `features` maps the batch
/// `[N, C, H, W]` to activations `[N, K, h, w]`, `head` maps those to logits. Each
/// input's map is `relu(sum_k w_k A_k)`, `w_k` the spatial mean of d score / d `A_k`,
/// resized bilinearly to `H x W` (PyTorch's `interpolate` with `align_corners=False`):
/// `[N, H, W]`, on `x`'s device.
pub fn grad_cam(
    features: &Model<'_>,
    head: &Model<'_>,
    x: &Tensor,
    classes: &[usize],
) -> Result<Tensor> {
    let op = "grad_cam";
    check_batch(op, x, classes)?;
    if x.rank() != 4 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("inputs must be images [N, C, H, W], got {:?}", x.dims()),
        });
    }
    let maps = kiln::no_grad(|| features(&x.detach()))?;
    let empty_maps = maps.rank() == 4 && (maps.dims()[2] == 0 || maps.dims()[3] == 0);
    if maps.rank() != 4 || maps.dims()[0] != classes.len() || empty_maps {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "the features must be [N, K, h, w] with h, w > 0, got {:?}",
                maps.dims()
            ),
        });
    }
    let var = maps.into_var()?;
    let scores = class_scores(&head(&var)?, classes)?;
    let grads = scores.sum_all()?.backward()?;
    let maps = var.detach();
    let cam = match grads.get(&var) {
        Some(g) => {
            let weights = g.mean(&[2, 3], true)?;
            maps.mul(&weights)?.sum(&[1], false)?.relu()?
        }
        None => maps.sum(&[1], false)?.zeros_like()?,
    };
    let (n, h, w) = (cam.dims()[0], cam.dims()[1], cam.dims()[2]);
    let (out_h, out_w) = (x.dims()[2], x.dims()[3]);
    let values = cam.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let resized: Vec<f32> = values
        .chunks(h * w)
        .flat_map(|m| bilinear(m, (h, w), (out_h, out_w)))
        .collect();
    Tensor::from_vec(resized, [n, out_h, out_w], &x.device())?.to_dtype(x.dtype())
}

/// `map` (`from` rows and columns) resized to `to` by bilinear interpolation, pixel
/// centres aligned as PyTorch does without `align_corners`.
pub(crate) fn bilinear(map: &[f32], from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    let axis = |i: usize, n_in: usize, n_out: usize| -> (usize, usize, f32) {
        let src = ((i as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).max(0.0);
        let lo = (src.floor() as usize).min(n_in - 1);
        let hi = (lo + 1).min(n_in - 1);
        (lo, hi, src - lo as f32)
    };
    let mut out = Vec::with_capacity(to.0 * to.1);
    for y in 0..to.0 {
        let (y0, y1, fy) = axis(y, from.0, to.0);
        for x in 0..to.1 {
            let (x0, x1, fx) = axis(x, from.1, to.1);
            let at = |r: usize, c: usize| map[r * from.1 + c];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}
