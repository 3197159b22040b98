//! `Embedding`: a lookup table of learned vectors, initialised from N(0, 1) as in PyTorch.

use crate::module::Module;
use kiln::{DType, Device, Result, Rng, Tensor};

/// A lookup table: row `i` of `weight` for id `i`, PyTorch's `Embedding`.
pub struct Embedding {
    /// `[num_embeddings, dim]`
    pub weight: Tensor,
}

impl Embedding {
    /// `num_embeddings` rows of `dim` values, standard normal as PyTorch's.
    pub fn new(num_embeddings: usize, dim: usize, device: &Device, rng: &mut Rng) -> Result<Self> {
        Ok(Embedding {
            weight: Tensor::randn([num_embeddings, dim], DType::F32, device, rng)?.into_var()?,
        })
    }
}

impl Module for Embedding {
    /// i32 ids of any shape -> `ids.shape + [dim]`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.weight.embedding(ids)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}
