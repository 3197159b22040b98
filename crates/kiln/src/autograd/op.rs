//! What the graph records: each tensor's role (`Node`) and, for computed tensors, the
//! op with edges to its parents and the values its gradient rule reads (`Recorded`).

use super::edge::Input;
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
    Op(Arc<Recorded>),
    /// Computed by an op whose saved inputs a backward pass has already released.
    Freed(&'static str),
}

/// An op as the graph keeps it.
pub(crate) struct Recorded {
    pub(crate) op: Op,
    /// Which parents tracked a gradient when the op ran, in `Op::parents` order: only
    /// they get one (a constant made a variable later does not, as in PyTorch).
    pub(crate) needs: Vec<bool>,
    /// The output's values where the rule reads them: a constant sharing the output's
    /// data, never the output itself (which would own its own node).
    pub(crate) output: Option<Tensor>,
}

/// An op: its parents (`Input`s, whose values `release` drops where the rule does not
/// read them) and whatever else its gradient rule needs.
pub(crate) enum Op {
    Unary(Input, UnaryOp),
    Binary(Input, Input, BinaryOp),
    Where {
        cond: Tensor,
        on_true: Input,
        on_false: Input,
    },
    Cast(Input),
    ToDevice(Input),
    Identity(Input),
    Reshape(Input),
    Permute(Input, Vec<usize>),
    Broadcast(Input),
    Narrow {
        x: Input,
        dim: usize,
        start: usize,
    },
    Reduce {
        x: Input,
        op: ReduceOp,
        dims: Vec<usize>,
        keepdim: bool,
    },
    Softmax {
        x: Input,
        dim: usize,
        log: bool,
    },
    Matmul(Input, Input),
    Conv2d {
        x: Input,
        w: Input,
        spec: WindowSpec,
        groups: usize,
    },
    ConvTranspose2d {
        x: Input,
        w: Input,
        spec: WindowSpec,
        groups: usize,
    },
    MaxPool2d {
        x: Input,
        indices: Tensor,
        spec: WindowSpec,
    },
    AvgPool2d {
        x: Input,
        spec: WindowSpec,
        kind: PoolKind,
    },
    Cat {
        xs: Vec<Input>,
        dim: usize,
    },
    Pad {
        x: Input,
        pads: Vec<(usize, usize)>,
    },
    IndexSelect {
        x: Input,
        dim: usize,
        index: Tensor,
    },
    Gather {
        x: Input,
        dim: usize,
        index: Tensor,
    },
    ScatterAdd {
        x: Input,
        dim: usize,
        index: Tensor,
        src: Input,
    },
    LayerNorm {
        x: Input,
        weight: Option<Input>,
        bias: Option<Input>,
        dims: usize,
        eps: f64,
    },
    /// `Tensor::batch_norm`: the batch's statistics are kept (constants), shaped
    /// `[1, c, 1, ..]`.
    BatchNorm {
        x: Input,
        weight: Option<Input>,
        bias: Option<Input>,
        mean: Tensor,
        rstd: Tensor,
    },
    CrossEntropy {
        logits: Input,
        targets: Tensor,
        smoothing: f32,
    },
    /// `Tensor::attention`, with what its kernels read and the log-sum-exp.
    Attention {
        q: Input,
        k: Input,
        v: Input,
        saved: Box<AttentionSaved>,
    },
    /// `Tensor::lstm_cell`: gate pre-activations and cell state.
    LstmCell {
        z: Input,
        c: Input,
    },
    /// `Tensor::gru_cell`: input and hidden projections, hidden state.
    GruCell {
        x: Input,
        hp: Input,
        h: Input,
    },
}

/// An op's parents, in the order `backward` returns their gradients: the one list,
/// for shared and for mutable access.
macro_rules! parents {
    ($op:expr) => {
        match $op {
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
            Op::Cat { xs, .. } => xs.into_iter().collect(),
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
    };
}

impl Op {
    /// Where the rule reads its output's gradient in two parts, `(dim, at)`: an LSTM
    /// cell's `[h | c']`, whose consumers (the model's `narrow`s) give them so.
    pub(crate) fn split_gradient(&self) -> Option<(usize, usize)> {
        match self {
            Op::LstmCell { c, .. } => Some((1, c.dims()[1])),
            _ => None,
        }
    }

    /// The inputs gradients flow to, in the order `backward` returns their gradients.
    pub(crate) fn parents(&self) -> Vec<&Input> {
        parents!(self)
    }

    fn parents_mut(&mut self) -> Vec<&mut Input> {
        parents!(self)
    }

    /// Drops the values of the parents the rule will not read, given which parents
    /// want a gradient (`needs`, in `parents` order), and says whether the rule reads
    /// the output. A sum's inputs, a bias's other operand, a reshape's source are held
    /// by their edges alone, so their data can go once nothing else holds it.
    fn release(&mut self, needs: &[bool]) -> bool {
        let (keep, reads_output) = self.reads(needs);
        for (parent, keep) in self.parents_mut().into_iter().zip(keep) {
            // The edge as the parent is now (its layout, dtype, role), for the backward.
            parent.edge();
            parent.keep_if(keep);
        }
        reads_output
    }

    /// Which parents' values the rule reads (in `parents` order), and whether it
    /// reads the output's.
    fn reads(&self, needs: &[bool]) -> (Vec<bool>, bool) {
        use BinaryOp as B;
        use UnaryOp as U;
        let need = |i: usize| needs.get(i).copied().unwrap_or(false);
        let n = needs.len();
        match self {
            Op::Unary(_, u) => match u {
                U::Neg | U::AddScalar(_) | U::MulScalar(_) => (vec![false], false),
                U::Exp | U::Sqrt | U::Rsqrt | U::Tanh | U::Sigmoid | U::Recip => {
                    (vec![false], true)
                }
                _ => (vec![true], false),
            },
            Op::Binary(_, _, op) => match op {
                B::Mul => (vec![need(1), need(0)], false),
                B::Div => (vec![false, true], need(1)),
                B::Pow => (vec![true, need(0)], need(1)),
                B::Atan2 | B::Maximum | B::Minimum => (vec![true, true], false),
                B::Add | B::Sub | B::Eq | B::Ne | B::Lt | B::Le | B::Gt | B::Ge => {
                    (vec![false, false], false)
                }
            },
            // Each operand's values are read for the other's gradient only.
            Op::Matmul(..) | Op::Conv2d { .. } | Op::ConvTranspose2d { .. } => {
                (vec![need(1), need(0)], false)
            }
            Op::Reduce { op, .. } => {
                let extreme = matches!(op, ReduceOp::Max | ReduceOp::Min);
                (vec![extreme], extreme)
            }
            Op::Softmax { .. } | Op::Attention { .. } => (vec![false; n], true),
            // The input and the weight; a bias's gradient is a sum of the output's.
            Op::LayerNorm { bias, .. } | Op::BatchNorm { bias, .. } => {
                let mut keep = vec![true; n];
                if bias.is_some() {
                    keep[n - 1] = false;
                }
                (keep, false)
            }
            Op::CrossEntropy { .. } | Op::LstmCell { .. } | Op::GruCell { .. } => {
                (vec![true; n], false)
            }
            // Shapes alone: views, copies, casts, pads, cats, gathers and scatters (by
            // the indices they keep), pooling (max pooling by its indices), `where`
            // (by its condition).
            _ => (vec![false; n], false),
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
/// `op`, keeping only the values its rule reads; otherwise `op` is dropped unused.
pub(crate) fn track(mut op: Op, compute: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    if !is_grad_enabled() {
        return compute();
    }
    let needs: Vec<bool> = op.parents().iter().map(|p| p.requires_grad()).collect();
    if !needs.contains(&true) {
        return compute();
    }
    let out = no_grad(compute)?;
    let output = op.release(&needs).then(|| out.detach());
    // `Recorded` is Send and Sync: a tensor holds its node, and kiln-nn's modules,
    // which must be Send and Sync, hold tensors. The lint gives up on the cycle of
    // nodes, edges and records.
    #[allow(clippy::arc_with_non_send_sync)]
    let recorded = Arc::new(Recorded { op, needs, output });
    Ok(out.with_node(Node::Op(recorded)))
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
