//! Activation functions and `Flatten` as modules, for use in `Sequential`.

use crate::module::Module;
use kiln::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    ReLU,
    LeakyReLU(f64),
    GELU,
    SiLU,
    Tanh,
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
