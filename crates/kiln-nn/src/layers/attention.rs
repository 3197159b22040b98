//! Self-attention and transformer blocks: `MultiheadAttention` (PyTorch's
//! `in_proj_weight` / `out_proj` layout) with causal and key-padding masks,
//! `TransformerEncoderLayer`, and the pre-norm decoder-only block of GPT models.

use super::{Dropout, LayerNorm, Linear};
use crate::module::{prefixed, Module};
use crate::uniform;
use kiln::{DType, Device, Error, Result, Rng, Tensor};

/// Masked scores get this instead of -inf, so that a fully masked row stays finite.
const MASKED: f64 = -1e9;

pub struct MultiheadAttention {
    pub heads: usize,
    /// `[3 * embed, embed]`: query, key and value projections stacked.
    pub in_proj_weight: Tensor,
    pub in_proj_bias: Tensor,
    pub out_proj: Linear,
}

impl MultiheadAttention {
    pub fn new(embed: usize, heads: usize, device: &Device, rng: &mut Rng) -> Result<Self> {
        if heads == 0 || !embed.is_multiple_of(heads) {
            return Err(Error::InvalidArgument {
                op: "MultiheadAttention",
                reason: format!("{heads} heads do not divide {embed}"),
            });
        }
        let bound = (6.0 / (embed + 3 * embed) as f64).sqrt(); // Xavier-uniform, as PyTorch
        Ok(MultiheadAttention {
            heads,
            in_proj_weight: uniform(&[3 * embed, embed], bound, device, rng)?,
            in_proj_bias: Tensor::zeros([3 * embed], DType::F32, device)?.into_var()?,
            out_proj: Linear::new(embed, embed, device, rng)?,
        })
    }

    /// Self-attention over `x [batch, time, embed]`. `causal` hides later positions;
    /// `key_padding` (`[batch, time]`, non-zero = padding) hides padded keys.
    pub fn attend(&self, x: &Tensor, causal: bool, key_padding: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, e) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let (h, d) = (self.heads, e / self.heads);
        let qkv = x
            .matmul(&self.in_proj_weight.t()?)?
            .add(&self.in_proj_bias)?;
        let split = |k: usize| -> Result<Tensor> {
            qkv.narrow(2, k * e, e)?
                .reshape([b, t, h, d])?
                .permute(&[0, 2, 1, 3])
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let mut scores = q.matmul(&k.t()?)?.mul_scalar(1.0 / (d as f64).sqrt())?; // [b, h, t, t]
        if causal {
            let later = Tensor::ones([t, t], DType::F32, &x.device())?.triu(1)?;
            scores = scores.masked_fill(&later, MASKED)?;
        }
        if let Some(pad) = key_padding {
            scores =
                scores.masked_fill(&pad.to_dtype(DType::F32)?.reshape([b, 1, 1, t])?, MASKED)?;
        }
        let context = scores
            .softmax(-1)?
            .matmul(&v)?
            .permute(&[0, 2, 1, 3])?
            .reshape([b, t, e])?;
        self.out_proj.forward(&context)
    }
}

impl Module for MultiheadAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.attend(x, false, None)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![
            ("in_proj_weight".to_string(), self.in_proj_weight.clone()),
            ("in_proj_bias".to_string(), self.in_proj_bias.clone()),
        ];
        p.extend(prefixed("out_proj", self.out_proj.named_parameters()));
        p
    }
}

/// Attention and a two-layer GELU MLP, each with a residual connection.
/// `norm_first` puts the LayerNorms before each part (GPT style) instead of after
/// (PyTorch's default for `TransformerEncoderLayer`); `causal` masks the future.
pub struct TransformerEncoderLayer {
    pub self_attn: MultiheadAttention,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub dropout: Dropout,
    pub norm_first: bool,
    pub causal: bool,
}

impl TransformerEncoderLayer {
    pub fn new(
        embed: usize,
        heads: usize,
        feedforward: usize,
        dropout: f64,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(TransformerEncoderLayer {
            self_attn: MultiheadAttention::new(embed, heads, device, rng)?,
            linear1: Linear::new(embed, feedforward, device, rng)?,
            linear2: Linear::new(feedforward, embed, device, rng)?,
            norm1: LayerNorm::new(&[embed], device)?,
            norm2: LayerNorm::new(&[embed], device)?,
            dropout: Dropout::new(dropout, rng.next_seed()),
            norm_first: false,
            causal: false,
        })
    }

    /// The decoder-only block of GPT models: pre-norm, causal, feed-forward 4x wide.
    pub fn gpt_block(
        embed: usize,
        heads: usize,
        dropout: f64,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let mut block =
            TransformerEncoderLayer::new(embed, heads, 4 * embed, dropout, device, rng)?;
        block.norm_first = true;
        block.causal = true;
        Ok(block)
    }

    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.dropout
            .forward(&self.linear2.forward(&self.linear1.forward(x)?.gelu()?)?)
    }

    /// `x [batch, time, embed]` with an optional key-padding mask `[batch, time]`.
    pub fn forward_masked(&self, x: &Tensor, key_padding: Option<&Tensor>) -> Result<Tensor> {
        let attend = |h: &Tensor| -> Result<Tensor> {
            self.dropout
                .forward(&self.self_attn.attend(h, self.causal, key_padding)?)
        };
        if self.norm_first {
            let x = x.add(&attend(&self.norm1.forward(x)?)?)?;
            x.add(&self.feed_forward(&self.norm2.forward(&x)?)?)
        } else {
            let x = self.norm1.forward(&x.add(&attend(x)?)?)?;
            self.norm2.forward(&x.add(&self.feed_forward(&x)?)?)
        }
    }
}

impl Module for TransformerEncoderLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("self_attn", self.self_attn.named_parameters());
        p.extend(prefixed("linear1", self.linear1.named_parameters()));
        p.extend(prefixed("linear2", self.linear2.named_parameters()));
        p.extend(prefixed("norm1", self.norm1.named_parameters()));
        p.extend(prefixed("norm2", self.norm2.named_parameters()));
        p
    }

    fn set_training(&self, training: bool) {
        self.dropout.set_training(training);
    }
}
