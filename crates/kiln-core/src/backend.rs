//! The contract a backend fulfils. kiln's `Tensor` holds one storage per backend in an
//! enum and calls these methods; view ops never reach a backend (they only rewrite the
//! `Layout`). Elementwise ops, matmul and attention read any strides; the fused ops take compact
//! inputs, which the tensor layer guarantees by copying in one place.

use crate::{
    AttentionGradLayouts, AttentionSpec, BinaryOp, DType, GatherSpec, GruCellSpec, HostBuffer,
    HostSlice, Layout, LstmCellSpec, MatmulSpec, MovingAverageSpec, OptimizerStep, PoolKind,
    ReduceOp, Result, ScatterSpec, UnaryOp, WindowSpec,
};

/// `layer_norm_backward`'s results: the input's gradient, and `grad * x_hat` with a weight.
pub type LayerNormGrads<S> = (S, Option<S>);

pub trait BackendStorage: Sized {
    fn dtype(&self) -> DType;

    /// The elements of `layout`, in row-major order, in host memory (a sync point).
    fn to_host(&self, layout: &Layout) -> Result<HostBuffer>;

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self>;

    /// Both layouts have the same (already broadcast) shape.
    fn binary(
        &self,
        layout: &Layout,
        rhs: &Self,
        rhs_layout: &Layout,
        op: BinaryOp,
    ) -> Result<Self>;

    /// `cond != 0 ? on_true : on_false`; all three layouts share one shape.
    fn where_cond(
        &self,
        layout: &Layout,
        on_true: &Self,
        true_layout: &Layout,
        on_false: &Self,
        false_layout: &Layout,
    ) -> Result<Self>;

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self>;

    /// The elements of `layout` as a fresh compact storage.
    fn compact(&self, layout: &Layout) -> Result<Self>;

    /// The elements of `layout` inside a compact tensor of `dims` filled with `value`,
    /// starting at `before` (one entry per dim).
    fn pad(&self, layout: &Layout, dims: &[usize], before: &[usize], value: f64) -> Result<Self>;

    /// Copies the elements of `layout` into `dst` at `dst_layout` (same shape and dtype).
    fn copy_into(&self, layout: &Layout, dst: &mut Self, dst_layout: &Layout) -> Result<()>;

    /// Reduces each row of a compact `[rows, k]` tensor.
    fn reduce(&self, op: ReduceOp, rows: usize, k: usize) -> Result<Self>;

    /// Reduces the middle dim of a compact `[outer, k, inner]` tensor, giving
    /// `[outer, inner]`; not for the index ops (argmax, argmin).
    fn reduce_middle(&self, op: ReduceOp, outer: usize, k: usize, inner: usize) -> Result<Self>;

    /// Numerically stable (log-)softmax over each row of a compact `[rows, k]` tensor.
    fn softmax(&self, rows: usize, k: usize, log: bool) -> Result<Self>;

    /// The gradient of `softmax` (`log`: `log_softmax`) over each row of compact
    /// `[rows, k]` tensors, from the forward's output (`self`) and that output's
    /// gradient `grad`: `y * (g - sum(g * y))`, or `g - exp(y) * sum(g)`.
    fn softmax_backward(&self, grad: &Self, rows: usize, k: usize, log: bool) -> Result<Self>;

    /// Normalises each row of a compact `[rows, k]` tensor, then scales by `weight` and
    /// shifts by `bias` (both compact `[k]`).
    fn layer_norm(
        &self,
        weight: &Self,
        bias: &Self,
        rows: usize,
        k: usize,
        eps: f32,
    ) -> Result<Self>;

    /// `layer_norm`'s backward pass for a compact `[rows, k]` input, given the output's
    /// gradient `grad` (compact `[rows, k]`) and the compact `[k]` weight, if the norm
    /// has one: the input's gradient, and with a weight `grad * x_hat` (whose sum over
    /// rows is the weight's gradient). A backend with a row kernel for it returns
    /// `Some`; `None` leaves the caller to compose it from elementwise ops and
    /// reductions, which the GPU fuses.
    fn layer_norm_backward(
        &self,
        _grad: &Self,
        _weight: Option<&Self>,
        [_rows, _k]: [usize; 2],
        _eps: f32,
    ) -> Result<Option<LayerNormGrads<Self>>> {
        Ok(None)
    }

    /// Batch norm's statistics of a compact `[outer, c, inner]` tensor (`[n, c, ..]`:
    /// every dim but the channels'), each compact `[c]`: the channels' means, biased
    /// variances, and `1 / sqrt(variance + eps)`.
    fn batch_norm_stats(&self, dims: [usize; 3], eps: f32) -> Result<[Self; 3]>;

    /// `batch_norm_stats`, with `running`'s averages moved toward the batch's in the
    /// same pass where this backend can write over them (each held by nothing but this
    /// handle, no work still to read it): PyTorch's training-mode batch norm, whose
    /// running statistics cost no kernel of their own. Returns the statistics and
    /// whether the averages were moved; when not, they are as they were, for the caller
    /// to move. This default moves none.
    fn batch_norm_stats_running(
        &self,
        dims: [usize; 3],
        eps: f32,
        running: RunningStatsUpdate<'_, Self>,
    ) -> Result<([Self; 3], bool)> {
        let _ = running;
        Ok((self.batch_norm_stats(dims, eps)?, false))
    }

    /// Batch norm's channel sums for its backward pass, of the compact
    /// `[outer, c, inner]` input `self` and its output's gradient `grad`, given the
    /// forward's `mean` and `rstd` (`batch_norm_stats`'): each channel's sum of `grad`
    /// and of `grad * x_hat` with `x_hat = (x - mean) * rstd` (the bias's and the
    /// weight's gradients), each compact `[c]`.
    fn batch_norm_backward_sums(
        &self,
        grad: &Self,
        mean: &Self,
        rstd: &Self,
        dims: [usize; 3],
    ) -> Result<[Self; 2]>;

    fn matmul(&self, rhs: &Self, spec: &MatmulSpec) -> Result<Self>;

    /// Fused attention (`AttentionSpec`) of the queries `self` over the keys `k` and
    /// values `v`: returns the output, `heads * queries * value_dim` elements at
    /// `spec.out` (`AttentionSpec::check_out` first), and each query's log-sum-exp of
    /// its scaled scores, compact `[heads, queries]`, which the backward pass recomputes
    /// the softmax from.
    fn attention(&self, k: &Self, v: &Self, spec: &AttentionSpec) -> Result<(Self, Self)>;

    /// The gradients of `attention`'s `q` (`self`), `k` and `v`, in one storage of
    /// `layouts.len` elements, each where `layouts` says (`AttentionGradLayouts::check`
    /// first), from its output `out` (at `spec.out`), log-sum-exp `lse` and the output's
    /// gradient `grad`, read at `layouts.grad`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        k: &Self,
        v: &Self,
        out: &Self,
        lse: &Self,
        grad: &Self,
        spec: &AttentionSpec,
        layouts: &AttentionGradLayouts,
    ) -> Result<Self>;

    /// Unfolds compact `[n, c, h, w]` into `[n, c*kh*kw, oh*ow]` columns.
    fn im2col(&self, spec: &WindowSpec) -> Result<Self>;

    /// conv2d through unfolded columns, image by image: compact `[n, c, h, w]` input and
    /// `[out_channels, c / groups, kh, kw]` weight give `[n, out_channels, oh, ow]`, as
    /// `im2col` followed by a batched `matmul` would. A backend that unfolds each image
    /// just before its products (the columns read back while still in cache, and never
    /// the whole batch's at once), or that reads the columns from the image inside its
    /// product, returns `Some`; `None` leaves the caller to compose `im2col` and
    /// `matmul`.
    fn conv2d_unfolded(
        &self,
        _weight: &Self,
        _spec: &WindowSpec,
        _out_channels: usize,
        _groups: usize,
    ) -> Result<Option<Self>> {
        Ok(None)
    }

    /// Grouped conv2d computed directly: compact `[n, c, h, w]` input and
    /// `[out_channels, c / groups, kh, kw]` weight give `[n, out_channels, oh, ow]`.
    fn conv2d_direct(
        &self,
        weight: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Self>;

    /// A transposed convolution in one pass, without columns to fold: compact
    /// `[n, in_channels, spec.oh, spec.ow]` input and `[in_channels, spec.c / groups,
    /// kh, kw]` weight give `[n, spec.c, spec.h, spec.w]` (`spec`: the fold's geometry),
    /// as a batched `matmul` then `col2im` would. A backend that can (the GPU's: at
    /// stride 1 a convolution whose taps step backwards, strided one over the output's
    /// phases) returns `Some`; `None` leaves the caller to compose `matmul` and `col2im`.
    fn conv_transpose2d_as_conv(
        &self,
        _weight: &Self,
        _spec: &WindowSpec,
        _in_channels: usize,
        _groups: usize,
    ) -> Result<Option<Self>> {
        Ok(None)
    }

    /// Folds `[n, c*kh*kw, h*w]` columns back into `[n, c, oh, ow]`, summing overlaps:
    /// the adjoint of `im2col` with input and output sizes exchanged.
    fn col2im(&self, spec: &WindowSpec) -> Result<Self>;

    /// Max over each window; returns values and the flat `h*w` index of each maximum (i32).
    fn max_pool2d(&self, spec: &WindowSpec) -> Result<(Self, Self)>;

    fn avg_pool2d(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Self>;

    /// `index` is i32; indices were validated by the caller when it could see them.
    fn gather(&self, index: &Self, spec: &GatherSpec) -> Result<Self>;

    fn scatter_add(&self, index: &Self, src: &Self, spec: &ScatterSpec) -> Result<Self>;

    /// Weight gradient of a convolution: `self` is its compact input `[n, c, h, w]`,
    /// `dy` the compact upstream gradient `[n, o, oh, ow]`; returns `[o, c/groups, kh, kw]`.
    /// With input and gradient exchanged it is also the weight gradient of
    /// `conv_transpose2d`.
    fn conv2d_weight_grad(
        &self,
        dy: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Self>;

    /// Gradient of `max_pool2d`: `self` is the compact upstream gradient `[n, c, oh, ow]`,
    /// `indices` the forward's; returns `[n, c, h, w]`, summing where windows overlap.
    fn max_pool2d_backward(&self, indices: &Self, spec: &WindowSpec) -> Result<Self>;

    /// Gradient of `avg_pool2d` (or the adaptive form): `self` is the compact upstream
    /// gradient `[n, c, oh, ow]`; returns `[n, c, h, w]`.
    fn avg_pool2d_backward(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Self>;

    /// Per-row cross-entropy of compact logits `[rows, classes]` against i32 class ids,
    /// with label smoothing; returns `[rows]`.
    fn cross_entropy(
        &self,
        targets: &Self,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Self>;

    /// Gradient of `cross_entropy` with respect to the logits (`self`), given the
    /// upstream gradient of each row's loss `dloss [rows]`: one fused pass.
    fn cross_entropy_backward(
        &self,
        targets: &Self,
        dloss: &Self,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Self>;

    /// One fused LSTM step (`LstmCellSpec`): `self` is the compact gate pre-activations,
    /// `c` the compact cell state; returns `[h | c']`.
    fn lstm_cell(&self, c: &Self, spec: &LstmCellSpec) -> Result<Self>;

    /// Gradient of `lstm_cell` given the compact upstream gradients of its `h` and `c'`
    /// (`[batch, hidden]` each): returns the gradients of the gate pre-activations and
    /// of the cell state.
    fn lstm_cell_backward(
        &self,
        c: &Self,
        dh: &Self,
        dc: &Self,
        spec: &LstmCellSpec,
    ) -> Result<(Self, Self)>;

    /// One fused GRU step (`GruCellSpec`): `self` is the compact input projection, `hp`
    /// the compact hidden projection, `h` the compact hidden state; returns `h'`.
    fn gru_cell(&self, hp: &Self, h: &Self, spec: &GruCellSpec) -> Result<Self>;

    /// Gradient of `gru_cell` given the compact upstream gradient of `h'`: returns the
    /// gradients of the input projection, the hidden projection and the hidden state.
    fn gru_cell_backward(
        &self,
        hp: &Self,
        h: &Self,
        grad: &Self,
        spec: &GruCellSpec,
    ) -> Result<(Self, Self, Self)>;

    /// One fused optimizer step of the compact parameter `self`, with its compact
    /// gradient (taken times `grad_scale`) and `step.states()` compact state tensors,
    /// all of `self`'s dtype and length: returns the new parameter and the new states,
    /// in order.
    fn optimizer_update(
        &self,
        grad: &Self,
        grad_scale: f32,
        states: &[&Self],
        step: &OptimizerStep,
    ) -> Result<(Self, Vec<Self>)>;

    /// `optimizer_update` of each parameter in `updates`, all with `step`; a backend
    /// may run several in one launch. Returns each new parameter and its states, in
    /// order.
    fn optimizer_update_all(
        updates: &[ParamUpdate<'_, Self>],
        step: &OptimizerStep,
    ) -> Result<Vec<(Self, Vec<Self>)>> {
        updates
            .iter()
            .map(|u| {
                u.param
                    .optimizer_update(u.grad, u.grad_scale, &u.states, step)
            })
            .collect()
    }

    /// `optimizer_update_all` written over each parameter and its states where this
    /// backend can: an update is stepped in place when, its gradient computed, nothing
    /// but these handles holds its parameter's and states' data (no other handle to it,
    /// no work still to read it). Returns which updates were; the others are left as
    /// they were, for the caller to step into new storage. This default steps none.
    fn optimizer_update_in_place(
        updates: &mut [ParamUpdateInPlace<'_, Self>],
        step: &OptimizerStep,
    ) -> Result<Vec<bool>> {
        let _ = step;
        Ok(vec![false; updates.len()])
    }
}

/// One parameter's part of an optimizer step: the parameter, its gradient and its
/// `step.states()` state tensors, with `BackendStorage::optimizer_update`'s terms.
pub struct ParamUpdate<'a, S> {
    pub param: &'a S,
    pub grad: &'a S,
    pub states: Vec<&'a S>,
    /// The step takes `grad_scale * grad` as the gradient (1 for the gradient as it
    /// is), so that updates scaled apart (batch norm's unbiased variance) share a
    /// launch and no scaled copy is written.
    pub grad_scale: f32,
}

/// One parameter's part of an in-place optimizer step (`optimizer_update_in_place`):
/// the parameter and its states, written over, and its gradient, scaled by
/// `grad_scale` as in `ParamUpdate`.
pub struct ParamUpdateInPlace<'a, S> {
    pub param: &'a mut S,
    pub grad: &'a S,
    pub states: Vec<&'a mut S>,
    pub grad_scale: f32,
}

/// Batch norm's running statistics, each `[c]` in the input's dtype, and how a batch
/// moves them (`batch_norm_stats_running`): `mean' = decay * mean + (1 - decay) *
/// batch_mean` and `var' = decay * var + (1 - decay) * var_scale * batch_var`, the
/// moving average of `OptimizerStep::MovingAverage` (`var_scale` makes the batch's
/// biased variance the unbiased one).
pub struct RunningStatsUpdate<'a, S> {
    pub mean: &'a mut S,
    pub var: &'a mut S,
    pub average: MovingAverageSpec,
    pub var_scale: f32,
}

/// What a device can create from nothing.
pub trait BackendDevice {
    type Storage: BackendStorage;

    fn zeros(&self, n: usize, dtype: DType) -> Result<Self::Storage>;
    fn full(&self, n: usize, dtype: DType, value: f64) -> Result<Self::Storage>;
    /// A storage holding a copy of `data`.
    fn upload(&self, data: HostSlice<'_>) -> Result<Self::Storage>;
    /// A storage holding `data`, which the caller gives up: a backend that keeps its
    /// tensors in host memory takes it without a copy.
    fn upload_owned(&self, data: HostBuffer) -> Result<Self::Storage> {
        self.upload(data.as_slice())
    }
    /// Uniform `[0, 1)` from Philox words (see `philox`).
    fn rand_uniform(&self, n: usize, dtype: DType, seed: u64, stream: u64)
        -> Result<Self::Storage>;
    /// 1 with probability `p`, else 0.
    fn bernoulli(
        &self,
        n: usize,
        dtype: DType,
        p: f64,
        seed: u64,
        stream: u64,
    ) -> Result<Self::Storage>;
}
