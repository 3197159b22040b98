//! `Sequential`: modules applied in order, named `0`, `1`, ... in the state dict.

use crate::module::{prefixed, Module};
use kiln::{Result, Tensor};

#[derive(Default)]
/// Layers applied in order; parameters named by position (`0.weight`), as PyTorch's
/// `Sequential`.
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// No layers yet (see `append`).
    pub fn new() -> Self {
        Sequential::default()
    }

    /// Appends a layer (builder style).
    pub fn append(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// How many layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers in `layers` applied in order: a part of the model, such as the
    /// convolutional features Grad-CAM explains and the head after them.
    pub fn forward_range(&self, x: &Tensor, layers: std::ops::Range<usize>) -> Result<Tensor> {
        let Some(part) = self.layers.get(layers.clone()) else {
            return Err(kiln::Error::InvalidArgument {
                op: "Sequential::forward_range",
                reason: format!("layers {layers:?} of a model of {}", self.layers.len()),
            });
        };
        let mut h = x.clone();
        for layer in part {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.named_parameters()))
            .collect()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.named_buffers()))
            .collect()
    }

    fn set_training(&self, training: bool) {
        self.layers.iter().for_each(|l| l.set_training(training));
    }
}
