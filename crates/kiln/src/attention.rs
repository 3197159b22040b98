//! Fused scaled dot-product attention: the scores and their softmax are computed inside
//! one kernel and never written out (`AttentionSpec`).

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{
    AttentionGradLayouts, AttentionSpec, DType, Error, Layout, MatmulOperand, Result, Shape,
};
use std::sync::Arc;

/// What a recorded attention needs for its gradient: the spec and the tensors it reads
/// (the inputs broadcast to the batch, made compact where they had more than two
/// batch dims), and each query's log-sum-exp.
pub(crate) struct AttentionSaved {
    pub spec: AttentionSpec,
    pub inputs: [Tensor; 3],
    pub lse: Tensor,
}

fn operand(l: &Layout) -> MatmulOperand {
    let r = l.strides().len();
    let mut batch = [0; 2];
    for (slot, &s) in batch
        .iter_mut()
        .rev()
        .zip(l.strides()[..r - 2].iter().rev())
    {
        *slot = s;
    }
    MatmulOperand {
        batch,
        row_stride: l.strides()[r - 2],
        col_stride: l.strides()[r - 1],
        offset: l.offset(),
    }
}

impl Tensor {
    /// Scaled dot-product attention of the queries `self` (`[.., L, E]`) over the keys
    /// `k` (`[.., S, E]`) and values `v` (`[.., S, Ev]`), leading dims broadcast as in
    /// `matmul`: `softmax(scale * q k^T) v`, `[.., L, Ev]`. With `causal`, key `j` is
    /// hidden from query `i` when `j > i` (PyTorch's `is_causal`); hidden keys are not
    /// read, so a NaN in them does not reach the output (as in PyTorch's fused kernels).
    /// On a GPU it is one kernel forward and two backward, rows of at most 64 features;
    /// past that, `Error::Unsupported` (compose it from `matmul` and `softmax`). f16
    /// inputs are attended in f32 and the output rounded once, on every device.
    pub fn attention(&self, k: &Tensor, v: &Tensor, causal: bool, scale: f64) -> Result<Tensor> {
        let op = "attention";
        self.same_device(op, k)?;
        self.same_device(op, v)?;
        self.same_dtype(op, k)?;
        self.same_dtype(op, v)?;
        self.require_float(op)?;
        if self.dtype() == DType::F16 {
            // The kernels read f32; the casts carry the gradient back to f16.
            let wide = |t: &Tensor| t.to_dtype(DType::F32);
            let out = wide(self)?.attention(&wide(k)?, &wide(v)?, causal, scale)?;
            return out.to_dtype(DType::F16);
        }
        let mismatch = |other: &Tensor| Error::ShapeMismatch {
            op,
            lhs: self.shape().clone(),
            rhs: other.shape().clone(),
        };
        for t in [self, k, v] {
            if t.rank() < 2 {
                return Err(Error::InvalidShape {
                    op,
                    shape: t.shape().clone(),
                    reason: "q, k and v need at least [rows, features]".into(),
                });
            }
        }
        let last2 = |t: &Tensor| (t.dims()[t.rank() - 2], t.dims()[t.rank() - 1]);
        let ((queries, head_dim), (keys, kd), (vs, value_dim)) = (last2(self), last2(k), last2(v));
        if kd != head_dim {
            return Err(mismatch(k));
        }
        if vs != keys {
            return Err(mismatch(v));
        }
        let batch_of = |t: &Tensor| Shape::from(&t.dims()[..t.rank() - 2]);
        let batch = Shape::broadcast(op, &batch_of(self), &batch_of(k))
            .and_then(|b| Shape::broadcast(op, &b, &batch_of(v)))
            .map_err(|_| mismatch(v))?;
        let full = |t: &Tensor, rows: usize, features: usize| -> Result<Tensor> {
            let dims: Vec<usize> = batch
                .dims()
                .iter()
                .copied()
                .chain([rows, features])
                .collect();
            let t = t.broadcast_to(dims)?;
            match batch.rank() > 2 {
                // The kernels walk two batch dims.
                true => t
                    .contiguous()?
                    .reshape([batch.elem_count(), rows, features]),
                false => Ok(t),
            }
        };
        let inputs = [
            full(self, queries, head_dim)?,
            full(k, keys, head_dim)?,
            full(v, keys, value_dim)?,
        ];
        let dims = inputs[0].dims();
        // The output in the order of q's dims in memory: heads split from one
        // projection (`[b, t, h, d]` viewed as `[b, h, t, d]`) get it rows outermost,
        // so that joining the heads back (`transpose(1, 2)`, `reshape`) is a view, and
        // the output projection and its weight's gradient read it as it lies.
        let kernel_out: Vec<usize> = dims[..dims.len() - 2]
            .iter()
            .copied()
            .chain([queries, value_dim])
            .collect();
        let out_layout = Layout::new(
            Shape::new(kernel_out.clone()),
            strides_in_order_of(inputs[0].layout(), &kernel_out),
            0,
        );
        let spec = AttentionSpec {
            batch: match dims.len() {
                2 => [1, 1],
                3 => [1, dims[0]],
                _ => [dims[0], dims[1]],
            },
            queries,
            keys,
            head_dim,
            value_dim,
            q: operand(inputs[0].layout()),
            k: operand(inputs[1].layout()),
            v: operand(inputs[2].layout()),
            out: operand(&out_layout),
            causal,
            scale,
        };
        let out_dims: Vec<usize> = batch
            .dims()
            .iter()
            .copied()
            .chain([queries, value_dim])
            .collect();
        if keys == 0 {
            // Nothing to attend to: zeros, as the composed product over no keys gives
            // (and PyTorch's), which no input changes.
            return Tensor::zeros(out_dims, self.dtype(), &self.device());
        }
        let (out, lse) = crate::no_grad(|| {
            let [q, k, v] = inputs.each_ref().map(|t| t.storage());
            q.attention(&k, &v, &spec)
        })?;
        let out = Tensor::from_storage(out, [out_layout.elem_count()]).with_layout(out_layout);
        // More than two batch dims were folded into one for the kernels: compact then.
        let out = match out.dims() == out_dims.as_slice() {
            true => out,
            false => out.reshape(out_dims)?,
        };
        let lse = Tensor::from_storage(lse, [spec.heads(), queries]);
        let saved = AttentionSaved { spec, inputs, lse };
        track(
            Op::Attention {
                q: self.into(),
                k: k.into(),
                v: v.into(),
                saved: Box::new(saved),
            },
            || Ok(out),
        )
    }

    /// The gradients of `attention`'s q, k and v, shaped as they were given, from its
    /// output `self` and that output's gradient.
    pub(crate) fn attention_backward(
        &self,
        grad: &Tensor,
        saved: &AttentionSaved,
        shapes: [&Shape; 3],
    ) -> Result<[Tensor; 3]> {
        let s = &saved.spec;
        let heads_dims = saved.inputs[0].dims()[..saved.inputs[0].rank() - 2].to_vec();
        // The gradient as the kernels' batch dims see it (a view unless the batch had
        // more than two dims).
        let grad = match heads_dims.len() == grad.rank() - 2 {
            true => grad.clone(),
            false => {
                let dims: Vec<usize> = heads_dims
                    .iter()
                    .copied()
                    .chain([s.queries, s.value_dim])
                    .collect();
                grad.contiguous()?.reshape(dims)?
            }
        };
        let (grad_layouts, len) = match tiled_storage(&saved.inputs) {
            // Where the inputs lie: their storage's gradient is then this one whole.
            Some(len) => (saved.inputs.each_ref().map(|t| t.layout().clone()), len),
            None => {
                let sizes = [
                    (s.queries, s.head_dim),
                    (s.keys, s.head_dim),
                    (s.keys, s.value_dim),
                ];
                let mut len = 0;
                let layouts = std::array::from_fn(|i| {
                    let (rows, features) = sizes[i];
                    let dims: Vec<usize> =
                        heads_dims.iter().copied().chain([rows, features]).collect();
                    let strides = strides_in_order_of(saved.inputs[i].layout(), &dims);
                    let layout = Layout::new(Shape::new(dims), strides, len);
                    len += layout.elem_count();
                    layout
                });
                (layouts, len)
            }
        };
        let layouts = AttentionGradLayouts {
            grad: operand(grad.layout()),
            dq: operand(&grad_layouts[0]),
            dk: operand(&grad_layouts[1]),
            dv: operand(&grad_layouts[2]),
            len,
        };
        let [q, k, v] = saved.inputs.each_ref().map(|t| t.storage());
        // The output where the forward wrote it (as the kernels' batch dims see it).
        let kernel_out: Vec<usize> = heads_dims
            .iter()
            .copied()
            .chain([s.queries, s.value_dim])
            .collect();
        let out = match self.dims() == kernel_out.as_slice() {
            true => self.clone(),
            false => self.reshape(kernel_out)?,
        };
        let (out, spec) = match operand(out.layout()) == s.out && out.layout().offset() == 0 {
            true => (out, *s),
            false => {
                let out = out.contiguous()?;
                let spec = AttentionSpec {
                    out: operand(out.layout()),
                    ..*s
                };
                (out, spec)
            }
        };
        let storage = q.attention_backward(
            &k,
            &v,
            &out.storage(),
            &saved.lse.storage(),
            &grad.storage(),
            &spec,
            &layouts,
        )?;
        let all = Tensor::from_storage(storage, [len]);
        let mut grads = Vec::with_capacity(3);
        for (layout, shape) in grad_layouts.into_iter().zip(shapes) {
            let g = all.with_layout(layout);
            // Back to the batch dims as given (a view of compact heads), then summed over
            // the dims the input was broadcast along.
            let full: Vec<usize> = self.dims()[..self.rank() - 2]
                .iter()
                .copied()
                .chain(g.dims()[g.rank() - 2..].iter().copied())
                .collect();
            let g = match g.dims() == full {
                true => g,
                false => g.reshape(full)?,
            };
            grads.push(crate::autograd::sum_to(&g, shape)?);
        }
        let [dq, dk, dv]: [Tensor; 3] = grads.try_into().expect("three gradients");
        Ok([dq, dk, dv])
    }
}

/// The length of the storage that q, k and v (`inputs`) are views of, where they tile
/// it: one compact tensor cut into three equal parts along one dim, as heads split
/// from one projection `[.., 3 * embed]` are. Their gradients can then lie where they
/// do, and the projection's gradient is the storage they are written to.
fn tiled_storage(inputs: &[Tensor; 3]) -> Option<usize> {
    let [q, k, v] = inputs;
    let storage = q.storage();
    let same = |t: &Tensor| {
        Arc::ptr_eq(&t.storage(), &storage)
            && t.dims() == q.dims()
            && t.layout().strides() == q.layout().strides()
    };
    let step = k.layout().offset().checked_sub(q.layout().offset())?;
    if !same(k) || !same(v) || q.layout().offset() != 0 || v.layout().offset() != 2 * step {
        return None;
    }
    // The three parts as one more dim, of stride `step`: contiguous once its dims are
    // put in the order of their strides, and the whole storage.
    let (mut dims, mut strides) = (q.dims().to_vec(), q.layout().strides().to_vec());
    dims.push(3);
    strides.push(step);
    let parts = Layout::new(Shape::new(dims), strides, 0);
    let mut order: Vec<usize> = (0..parts.dims().len()).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(parts.strides()[d]));
    let dense = parts.permute(&order).is_contiguous();
    (dense && parts.elem_count() == storage.len()).then_some(storage.len())
}

/// Strides of a compact tensor of `dims` laid out in the order of `like`'s strides
/// (largest outermost, ties in dim order); plain row-major where `like` broadcasts a dim.
fn strides_in_order_of(like: &Layout, dims: &[usize]) -> Vec<usize> {
    let s = like.strides();
    let mut order: Vec<usize> = (0..dims.len()).collect();
    if !s.contains(&0) {
        order.sort_by_key(|&d| std::cmp::Reverse(s[d]));
    }
    let mut strides = vec![0; dims.len()];
    let mut step = 1;
    for &d in order.iter().rev() {
        strides[d] = step;
        step *= dims[d];
    }
    strides
}
