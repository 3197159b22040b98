//! Attention and transformer blocks: `MultiheadAttention` (PyTorch's `in_proj_weight`
//! / `out_proj` layout and inputs) for self- and cross-attention with causal,
//! key-padding and attention masks, `TransformerEncoderLayer`, and the pre-norm
//! decoder-only block of GPT models.

use super::{Activation, Dropout, LayerNorm, Linear};
use crate::functional::{attention, AttentionMask};
use crate::module::{prefixed, Module};
use crate::uniform;
use kiln::{DType, Device, Error, Result, Rng, Tensor};

/// Multi-head attention with PyTorch's weights (`in_proj_weight` stacking the query,
/// key and value projections, `out_proj`) and inputs: `[time, batch, embed]` by
/// default, `[batch, time, embed]` with `batch_first(true)`.
pub struct MultiheadAttention {
    /// Heads the embedding is split between.
    pub heads: usize,
    /// `[3 * embed, embed]`: query, key and value projections stacked.
    pub in_proj_weight: Tensor,
    /// `[3 * embed]`: the three projections' biases.
    pub in_proj_bias: Tensor,
    /// The output projection.
    pub out_proj: Linear,
    /// Inputs and output `[batch, time, embed]` when true, else `[time, batch, embed]`
    /// (PyTorch's default).
    pub batch_first: bool,
}

/// The masks of one attention call, as PyTorch's `MultiheadAttention.forward` takes
/// them.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionOptions<'a> {
    /// `[batch, keys]`, non-zero where a key is padding (to be ignored).
    pub key_padding_mask: Option<&'a Tensor>,
    /// `[queries, keys]`, or `[batch * heads, queries, keys]`, as `AttentionMask` says.
    pub attn_mask: Option<AttentionMask<'a>>,
    /// Hide key j from query i when j > i.
    pub is_causal: bool,
}

impl MultiheadAttention {
    /// Attention over `embed` features in `heads` heads (which must divide it), with
    /// PyTorch's initialisation: Xavier-uniform projections, zero biases.
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
            batch_first: false,
        })
    }

    /// Takes and gives `[batch, time, embed]` when `on`.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Self-attention over `x`. `causal` hides later positions; `key_padding`
    /// (`[batch, time]`, non-zero = padding) hides padded keys.
    pub fn attend(&self, x: &Tensor, causal: bool, key_padding: Option<&Tensor>) -> Result<Tensor> {
        let options = AttentionOptions {
            key_padding_mask: key_padding,
            attn_mask: None,
            is_causal: causal,
        };
        self.attention(x, x, x, &options)
    }

    /// Attention of `query` (`[L, batch, embed]`, or batch first) over `key` and
    /// `value` (`[S, batch, embed]`): cross-attention when they differ, self-attention
    /// when all three are the same tensor. PyTorch's `forward(query, key, value,
    /// key_padding_mask, attn_mask=..., is_causal=...)`, without the weights.
    pub fn attention(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        options: &AttentionOptions<'_>,
    ) -> Result<Tensor> {
        let op = "MultiheadAttention";
        let e = self.in_proj_weight.dims()[1];
        for (name, t) in [("query", query), ("key", key), ("value", value)] {
            if t.rank() != 3 || t.dims()[2] != e {
                return Err(Error::InvalidShape {
                    op,
                    shape: t.shape().clone(),
                    reason: format!("the {name} must be 3-D with {e} features"),
                });
            }
        }
        let batch_first = |t: &Tensor| -> Result<Tensor> {
            match self.batch_first {
                true => Ok(t.clone()),
                false => t.transpose(0, 1),
            }
        };
        let (q_in, k_in, v_in) = (batch_first(query)?, batch_first(key)?, batch_first(value)?);
        let (b, l, s) = (q_in.dims()[0], q_in.dims()[1], k_in.dims()[1]);
        if k_in.dims()[..2] != v_in.dims()[..2] || k_in.dims()[0] != b {
            return Err(Error::ShapeMismatch {
                op,
                lhs: query.shape().clone(),
                rhs: key.shape().clone(),
            });
        }
        let (h, d) = (self.heads, e / self.heads);
        let heads = |t: Tensor, len: usize| -> Result<Tensor> {
            t.reshape([b, len, h, d])?.permute(&[0, 2, 1, 3])
        };
        let (q, k, v) = if query.id() == key.id() && key.id() == value.id() {
            // Self-attention: one product for the three projections.
            let qkv = q_in
                .matmul(&self.in_proj_weight.t()?)?
                .add(&self.in_proj_bias)?;
            let part = |i: usize| heads(qkv.narrow(2, i * e, e)?, l);
            (part(0)?, part(1)?, part(2)?)
        } else {
            let project = |x: &Tensor, i: usize, len: usize| -> Result<Tensor> {
                let w = self.in_proj_weight.narrow(0, i * e, e)?;
                let bias = self.in_proj_bias.narrow(0, i * e, e)?;
                heads(x.matmul(&w.t()?)?.add(&bias)?, len)
            };
            (
                project(&q_in, 0, l)?,
                project(&k_in, 1, s)?,
                project(&v_in, 2, s)?,
            )
        };
        let mut masks = Vec::new();
        let padding;
        if let Some(pad) = options.key_padding_mask {
            if pad.dims() != [b, s] {
                return Err(Error::InvalidShape {
                    op,
                    shape: pad.shape().clone(),
                    reason: format!("the key padding mask must be [batch, keys] = [{b}, {s}]"),
                });
            }
            padding = pad.reshape([b, 1, 1, s])?;
            masks.push(AttentionMask::Block(&padding));
        }
        let per_head;
        if let Some(m) = options.attn_mask {
            let t = m.tensor();
            match t.dims() {
                [ml, ms] if (*ml, *ms) == (l, s) => masks.push(m),
                [bh, ml, ms] if (*bh, *ml, *ms) == (b * h, l, s) => {
                    per_head = t.reshape([b, h, l, s])?;
                    masks.push(m.with(&per_head));
                }
                _ => {
                    return Err(Error::InvalidShape {
                        op,
                        shape: t.shape().clone(),
                        reason: format!(
                            "the attention mask must be [{l}, {s}] or [batch * heads, {l}, {s}]"
                        ),
                    })
                }
            }
        }
        let context = attention(
            &q,
            &k,
            &v,
            &masks,
            options.is_causal,
            1.0 / (d as f64).sqrt(),
        )?
        .permute(&[0, 2, 1, 3])?
        .reshape([b, l, e])?;
        batch_first(&self.out_proj.forward(&context)?)
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

/// Self-attention and a two-layer MLP, each with a residual connection, as PyTorch's
/// `TransformerEncoderLayer`: ReLU, post-norm and `[time, batch, embed]` by default.
/// `norm_first` puts the LayerNorms before each part (GPT style) instead of after;
/// `causal` masks the future.
pub struct TransformerEncoderLayer {
    /// The self-attention.
    pub self_attn: MultiheadAttention,
    /// The MLP's first layer, `embed` to `feedforward`.
    pub linear1: Linear,
    /// The MLP's second layer, back to `embed`.
    pub linear2: Linear,
    /// The norm around the attention.
    pub norm1: LayerNorm,
    /// The norm around the MLP.
    pub norm2: LayerNorm,
    /// Dropout after the attention, inside the MLP and after it (one probability).
    pub dropout: Dropout,
    /// Normalise before each part (pre-norm) instead of after.
    pub norm_first: bool,
    /// Hide later positions from each position.
    pub causal: bool,
    /// The MLP's activation: ReLU, PyTorch's default; GELU in `gpt_block`.
    pub activation: Activation,
}

impl TransformerEncoderLayer {
    /// PyTorch's `TransformerEncoderLayer(embed, heads, feedforward, dropout)`:
    /// post-norm, ReLU, time first.
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
            activation: Activation::ReLU,
        })
    }

    /// Takes and gives `[batch, time, embed]` when `on` (the default is time first,
    /// as PyTorch's).
    pub fn batch_first(mut self, on: bool) -> Self {
        self.self_attn.batch_first = on;
        self
    }

    /// The decoder-only block of GPT models: pre-norm, causal, GELU, feed-forward 4x
    /// wide, batch first.
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
        block.activation = Activation::GELU;
        Ok(block.batch_first(true))
    }

    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.dropout.forward(
            &self
                .linear2
                .forward(&self.activation.forward(&self.linear1.forward(x)?)?)?,
        )
    }

    /// `x` with an optional key-padding mask `[batch, time]`.
    pub fn forward_masked(&self, x: &Tensor, key_padding: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(x, None, key_padding)
    }

    /// PyTorch's `forward(src, src_mask, src_key_padding_mask)`: `x` with an attention
    /// mask `[time, time]` (or per head) and a key-padding mask `[batch, time]`.
    pub fn forward_with(
        &self,
        x: &Tensor,
        attn_mask: Option<AttentionMask<'_>>,
        key_padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        let options = AttentionOptions {
            key_padding_mask: key_padding,
            attn_mask,
            is_causal: self.causal,
        };
        let attend = |h: &Tensor| -> Result<Tensor> {
            self.dropout
                .forward(&self.self_attn.attention(h, h, h, &options)?)
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
