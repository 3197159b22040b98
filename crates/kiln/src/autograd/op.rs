//! What the graph records: each tensor's role (`Node`) and, for computed tensors, the
//! op with the inputs its gradient rule needs (`Op`).

use super::grad_mode::{is_grad_enabled, no_grad};
use crate::attention::AttentionSaved;
use crate::Tensor;
use kiln_core::{BinaryOp, Error, Gradient, PoolKind, ReduceOp, Result, UnaryOp, WindowSpec};
use std::sync::Arc;

/// A tensor's place in the autograd graph.
pub(crate) enum Node {
    /// Needs no gradient.
    Constant,
    /// A trainable variable: gradients stop and collect here.
    Leaf,
    /// Computed by an op whose inputs track gradients.
    Op(Arc<Op>),
    /// Computed by an op whose saved inputs a backward pass has already released.
    Freed(&'static str),
}

/// A recorded op: its parents and whatever else its gradient rule needs. The output
/// itself is never stored here (it would own itself); rules receive it separately.
pub(crate) enum Op {
    Unary(Tensor, UnaryOp),
    Binary(Tensor, Tensor, BinaryOp),
    Where {
        cond: Tensor,
        on_true: Tensor,
        on_false: Tensor,
    },
    Cast(Tensor),
    ToDevice(Tensor),
    Identity(Tensor),
    Reshape(Tensor),
    Permute(Tensor, Vec<usize>),
    Broadcast(Tensor),
    Narrow {
        x: Tensor,
        dim: usize,
        start: usize,
    },
    Reduce {
        x: Tensor,
        op: ReduceOp,
        dims: Vec<usize>,
        keepdim: bool,
    },
    Softmax {
        x: Tensor,
        dim: usize,
        log: bool,
    },
    Matmul(Tensor, Tensor),
    Conv2d {
        x: Tensor,
        w: Tensor,
        spec: WindowSpec,
        groups: usize,
    },
    ConvTranspose2d {
        x: Tensor,
        w: Tensor,
        spec: WindowSpec,
        groups: usize,
    },
    MaxPool2d {
        x: Tensor,
        indices: Tensor,
        spec: WindowSpec,
    },
    AvgPool2d {
        x: Tensor,
        spec: WindowSpec,
        kind: PoolKind,
    },
    Cat {
        xs: Vec<Tensor>,
        dim: usize,
    },
    Pad {
        x: Tensor,
        pads: Vec<(usize, usize)>,
    },
    IndexSelect {
        x: Tensor,
        dim: usize,
        index: Tensor,
    },
    Gather {
        x: Tensor,
        dim: usize,
        index: Tensor,
    },
    ScatterAdd {
        x: Tensor,
        dim: usize,
        index: Tensor,
        src: Tensor,
    },
    LayerNorm {
        x: Tensor,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        dims: usize,
        eps: f64,
    },
    /// `Tensor::batch_norm`: the batch's statistics are kept (constants), shaped
    /// `[1, c, 1, ..]`.
    BatchNorm {
        x: Tensor,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        mean: Tensor,
        rstd: Tensor,
    },
    CrossEntropy {
        logits: Tensor,
        targets: Tensor,
        smoothing: f32,
    },
    /// `Tensor::attention`, with what its kernels read and the log-sum-exp.
    Attention {
        q: Tensor,
        k: Tensor,
        v: Tensor,
        saved: Box<AttentionSaved>,
    },
    /// `Tensor::lstm_cell`: gate pre-activations and cell state.
    LstmCell {
        z: Tensor,
        c: Tensor,
    },
    /// `Tensor::gru_cell`: input and hidden projections, hidden state.
    GruCell {
        x: Tensor,
        hp: Tensor,
        h: Tensor,
    },
}

impl Op {
    /// The inputs gradients flow to, in the order `backward` returns their gradients.
    pub(crate) fn parents(&self) -> Vec<&Tensor> {
        match self {
            Op::Unary(x, _)
            | Op::Cast(x)
            | Op::ToDevice(x)
            | Op::Identity(x)
            | Op::Reshape(x)
            | Op::Permute(x, _)
            | Op::Broadcast(x)
            | Op::Narrow { x, .. }
            | Op::Reduce { x, .. }
            | Op::Softmax { x, .. }
            | Op::MaxPool2d { x, .. }
            | Op::AvgPool2d { x, .. }
            | Op::Pad { x, .. }
            | Op::IndexSelect { x, .. }
            | Op::Gather { x, .. } => vec![x],
            Op::Binary(a, b, _) | Op::Matmul(a, b) => vec![a, b],
            Op::Conv2d { x, w, .. } | Op::ConvTranspose2d { x, w, .. } => vec![x, w],
            Op::Where {
                on_true, on_false, ..
            } => vec![on_true, on_false],
            Op::Cat { xs, .. } => xs.iter().collect(),
            Op::ScatterAdd { x, src, .. } => vec![x, src],
            Op::LayerNorm {
                x, weight, bias, ..
            }
            | Op::BatchNorm {
                x, weight, bias, ..
            } => std::iter::once(x).chain(weight).chain(bias).collect(),
            Op::CrossEntropy { logits, .. } => vec![logits],
            Op::Attention { q, k, v, .. } => vec![q, k, v],
            Op::LstmCell { z, c } => vec![z, c],
            Op::GruCell { x, hp, h } => vec![x, hp, h],
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Unary(_, op) => op.name(),
            Op::Binary(_, _, op) => op.name(),
            Op::Where { .. } => "where",
            Op::Cast(_) => "to_dtype",
            Op::ToDevice(_) => "to_device",
            Op::Identity(_) => "contiguous",
            Op::Reshape(_) => "reshape",
            Op::Permute(..) => "permute",
            Op::Broadcast(_) => "broadcast_to",
            Op::Narrow { .. } => "narrow",
            Op::Reduce { op, .. } => op.name(),
            Op::Softmax { log: false, .. } => "softmax",
            Op::Softmax { log: true, .. } => "log_softmax",
            Op::Matmul(..) => "matmul",
            Op::Conv2d { .. } => "conv2d",
            Op::ConvTranspose2d { .. } => "conv_transpose2d",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::Cat { .. } => "cat",
            Op::Pad { .. } => "pad",
            Op::IndexSelect { .. } => "index_select",
            Op::Gather { .. } => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::LayerNorm { .. } => "layer_norm",
            Op::BatchNorm { .. } => "batch_norm",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::Attention { .. } => "attention",
            Op::LstmCell { .. } => "lstm_cell",
            Op::GruCell { .. } => "gru_cell",
        }
    }
}

/// Runs a differentiable primitive. When grad mode is on and a parent tracks a
/// gradient, `compute` runs without recording its internals and the result records
/// `op`; otherwise `op` is dropped unused.
pub(crate) fn track(op: Op, compute: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    if !is_grad_enabled() || !op.parents().iter().any(|p| p.requires_grad()) {
        return compute();
    }
    let out = no_grad(compute)?;
    Ok(out.with_node(Node::Op(Arc::new(op))))
}

/// `track` for an op of the op table, as its gradient kind says: a piecewise-constant
/// op's output never requires a gradient, and an op without a rule is an error where
/// it would be recorded (never a silent zero).
pub(crate) fn track_by_kind(
    gradient: Gradient,
    op: Op,
    compute: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    match gradient {
        Gradient::Rule => track(op, compute),
        Gradient::Constant => no_grad(compute),
        Gradient::Missing => {
            if is_grad_enabled() && op.parents().iter().any(|p| p.requires_grad()) {
                let name = op.name();
                let reason = format!("{name} has no gradient rule yet; detach() first");
                return Err(Error::NoGradient { op: name, reason });
            }
            compute()
        }
    }
}
