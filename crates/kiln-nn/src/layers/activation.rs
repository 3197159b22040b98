//! Activation functions, `Flatten` and `Unflatten` as modules, for use in `Sequential`.

use crate::module::Module;
use kiln::{Error, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
/// An elementwise activation as a layer.
pub enum Activation {
    /// `max(x, 0)`.
    ReLU,
    /// `x` for positive `x`, else `slope * x`.
    LeakyReLU(f64),
    /// The exact (erf) GELU, PyTorch's default.
    GELU,
    /// `x * sigmoid(x)` (also called swish).
    SiLU,
    /// The hyperbolic tangent.
    Tanh,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match *self {
            Activation::ReLU => x.relu(),
            Activation::LeakyReLU(slope) => x.leaky_relu(slope),
            Activation::GELU => x.gelu(),
            Activation::SiLU => x.silu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
        }
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Flattens every dim after the first: `[n, ..] -> [n, prod(..)]`.
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dims().first().copied().unwrap_or(1);
        x.reshape([n, x.elem_count() / n.max(1)])
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Splits dim 1 into `shape` (PyTorch's `Unflatten(1, shape)`): `[n, prod(shape)] ->
/// [n, ..shape]`, e.g. a linear layer's output into feature maps.
pub struct Unflatten {
    /// The dims that dim 1 unfolds into.
    pub shape: Vec<usize>,
}

impl Unflatten {
    /// Unfolds dim 1 of `[n, prod(shape)]` into `[n, shape..]`.
    pub fn new(shape: &[usize]) -> Self {
        Unflatten {
            shape: shape.to_vec(),
        }
    }
}

impl Module for Unflatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inner: usize = self.shape.iter().product();
        if x.rank() != 2 || x.dims()[1] != inner {
            return Err(Error::InvalidArgument {
                op: "Unflatten",
                reason: format!(
                    "expected [n, {inner}] to split into {:?}, got {:?}",
                    self.shape,
                    x.dims()
                ),
            });
        }
        let mut dims = vec![x.dims()[0]];
        dims.extend(&self.shape);
        x.reshape(dims)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln::{DType, Device};

    #[test]
    fn unflatten_splits_dim_one_and_rejects_other_sizes() {
        let x = Tensor::zeros([2, 12], DType::F32, &Device::cpu()).unwrap();
        let y = Unflatten::new(&[3, 2, 2]).forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 3, 2, 2]);
        let err = Unflatten::new(&[5, 2]).forward(&x).unwrap_err();
        assert!(err.to_string().contains("[n, 10]"), "{err}");
    }
}
