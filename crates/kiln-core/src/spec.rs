//! The geometry of the fused kernels: matmul, convolution, pooling, gather/scatter.

/// How one matmul operand is read: element `(b0, b1, row, col)` sits at
/// `offset + b0*batch[0] + b1*batch[1] + row*row_stride + col*col_stride`.
/// Transposed and broadcast operands are just other strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MatmulOperand {
    pub batch: [usize; 2],
    pub row_stride: usize,
    pub col_stride: usize,
    pub offset: usize,
}

/// `out[b0, b1] = lhs[b0, b1] (m x k) @ rhs[b0, b1] (k x n)`, output compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    pub batch: [usize; 2],
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs: MatmulOperand,
    pub rhs: MatmulOperand,
}

/// Geometry of a 2-D sliding window over a compact NCHW tensor: used by im2col
/// (convolution), col2im (transposed convolution) and pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub n: usize,
    pub c: usize,
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl WindowSpec {
    /// Output size of a window sweep, or `None` when the window does not fit.
    pub fn out_size(
        input: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> Option<usize> {
        let span = dilation * (k - 1) + 1;
        (input + 2 * pad).checked_sub(span).map(|r| r / stride + 1)
    }
}

/// `out[o, j, i] = input[o, index[o, j, i], i]` over compact `[outer, dim, inner]` input;
/// the index is read through `index_strides` (outer, j, inner) so that one kernel
/// serves gather (a full index) and index_select (a 1-D index, strides `[0, 1, 0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherSpec {
    pub outer: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    pub inner: usize,
    pub index_strides: [usize; 3],
}

/// `out = input; out[o, index[o, j, i], i] += src[o, j, i]`, summed in index order so
/// the result is deterministic (no float atomics). The index is read at
/// `index_strides` (outer, src, inner): a full index `[src_dim * inner, inner, 1]`, or
/// index_select's gradient, one index per source row shared by the rest, `[0, 1, 0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterSpec {
    pub outer: usize,
    pub dim: usize,
    pub src_dim: usize,
    pub inner: usize,
    pub index_strides: [usize; 3],
}

/// Pooling flavours sharing one window geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Average over the window; padding counts towards the divisor when set.
    Avg { count_include_pad: bool },
    /// PyTorch's adaptive windows: `[floor(i*H/OH), ceil((i+1)*H/OH))`.
    AdaptiveAvg,
}

/// One Adam (or AdamW) update of a parameter, as PyTorch defines it, with the step's
/// bias corrections already folded in:
///
/// ```text
/// g  = grad + coupled_decay * p            (Adam's L2 weight decay)
/// p  = p * decay_factor                    (AdamW: 1 - lr * weight_decay)
/// m' = m + (1 - beta1) * (g - m)          (= beta1 * m + (1 - beta1) * g)
/// v' = v + (1 - beta2) * (g^2 - v)
/// p' = p - step_size * m' / (sqrt(v' * inv_correction2) + eps)
/// ```
/// with `step_size = lr / (1 - beta1^t)` and `inv_correction2 = 1 / (1 - beta2^t)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamSpec {
    /// `1 - beta1` and `1 - beta2`, computed in f64 before rounding to f32: `1 - 0.999`
    /// from an f32 0.999 would be off by 1.3e-5, and so would every update's size.
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    pub step_size: f32,
    pub inv_correction2: f32,
    pub coupled_decay: f32,
    pub decay_factor: f32,
}

/// One step of SGD with momentum (PyTorch's, without dampening):
///
/// ```text
/// g    = grad + weight_decay * p
/// buf' = momentum * buf + g                (buf starts at zero, so step one gives g)
/// p'   = p - lr * (nesterov ? g + momentum * buf' : buf')
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdSpec {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// One step of RMSprop (PyTorch's, not centred, no momentum):
///
/// ```text
/// g    = grad + weight_decay * p
/// avg' = avg + (1 - alpha) * (g^2 - avg)
/// p'   = p - lr * g / (sqrt(avg') + eps)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropSpec {
    pub lr: f32,
    /// `1 - alpha`, computed in f64 (as Adam's complements are).
    pub one_minus_alpha: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// An exponential moving average, PyTorch's running statistics of batch norm and its
/// `AveragedModel` with an EMA update: the "parameter" is the average and the
/// "gradient" the value averaged in (each update's `grad_scale` times it):
///
/// ```text
/// p' = decay * p + (1 - decay) * grad
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MovingAverageSpec {
    pub decay: f32,
    /// `1 - decay`, computed in f64 (as Adam's complements are).
    pub one_minus_decay: f32,
}

/// A fused update of one tensor from another, written once: an optimizer step of a
/// parameter and the state it carries, or a moving average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerStep {
    /// State: the first and second moments.
    Adam(AdamSpec),
    /// State: the momentum buffer; none without momentum (`momentum` 0, plain SGD),
    /// as PyTorch keeps none.
    SgdMomentum(SgdSpec),
    /// State: the running average of squared gradients.
    RmsProp(RmsPropSpec),
    /// No state.
    MovingAverage(MovingAverageSpec),
}

impl OptimizerStep {
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerStep::Adam(_) => "adam",
            OptimizerStep::SgdMomentum(_) => "sgd",
            OptimizerStep::RmsProp(_) => "rmsprop",
            OptimizerStep::MovingAverage(_) => "moving_average",
        }
    }

    /// How many state tensors the step reads and writes, each the parameter's shape.
    pub fn states(&self) -> usize {
        match self {
            OptimizerStep::Adam(_) => 2,
            OptimizerStep::SgdMomentum(s) if s.momentum == 0.0 => 0,
            OptimizerStep::MovingAverage(_) => 0,
            OptimizerStep::SgdMomentum(_) | OptimizerStep::RmsProp(_) => 1,
        }
    }
}

/// One LSTM time step from the gate pre-activations `z = [i | f | g | o]` (`[batch,
/// 4 * hidden]`, PyTorch's gate order) and the cell state `c` (`[batch, hidden]`):
///
/// ```text
/// c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
/// h  = sigmoid(o) * tanh(c')
/// ```
/// returned side by side as `[batch, 2 * hidden] = [h | c']`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmCellSpec {
    pub batch: usize,
    pub hidden: usize,
}

/// One GRU time step from the input projection `x = [r | z | n]` and the hidden
/// projection `hp = [r | z | n]` (both `[batch, 3 * hidden]`, biases included,
/// PyTorch's gate order) and the hidden state `h` (`[batch, hidden]`):
///
/// ```text
/// r  = sigmoid(x_r + hp_r),  z = sigmoid(x_z + hp_z),  n = tanh(x_n + r * hp_n)
/// h' = (1 - z) * n + z * h
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GruCellSpec {
    pub batch: usize,
    pub hidden: usize,
}

/// Scaled dot-product attention over `batch[0] * batch[1]` heads, fused: for each query
/// row `q_i` (`head_dim` features) over `keys` rows of `k` and `v` (`value_dim`
/// features), `out_i = sum_j softmax_j(scale * q_i . k_j) v_j`, with key `j` hidden from
/// query `i` when `causal` and `j > i` (PyTorch's top-left triangle). Hidden keys are
/// not read at all, as in PyTorch's fused kernels. Operands are read through their
/// strides (`MatmulOperand`: rows are positions, columns features); the output is
/// written at `out`'s (a dense layout: heads split from one projection get their output
/// in the projection's order, rows outermost, so that joining the heads is a view) and
/// the log-sum-exp compact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    pub batch: [usize; 2],
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
    pub value_dim: usize,
    pub q: MatmulOperand,
    pub k: MatmulOperand,
    pub v: MatmulOperand,
    pub out: MatmulOperand,
    pub causal: bool,
    pub scale: f64,
}

/// Where `attention_backward` reads the output's gradient and writes the gradients of
/// q, k and v, each as (batch, row, feature) strides and an offset, into one storage of
/// `len` elements that the three fill. Side by side, each compact in the order of its
/// input's dims; or, where q, k and v were views that tile one storage (heads split
/// from one projection), at their inputs' own places, so that the projection's
/// gradient is that storage, assembled by no copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionGradLayouts {
    pub grad: MatmulOperand,
    pub dq: MatmulOperand,
    pub dk: MatmulOperand,
    pub dv: MatmulOperand,
    pub len: usize,
}

impl AttentionGradLayouts {
    /// An error unless each gradient of `spec` lies inside the `len` elements and the
    /// three together have `len` elements (kernels write through these strides
    /// unchecked, and an element none writes would be left as the allocator gave it).
    pub fn check(&self, spec: &AttentionSpec) -> crate::Result<()> {
        let op = "attention_backward";
        let b1 = spec.batch[1].max(1);
        let b0 = spec.heads() / b1;
        let grads = [
            (self.dq, spec.queries, spec.head_dim),
            (self.dk, spec.keys, spec.head_dim),
            (self.dv, spec.keys, spec.value_dim),
        ];
        let mut filled = 0;
        for (at, rows, features) in grads {
            let count = spec.heads() * rows * features;
            filled += count;
            if count == 0 {
                continue;
            }
            let last = at.offset
                + (b0 - 1) * at.batch[0]
                + (b1 - 1) * at.batch[1]
                + (rows - 1) * at.row_stride
                + (features - 1) * at.col_stride;
            if last >= self.len {
                return Err(crate::Error::InvalidArgument {
                    op,
                    reason: format!(
                        "a gradient reaches element {last} of a storage of {}",
                        self.len
                    ),
                });
            }
        }
        if filled != self.len {
            return Err(crate::Error::InvalidArgument {
                op,
                reason: format!(
                    "the gradients have {filled} elements, their storage {}",
                    self.len
                ),
            });
        }
        Ok(())
    }
}

impl AttentionSpec {
    pub fn heads(&self) -> usize {
        self.batch[0] * self.batch[1]
    }

    /// Whether key `j` is hidden from query `i`.
    pub fn hides(&self, i: usize, j: usize) -> bool {
        self.causal && j > i
    }

    /// An error unless `out` places the `heads * queries * value_dim` output elements
    /// one to each element of a storage of that many from its start (kernels write
    /// through these strides unchecked): a compact layout of the dims in some order.
    pub fn check_out(&self) -> crate::Result<()> {
        let b1 = self.batch[1].max(1);
        let o = &self.out;
        let mut dims = [
            (self.heads() / b1, o.batch[0]),
            (b1, o.batch[1]),
            (self.queries, o.row_stride),
            (self.value_dim, o.col_stride),
        ];
        // Dims of one element place nothing.
        dims.sort_by_key(|&(size, stride)| (size > 1, stride));
        let mut next = 1;
        let mut dense = o.offset == 0;
        for (size, stride) in dims.into_iter().filter(|&(size, _)| size > 1) {
            dense &= stride == next;
            next *= size;
        }
        if !dense && self.heads() * self.queries * self.value_dim > 0 {
            return Err(crate::Error::InvalidArgument {
                op: "attention",
                reason: format!("the output's layout {o:?} is not a dense one"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AttentionSpec {
        let compact = MatmulOperand::default();
        AttentionSpec {
            batch: [2, 3],
            queries: 5,
            keys: 4,
            head_dim: 2,
            value_dim: 3,
            q: compact,
            k: compact,
            v: compact,
            out: compact_out(),
            causal: false,
            scale: 1.0,
        }
    }

    /// The output compact `[2, 3, 5, 3]`.
    fn compact_out() -> MatmulOperand {
        compact(5, 3, 0)
    }

    #[test]
    fn attention_outputs_must_be_dense() {
        let mut s = spec();
        s.check_out().unwrap();
        // Rows outermost within a batch, heads next: heads split from one projection.
        s.out = MatmulOperand {
            batch: [5 * 3 * 3, 3],
            row_stride: 3 * 3,
            col_stride: 1,
            offset: 0,
        };
        s.check_out().unwrap();
        for bad in [
            MatmulOperand {
                offset: 1,
                ..compact_out()
            },
            MatmulOperand {
                row_stride: 4,
                ..compact_out()
            },
            MatmulOperand {
                batch: [45, 9],
                ..compact_out()
            },
            MatmulOperand::default(),
        ] {
            s.out = bad;
            assert!(s.check_out().is_err(), "{bad:?}");
        }
    }

    /// A compact `[2, 3, rows, features]` gradient starting at `offset`.
    fn compact(rows: usize, features: usize, offset: usize) -> MatmulOperand {
        MatmulOperand {
            batch: [3 * rows * features, rows * features],
            row_stride: features,
            col_stride: 1,
            offset,
        }
    }

    #[test]
    fn attention_gradients_must_fill_their_storage_and_stay_in_it() {
        let s = spec();
        let (nq, nk, nv) = (6 * 5 * 2, 6 * 4 * 2, 6 * 4 * 3);
        let side_by_side = AttentionGradLayouts {
            grad: MatmulOperand::default(),
            dq: compact(5, 2, 0),
            dk: compact(4, 2, nq),
            dv: compact(4, 3, nq + nk),
            len: nq + nk + nv,
        };
        assert!(side_by_side.check(&s).is_ok());
        let past_the_end = AttentionGradLayouts {
            dv: compact(4, 3, nq + nk + 1),
            ..side_by_side
        };
        assert!(past_the_end.check(&s).is_err());
        let gap = AttentionGradLayouts {
            len: nq + nk + nv + 1,
            ..side_by_side
        };
        assert!(gap.check(&s).is_err());
    }
}
