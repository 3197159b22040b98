//! The backend contract (`kiln_core::BackendStorage`, `BackendDevice`) for the GPU:
//! each method forwards to its launcher in `ops/`. Callers have checked dtypes and
//! arguments (the tensor API does, through the op table).

use crate::device::GpuDevice;
use crate::ops;
use crate::storage::GpuStorage;
use kiln_core::{
    AttentionGradLayouts, AttentionSpec, BackendDevice, BackendStorage, BinaryOp, DType,
    GatherSpec, GruCellSpec, HostBuffer, HostSlice, LayerNormGrads, Layout, LstmCellSpec,
    MatmulSpec, OptimizerStep, ParamUpdate, ParamUpdateInPlace, PoolKind, ReduceOp, Result,
    RunningStatsUpdate, ScatterSpec, UnaryOp, WindowSpec,
};

impl BackendStorage for GpuStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn to_host(&self, layout: &Layout) -> Result<HostBuffer> {
        let mapped = self.read_mapped("to_vec", layout)?;
        let n = layout.elem_count();
        Ok(crate::readback::host_from_mapped(
            self.dtype,
            mapped.bytes(),
            n,
        ))
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        ops::elementwise::unary(self, layout, op)
    }

    fn binary(
        &self,
        layout: &Layout,
        rhs: &Self,
        rhs_layout: &Layout,
        op: BinaryOp,
    ) -> Result<Self> {
        ops::elementwise::binary(self, layout, rhs, rhs_layout, op)
    }

    fn where_cond(
        &self,
        layout: &Layout,
        on_true: &Self,
        tl: &Layout,
        on_false: &Self,
        fl: &Layout,
    ) -> Result<Self> {
        ops::elementwise::where_cond(self, layout, on_true, tl, on_false, fl)
    }

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        ops::elementwise::cast(self, layout, dtype)
    }

    fn pad(&self, layout: &Layout, dims: &[usize], before: &[usize], value: f64) -> Result<Self> {
        ops::elementwise::pad(self, layout, dims, before, value)
    }

    fn compact(&self, layout: &Layout) -> Result<Self> {
        ops::elementwise::compact(self, layout)
    }

    fn copy_into(&self, layout: &Layout, dst: &mut Self, dst_layout: &Layout) -> Result<()> {
        ops::elementwise::copy_into(self, layout, dst, dst_layout)
    }

    fn reduce(&self, op: ReduceOp, rows: usize, k: usize) -> Result<Self> {
        ops::reduce::reduce(self, op, rows, k)
    }

    fn reduce_middle(&self, op: ReduceOp, outer: usize, k: usize, inner: usize) -> Result<Self> {
        ops::reduce::reduce_middle(self, op, outer, k, inner)
    }

    fn softmax(&self, rows: usize, k: usize, log: bool) -> Result<Self> {
        ops::reduce::softmax(self, rows, k, log)
    }

    fn softmax_backward(&self, grad: &Self, rows: usize, k: usize, log: bool) -> Result<Self> {
        ops::reduce::softmax_backward(self, grad, rows, k, log)
    }

    fn layer_norm(
        &self,
        weight: &Self,
        bias: &Self,
        rows: usize,
        k: usize,
        eps: f32,
    ) -> Result<Self> {
        ops::norm::layer_norm(self, weight, bias, rows, k, eps)
    }

    fn layer_norm_backward(
        &self,
        grad: &Self,
        weight: Option<&Self>,
        [rows, k]: [usize; 2],
        eps: f32,
    ) -> Result<Option<LayerNormGrads<Self>>> {
        ops::norm::layer_norm_backward(self, grad, weight, rows, k, eps).map(Some)
    }

    fn batch_norm_stats(&self, dims: [usize; 3], eps: f32) -> Result<[Self; 3]> {
        ops::batch_norm::batch_norm_stats(self, dims, eps)
    }

    fn batch_norm_stats_running(
        &self,
        dims: [usize; 3],
        eps: f32,
        running: RunningStatsUpdate<'_, Self>,
    ) -> Result<([Self; 3], bool)> {
        ops::batch_norm::batch_norm_stats_running(self, dims, eps, running)
    }

    fn batch_norm_backward_sums(
        &self,
        grad: &Self,
        mean: &Self,
        rstd: &Self,
        dims: [usize; 3],
    ) -> Result<[Self; 2]> {
        ops::batch_norm::batch_norm_backward_sums(self, grad, mean, rstd, dims)
    }

    fn matmul(&self, rhs: &Self, spec: &MatmulSpec) -> Result<Self> {
        ops::matmul::matmul(self, rhs, spec)
    }

    fn attention(&self, k: &Self, v: &Self, spec: &AttentionSpec) -> Result<(Self, Self)> {
        ops::attention::attention(self, k, v, spec)
    }

    fn attention_backward(
        &self,
        k: &Self,
        v: &Self,
        out: &Self,
        lse: &Self,
        grad: &Self,
        spec: &AttentionSpec,
        layouts: &AttentionGradLayouts,
    ) -> Result<Self> {
        ops::attention::attention_backward(self, k, v, out, lse, grad, spec, layouts)
    }

    fn im2col(&self, spec: &WindowSpec) -> Result<Self> {
        ops::conv::im2col(self, spec)
    }

    fn conv2d_unfolded(
        &self,
        weight: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Option<Self>> {
        ops::conv_product::conv2d(self, weight, spec, out_channels, groups).map(Some)
    }

    fn conv2d_direct(
        &self,
        weight: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Self> {
        ops::conv::conv2d_direct(self, weight, spec, out_channels, groups)
    }

    fn conv_transpose2d_as_conv(
        &self,
        weight: &Self,
        spec: &WindowSpec,
        in_channels: usize,
        groups: usize,
    ) -> Result<Option<Self>> {
        ops::conv_product::conv_transpose2d_as_conv(self, weight, spec, in_channels, groups)
    }

    fn col2im(&self, spec: &WindowSpec) -> Result<Self> {
        ops::conv::col2im(self, spec)
    }

    fn max_pool2d(&self, spec: &WindowSpec) -> Result<(Self, Self)> {
        ops::pool::max_pool2d(self, spec)
    }

    fn avg_pool2d(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Self> {
        ops::pool::avg_pool2d(self, spec, kind)
    }

    fn gather(&self, index: &Self, spec: &GatherSpec) -> Result<Self> {
        ops::index::gather(self, index, spec)
    }

    fn scatter_add(&self, index: &Self, src: &Self, spec: &ScatterSpec) -> Result<Self> {
        ops::index::scatter_add(self, index, src, spec)
    }

    fn conv2d_weight_grad(
        &self,
        dy: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Self> {
        ops::conv_weight_grad::conv2d_weight_grad(self, dy, spec, out_channels, groups)
    }

    fn max_pool2d_backward(&self, indices: &Self, spec: &WindowSpec) -> Result<Self> {
        ops::pool::max_pool2d_backward(self, indices, spec)
    }

    fn avg_pool2d_backward(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Self> {
        ops::pool::avg_pool2d_backward(self, spec, kind)
    }

    fn cross_entropy(
        &self,
        targets: &Self,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Self> {
        ops::loss::cross_entropy(self, targets, rows, classes, smoothing)
    }

    fn cross_entropy_backward(
        &self,
        targets: &Self,
        dloss: &Self,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Self> {
        ops::loss::cross_entropy_backward(self, targets, dloss, rows, classes, smoothing)
    }

    fn lstm_cell(&self, c: &Self, spec: &LstmCellSpec) -> Result<Self> {
        ops::rnn::lstm_cell(self, c, spec)
    }

    fn lstm_cell_backward(
        &self,
        c: &Self,
        dh: &Self,
        dc: &Self,
        spec: &LstmCellSpec,
    ) -> Result<(Self, Self)> {
        ops::rnn::lstm_cell_backward(self, c, dh, dc, spec)
    }

    fn gru_cell(&self, hp: &Self, h: &Self, spec: &GruCellSpec) -> Result<Self> {
        ops::rnn::gru_cell(self, hp, h, spec)
    }

    fn gru_cell_backward(
        &self,
        hp: &Self,
        h: &Self,
        grad: &Self,
        spec: &GruCellSpec,
    ) -> Result<(Self, Self, Self)> {
        ops::rnn::gru_cell_backward(self, hp, h, grad, spec)
    }

    fn optimizer_update(
        &self,
        grad: &Self,
        grad_scale: f32,
        states: &[&Self],
        step: &OptimizerStep,
    ) -> Result<(Self, Vec<Self>)> {
        let update = ParamUpdate {
            param: self,
            grad,
            states: states.to_vec(),
            grad_scale,
        };
        let mut out = ops::optim::update_all(&[update], step)?;
        Ok(out.pop().expect("one result per update"))
    }

    fn optimizer_update_all(
        updates: &[ParamUpdate<'_, Self>],
        step: &OptimizerStep,
    ) -> Result<Vec<(Self, Vec<Self>)>> {
        ops::optim::update_all(updates, step)
    }

    fn optimizer_update_in_place(
        updates: &mut [ParamUpdateInPlace<'_, Self>],
        step: &OptimizerStep,
    ) -> Result<Vec<bool>> {
        ops::optim::update_in_place(updates, step)
    }
}

impl BackendDevice for GpuDevice {
    type Storage = GpuStorage;

    fn zeros(&self, n: usize, dtype: DType) -> Result<GpuStorage> {
        ops::create::zeros(self, n, dtype)
    }

    fn full(&self, n: usize, dtype: DType, value: f64) -> Result<GpuStorage> {
        ops::create::full(self, n, dtype, value)
    }

    fn upload(&self, data: HostSlice<'_>) -> Result<GpuStorage> {
        ops::create::upload(self, data)
    }

    fn rand_uniform(&self, n: usize, dtype: DType, seed: u64, stream: u64) -> Result<GpuStorage> {
        ops::random::philox(self, n, dtype, 0, 0, seed, stream)
    }

    fn bernoulli(
        &self,
        n: usize,
        dtype: DType,
        p: f64,
        seed: u64,
        stream: u64,
    ) -> Result<GpuStorage> {
        ops::random::philox(
            self,
            n,
            dtype,
            1,
            kiln_core::philox::bernoulli_threshold(p),
            seed,
            stream,
        )
    }
}
