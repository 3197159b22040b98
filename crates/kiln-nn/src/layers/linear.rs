//! `Linear`: `y = x W^T + b`, PyTorch's layout and initialisation.

use crate::init::weight_and_bias;
use crate::module::Module;
use kiln::{Device, Result, Rng, Tensor};

/// `x W^T + b`, PyTorch's `Linear`.
pub struct Linear {
    /// `[out_features, in_features]`
    pub weight: Tensor,
    /// `[out_features]`
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer from `input` to `output` features with PyTorch's initialisation
    /// (uniform in ±1/sqrt(input)).
    pub fn new(
        in_features: usize,
        out_features: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let (weight, bias) = weight_and_bias(
            &[out_features, in_features],
            in_features,
            out_features,
            device,
            rng,
        )?;
        Ok(Linear {
            weight,
            bias: Some(bias),
        })
    }

    /// Drops the bias (`bias=False`).
    pub fn without_bias(mut self) -> Self {
        self.bias = None;
        self
    }
}

impl Module for Linear {
    /// `[.., in]` -> `[.., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![("weight".to_string(), self.weight.clone())];
        p.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        p
    }
}
