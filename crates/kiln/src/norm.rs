//! Normalisation: layer_norm as one fused kernel per row.

use crate::autograd::{track, Input, Op};
use crate::Tensor;
use kiln_core::{Error, Result};

impl Tensor {
    /// Normalises over the trailing dims `normalized_shape` (biased variance, as in
    /// PyTorch), then applies the optional elementwise `weight` and `bias`.
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "layer_norm";
        self.require_float(op)?;
        let r = normalized_shape.len();
        if r == 0 || r > self.rank() || self.dims()[self.rank() - r..] != *normalized_shape {
            return Err(Error::InvalidShape {
                op,
                shape: self.shape().clone(),
                reason: format!("does not end in normalized_shape {normalized_shape:?}"),
            });
        }
        let k: usize = normalized_shape.iter().product();
        let rows = self.elem_count().checked_div(k).unwrap_or(0);
        let param = |p: Option<&Tensor>, fill: f64| -> Result<Tensor> {
            match p {
                Some(t) => {
                    self.same_device(op, t)?;
                    self.same_dtype(op, t)?;
                    if t.dims() != normalized_shape {
                        return Err(Error::ShapeMismatch {
                            op,
                            lhs: self.shape().clone(),
                            rhs: t.shape().clone(),
                        });
                    }
                    t.contiguous()
                }
                None => Tensor::full(
                    normalized_shape.to_vec(),
                    fill,
                    self.dtype(),
                    &self.device(),
                ),
            }
        };
        let (w, b) = (param(weight, 1.0)?, param(bias, 0.0)?);
        let record = Op::LayerNorm {
            x: self.into(),
            weight: weight.map(Input::from),
            bias: bias.map(Input::from),
            dims: r,
            eps,
        };
        track(record, || {
            let storage = self.contiguous()?.storage().layer_norm(
                &w.storage(),
                &b.storage(),
                rows,
                k,
                eps as f32,
            )?;
            Ok(Tensor::from_storage(storage, self.shape().clone()))
        })
    }

    /// `layer_norm`'s backward pass through the backend's row kernel, for this input
    /// (`dims` trailing dims normalised) and the output's gradient `grad`: the input's
    /// gradient, and `grad * x_hat` when there is a weight (its gradient sums these over
    /// the rows). `None` where the backend composes it instead.
    pub(crate) fn layer_norm_backward(
        &self,
        grad: &Tensor,
        weight: Option<&Tensor>,
        dims: usize,
        eps: f64,
    ) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let k: usize = self.dims()[self.rank() - dims..].iter().product();
        let rows = self.elem_count().checked_div(k).unwrap_or(0);
        let w = weight.map(Tensor::contiguous).transpose()?;
        let (x, g) = (self.contiguous()?, grad.contiguous()?);
        let w = w.as_ref().map(|w| w.storage());
        let grads =
            x.storage()
                .layer_norm_backward(&g.storage(), w.as_deref(), [rows, k], eps as f32)?;
        let shaped = |s| Tensor::from_storage(s, self.shape().clone());
        Ok(grads.map(|(dx, products)| (shaped(dx), products.map(shaped))))
    }
}
