//! Functions of tensors with PyTorch's `torch.nn.functional` names, for what is not a
//! layer with weights: `scaled_dot_product_attention` and its masks.

use kiln::backend::{attention_class, AttentionWay, GpuDevice};
use kiln::{is_grad_enabled, DType, Error, Result, Tensor};

/// A hidden score gets this instead of -inf, so that a fully masked row gives a finite
/// average of the values instead of PyTorch's NaN.
pub const MASKED: f64 = -1e9;

/// Which query-key pairs attention may use. kiln has no boolean dtype, so a mask says
/// which way its non-zero entries point, where PyTorch reads the same idea from a bool
/// tensor's dtype (and reads it one way in `scaled_dot_product_attention` and the
/// other in `MultiheadAttention`). Each broadcasts against the scores
/// `[.., queries, keys]`.
#[derive(Clone, Copy, Debug)]
pub enum AttentionMask<'a> {
    /// Non-zero where a query may attend to a key: PyTorch's boolean `attn_mask` of
    /// `scaled_dot_product_attention`.
    Allow(&'a Tensor),
    /// Non-zero where it may not: PyTorch's boolean `attn_mask` of
    /// `MultiheadAttention` and its `key_padding_mask`.
    Block(&'a Tensor),
    /// Added to the scores (0 to keep, a large negative number to hide): PyTorch's
    /// float masks.
    Add(&'a Tensor),
}

impl<'a> AttentionMask<'a> {
    /// The same kind of mask over another tensor (the same mask reshaped, say).
    pub fn with<'b>(&self, t: &'b Tensor) -> AttentionMask<'b> {
        match self {
            AttentionMask::Allow(_) => AttentionMask::Allow(t),
            AttentionMask::Block(_) => AttentionMask::Block(t),
            AttentionMask::Add(_) => AttentionMask::Add(t),
        }
    }

    /// The mask's tensor.
    pub fn tensor(&self) -> &'a Tensor {
        match *self {
            AttentionMask::Allow(t) | AttentionMask::Block(t) | AttentionMask::Add(t) => t,
        }
    }

    /// `scores` with the mask applied: hidden pairs set to `MASKED`, or the mask added.
    pub fn apply(&self, scores: &Tensor) -> Result<Tensor> {
        match *self {
            AttentionMask::Allow(m) => {
                scores.masked_fill(&m.to_dtype(DType::F32)?.eq_scalar(0.0)?, MASKED)
            }
            AttentionMask::Block(m) => scores.masked_fill(&m.to_dtype(DType::F32)?, MASKED),
            AttentionMask::Add(m) => scores.add(&m.to_dtype(scores.dtype())?),
        }
    }
}

/// `softmax(q k^T * scale + mask) v` over the last two dims of `q [.., L, E]`,
/// `k [.., S, E]` and `v [.., S, Ev]`: PyTorch's `scaled_dot_product_attention`.
/// `scale` defaults to 1/sqrt(E); `is_causal` hides key j from query i when j > i
/// (the top-left aligned triangle, as PyTorch's, also when L != S). Leading dims
/// broadcast as in `matmul`.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<AttentionMask<'_>>,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    let op = "scaled_dot_product_attention";
    if q.rank() < 2 || k.rank() < 2 || v.rank() < 2 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "q, k and v need at least [L, E], got {:?}, {:?} and {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        });
    }
    let e = q.dims()[q.rank() - 1];
    let s = k.dims()[k.rank() - 2];
    if k.dims()[k.rank() - 1] != e || v.dims()[v.rank() - 2] != s {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "q {:?}, k {:?} and v {:?}: q and k must share E, k and v the key count",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        });
    }
    attention(
        q,
        k,
        v,
        mask.as_slice(),
        is_causal,
        scale.unwrap_or(1.0 / (e as f64).sqrt()),
    )
}

/// `scaled_dot_product_attention` with any number of masks, applied in turn (a
/// key-padding mask and an attention mask, say), after the shapes were checked.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    masks: &[AttentionMask<'_>],
    is_causal: bool,
    scale: f64,
) -> Result<Tensor> {
    let device = q.device();
    if let (true, Some(gpu)) = (masks.is_empty(), device.as_gpu()) {
        // One kernel, the scores never written (`Tensor::attention`), where the device
        // runs attention that way for this shape. The CPU keeps the composed products,
        // which run on its GEMM. Heads the kernels do not take (more than 64 features,
        // f16) are composed on the GPU too.
        if attention_way(gpu, q, k, v, is_causal, scale)? != AttentionWay::Composed {
            match q.attention(k, v, is_causal, scale) {
                Err(Error::Unsupported { .. }) => {}
                fused => return fused,
            }
        }
    }
    composed_attention(q, k, v, masks, is_causal, scale)
}

/// How `gpu` runs this attention: its setting, or the autotuner's choice for the shape
/// class, timed on copies of q, k and v (forward, and backward when a gradient will be
/// taken). A way that cannot run the shape loses.
fn attention_way(
    gpu: &GpuDevice,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    scale: f64,
) -> Result<AttentionWay> {
    let backward = is_grad_enabled() && [q, k, v].iter().any(|t| t.requires_grad());
    let dims = |t: &Tensor| t.dims()[..t.rank() - 2].iter().product::<usize>();
    let rows = |t: &Tensor| t.dims()[t.rank() - 2];
    let features = |t: &Tensor| t.dims()[t.rank() - 1];
    let class = attention_class(
        q.dtype(),
        dims(q).max(dims(k)).max(dims(v)),
        [rows(q), rows(k)],
        [features(q), features(v)],
        causal,
        backward,
    );
    gpu.attention_way_for(&class, |way| {
        let copy = |t: &Tensor| match backward {
            true => t.detach().into_var(),
            false => Ok(t.detach()),
        };
        let (q, k, v) = (copy(q)?, copy(k)?, copy(v)?);
        let out = match way {
            AttentionWay::Fused => q.attention(&k, &v, causal, scale)?,
            _ => composed_attention(&q, &k, &v, &[], causal, scale)?,
        };
        // Returned, so that kernels deferred for fusion run while the clock runs.
        let grads = match backward {
            true => Some(out.backward_from(&out.ones_like()?)?),
            false => None,
        };
        Ok((out, grads))
    })
}

/// Attention from its products and a softmax, the masks applied to the scores.
fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    masks: &[AttentionMask<'_>],
    is_causal: bool,
    scale: f64,
) -> Result<Tensor> {
    let (l, s) = (q.dims()[q.rank() - 2], k.dims()[k.rank() - 2]);
    let mut scores = q.matmul(&k.t()?)?.mul_scalar(scale)?;
    if is_causal {
        let later = Tensor::ones([l, s], DType::F32, &q.device())?.triu(1)?;
        scores = scores.masked_fill(&later, MASKED)?;
    }
    for m in masks {
        scores = m.apply(&scores)?;
    }
    scores.softmax(-1)?.matmul(v)
}
