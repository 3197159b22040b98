//! A tensor's data on whichever backend holds it. Each method forwards to the
//! backend's `BackendStorage` impl; mixing devices is an error, not a panic.

use crate::Device;
use kiln_core::{
    AttentionGradLayouts, AttentionSpec, BackendStorage, BinaryOp, DType, Error, GatherSpec,
    GruCellSpec, HostBuffer, LayerNormGrads, Layout, LstmCellSpec, MatmulSpec, MovingAverageSpec,
    OptimizerStep, ParamUpdate, ParamUpdateInPlace, PoolKind, ReduceOp, Result, RunningStatsUpdate,
    ScatterSpec, Shape, UnaryOp, WindowSpec,
};
use kiln_cpu::CpuStorage;
use kiln_wgpu::GpuStorage;

pub(crate) enum Storage {
    Cpu(CpuStorage),
    Gpu(GpuStorage),
}

/// Forwards a call with one storage argument.
macro_rules! unary_forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Storage::Cpu($s) => Ok(Storage::Cpu($call?)),
            Storage::Gpu($s) => Ok(Storage::Gpu($call?)),
        }
    };
}

fn mismatch(op: &'static str) -> Error {
    Error::DeviceMismatch {
        op,
        lhs: "cpu".into(),
        rhs: "gpu".into(),
    }
}

impl Storage {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Gpu(s) => s.dtype(),
        }
    }

    /// Bounds of every (i32) element that are known without reading the data: from
    /// the host values a GPU storage was made of. Always `None` on the CPU, where
    /// reading is free.
    pub(crate) fn known_range(&self) -> Option<(i32, i32)> {
        match self {
            Storage::Cpu(_) => None,
            Storage::Gpu(s) => s.known_range(),
        }
    }

    /// Elements the storage holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.0.len(),
            Storage::Gpu(s) => s.len(),
        }
    }

    pub(crate) fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(s) => Device::Gpu(s.device().clone()),
        }
    }

    pub(crate) fn to_host(&self, layout: &Layout) -> Result<HostBuffer> {
        match self {
            Storage::Cpu(s) => s.to_host(layout),
            Storage::Gpu(s) => s.to_host(layout),
        }
    }

    pub(crate) fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Storage> {
        unary_forward!(self, s => s.unary(layout, op))
    }

    pub(crate) fn cast(&self, layout: &Layout, dtype: DType) -> Result<Storage> {
        unary_forward!(self, s => s.cast(layout, dtype))
    }

    pub(crate) fn pad(
        &self,
        layout: &Layout,
        dims: &[usize],
        before: &[usize],
        value: f64,
    ) -> Result<Storage> {
        unary_forward!(self, s => s.pad(layout, dims, before, value))
    }

    pub(crate) fn compact(&self, layout: &Layout) -> Result<Storage> {
        unary_forward!(self, s => s.compact(layout))
    }

    pub(crate) fn reduce(&self, op: ReduceOp, rows: usize, k: usize) -> Result<Storage> {
        unary_forward!(self, s => s.reduce(op, rows, k))
    }

    pub(crate) fn reduce_middle(
        &self,
        op: ReduceOp,
        outer: usize,
        k: usize,
        inner: usize,
    ) -> Result<Storage> {
        unary_forward!(self, s => s.reduce_middle(op, outer, k, inner))
    }

    pub(crate) fn softmax(&self, rows: usize, k: usize, log: bool) -> Result<Storage> {
        unary_forward!(self, s => s.softmax(rows, k, log))
    }

    pub(crate) fn im2col(&self, spec: &WindowSpec) -> Result<Storage> {
        unary_forward!(self, s => s.im2col(spec))
    }

    pub(crate) fn col2im(&self, spec: &WindowSpec) -> Result<Storage> {
        unary_forward!(self, s => s.col2im(spec))
    }

    pub(crate) fn avg_pool2d(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Storage> {
        unary_forward!(self, s => s.avg_pool2d(spec, kind))
    }

    pub(crate) fn max_pool2d(&self, spec: &WindowSpec) -> Result<(Storage, Storage)> {
        match self {
            Storage::Cpu(s) => s
                .max_pool2d(spec)
                .map(|(v, i)| (Storage::Cpu(v), Storage::Cpu(i))),
            Storage::Gpu(s) => s
                .max_pool2d(spec)
                .map(|(v, i)| (Storage::Gpu(v), Storage::Gpu(i))),
        }
    }

    pub(crate) fn binary(
        &self,
        layout: &Layout,
        rhs: &Storage,
        rhs_layout: &Layout,
        op: BinaryOp,
    ) -> Result<Storage> {
        match (self, rhs) {
            (Storage::Cpu(a), Storage::Cpu(b)) => {
                Ok(Storage::Cpu(a.binary(layout, b, rhs_layout, op)?))
            }
            (Storage::Gpu(a), Storage::Gpu(b)) => {
                Ok(Storage::Gpu(a.binary(layout, b, rhs_layout, op)?))
            }
            _ => Err(mismatch(op.name())),
        }
    }

    pub(crate) fn matmul(&self, rhs: &Storage, spec: &MatmulSpec) -> Result<Storage> {
        match (self, rhs) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Ok(Storage::Cpu(a.matmul(b, spec)?)),
            (Storage::Gpu(a), Storage::Gpu(b)) => Ok(Storage::Gpu(a.matmul(b, spec)?)),
            _ => Err(mismatch("matmul")),
        }
    }

    pub(crate) fn gather(&self, index: &Storage, spec: &GatherSpec) -> Result<Storage> {
        match (self, index) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Ok(Storage::Cpu(a.gather(b, spec)?)),
            (Storage::Gpu(a), Storage::Gpu(b)) => Ok(Storage::Gpu(a.gather(b, spec)?)),
            _ => Err(mismatch("gather")),
        }
    }

    pub(crate) fn where_cond(
        &self,
        l: &Layout,
        t: &Storage,
        tl: &Layout,
        f: &Storage,
        fl: &Layout,
    ) -> Result<Storage> {
        match (self, t, f) {
            (Storage::Cpu(c), Storage::Cpu(t), Storage::Cpu(f)) => {
                Ok(Storage::Cpu(c.where_cond(l, t, tl, f, fl)?))
            }
            (Storage::Gpu(c), Storage::Gpu(t), Storage::Gpu(f)) => {
                Ok(Storage::Gpu(c.where_cond(l, t, tl, f, fl)?))
            }
            _ => Err(mismatch("where")),
        }
    }

    pub(crate) fn layer_norm(
        &self,
        w: &Storage,
        b: &Storage,
        rows: usize,
        k: usize,
        eps: f32,
    ) -> Result<Storage> {
        match (self, w, b) {
            (Storage::Cpu(x), Storage::Cpu(w), Storage::Cpu(b)) => {
                Ok(Storage::Cpu(x.layer_norm(w, b, rows, k, eps)?))
            }
            (Storage::Gpu(x), Storage::Gpu(w), Storage::Gpu(b)) => {
                Ok(Storage::Gpu(x.layer_norm(w, b, rows, k, eps)?))
            }
            _ => Err(mismatch("layer_norm")),
        }
    }

    pub(crate) fn batch_norm_stats(&self, dims: [usize; 3], eps: f32) -> Result<[Storage; 3]> {
        Ok(match self {
            Storage::Cpu(x) => x.batch_norm_stats(dims, eps)?.map(Storage::Cpu),
            Storage::Gpu(x) => x.batch_norm_stats(dims, eps)?.map(Storage::Gpu),
        })
    }

    /// `batch_norm_stats`, moving `running`'s averages in the same pass where the
    /// backend can (`BackendStorage::batch_norm_stats_running`).
    pub(crate) fn batch_norm_stats_running(
        &self,
        dims: [usize; 3],
        eps: f32,
        running: RunningStatsUpdate<'_, Storage>,
    ) -> Result<([Storage; 3], bool)> {
        let op = "batch_norm";
        let RunningStatsUpdate {
            mean,
            var,
            average,
            var_scale,
        } = running;
        // The update with its statistics in their backend's storage.
        fn on<'a, S>(
            mean: &'a mut S,
            var: &'a mut S,
            a: MovingAverageSpec,
            s: f32,
        ) -> RunningStatsUpdate<'a, S> {
            RunningStatsUpdate {
                mean,
                var,
                average: a,
                var_scale: s,
            }
        }
        Ok(match (self, mean, var) {
            (Storage::Cpu(x), Storage::Cpu(m), Storage::Cpu(v)) => {
                let update = on(m, v, average, var_scale);
                let (stats, moved) = x.batch_norm_stats_running(dims, eps, update)?;
                (stats.map(Storage::Cpu), moved)
            }
            (Storage::Gpu(x), Storage::Gpu(m), Storage::Gpu(v)) => {
                let update = on(m, v, average, var_scale);
                let (stats, moved) = x.batch_norm_stats_running(dims, eps, update)?;
                (stats.map(Storage::Gpu), moved)
            }
            _ => return Err(mismatch(op)),
        })
    }

    pub(crate) fn batch_norm_backward_sums(
        &self,
        grad: &Storage,
        mean: &Storage,
        rstd: &Storage,
        dims: [usize; 3],
    ) -> Result<[Storage; 2]> {
        Ok(match (self, grad, mean, rstd) {
            (Storage::Cpu(x), Storage::Cpu(g), Storage::Cpu(m), Storage::Cpu(r)) => {
                x.batch_norm_backward_sums(g, m, r, dims)?.map(Storage::Cpu)
            }
            (Storage::Gpu(x), Storage::Gpu(g), Storage::Gpu(m), Storage::Gpu(r)) => {
                x.batch_norm_backward_sums(g, m, r, dims)?.map(Storage::Gpu)
            }
            _ => return Err(mismatch("batch_norm")),
        })
    }

    pub(crate) fn scatter_add(
        &self,
        index: &Storage,
        src: &Storage,
        spec: &ScatterSpec,
    ) -> Result<Storage> {
        match (self, index, src) {
            (Storage::Cpu(x), Storage::Cpu(i), Storage::Cpu(s)) => {
                Ok(Storage::Cpu(x.scatter_add(i, s, spec)?))
            }
            (Storage::Gpu(x), Storage::Gpu(i), Storage::Gpu(s)) => {
                Ok(Storage::Gpu(x.scatter_add(i, s, spec)?))
            }
            _ => Err(mismatch("scatter_add")),
        }
    }

    /// `pieces` (of one device and dtype) side by side along `dim` in a new compact
    /// storage of `shape`: on a GPU in one launch per few pieces, on the CPU each piece
    /// copied into a zeroed buffer.
    pub(crate) fn cat(
        pieces: &[(&Storage, &Layout)],
        dim: usize,
        shape: &Shape,
    ) -> Result<Storage> {
        let gpu: Option<Vec<_>> = pieces
            .iter()
            .map(|(s, l)| match s {
                Storage::Gpu(g) => Some((g, *l)),
                Storage::Cpu(_) => None,
            })
            .collect();
        if let Some(pieces) = gpu {
            return Ok(Storage::Gpu(GpuStorage::cat(&pieces, dim, shape)?));
        }
        let (first, _) = pieces[0];
        let mut out = first
            .device()
            .zeros_storage(shape.elem_count(), first.dtype())?;
        let whole = Layout::contiguous(shape.clone());
        let mut start = 0;
        for (s, layout) in pieces {
            let len = layout.dims()[dim];
            if len > 0 {
                s.copy_into(layout, &mut out, &whole.narrow(dim, start, len))?;
            }
            start += len;
        }
        Ok(out)
    }

    pub(crate) fn copy_into(
        &self,
        layout: &Layout,
        dst: &mut Storage,
        dst_layout: &Layout,
    ) -> Result<()> {
        match (self, dst) {
            (Storage::Cpu(s), Storage::Cpu(d)) => s.copy_into(layout, d, dst_layout),
            (Storage::Gpu(s), Storage::Gpu(d)) => s.copy_into(layout, d, dst_layout),
            _ => Err(mismatch("copy")),
        }
    }

    pub(crate) fn attention(
        &self,
        k: &Storage,
        v: &Storage,
        spec: &AttentionSpec,
    ) -> Result<(Storage, Storage)> {
        match (self, k, v) {
            (Storage::Cpu(q), Storage::Cpu(k), Storage::Cpu(v)) => {
                let (out, lse) = q.attention(k, v, spec)?;
                Ok((Storage::Cpu(out), Storage::Cpu(lse)))
            }
            (Storage::Gpu(q), Storage::Gpu(k), Storage::Gpu(v)) => {
                let (out, lse) = q.attention(k, v, spec)?;
                Ok((Storage::Gpu(out), Storage::Gpu(lse)))
            }
            _ => Err(mismatch("attention")),
        }
    }

    /// See `BackendStorage::attention_backward`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_backward(
        &self,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        lse: &Storage,
        grad: &Storage,
        spec: &AttentionSpec,
        layouts: &AttentionGradLayouts,
    ) -> Result<Storage> {
        match (self, k, v, out, lse, grad) {
            (
                Storage::Cpu(q),
                Storage::Cpu(k),
                Storage::Cpu(v),
                Storage::Cpu(o),
                Storage::Cpu(l),
                Storage::Cpu(g),
            ) => Ok(Storage::Cpu(
                q.attention_backward(k, v, o, l, g, spec, layouts)?,
            )),
            (
                Storage::Gpu(q),
                Storage::Gpu(k),
                Storage::Gpu(v),
                Storage::Gpu(o),
                Storage::Gpu(l),
                Storage::Gpu(g),
            ) => Ok(Storage::Gpu(
                q.attention_backward(k, v, o, l, g, spec, layouts)?,
            )),
            _ => Err(mismatch("attention")),
        }
    }

    pub(crate) fn softmax_backward(
        &self,
        grad: &Storage,
        rows: usize,
        k: usize,
        log: bool,
    ) -> Result<Storage> {
        match (self, grad) {
            (Storage::Cpu(y), Storage::Cpu(g)) => {
                Ok(Storage::Cpu(y.softmax_backward(g, rows, k, log)?))
            }
            (Storage::Gpu(y), Storage::Gpu(g)) => {
                Ok(Storage::Gpu(y.softmax_backward(g, rows, k, log)?))
            }
            _ => Err(mismatch("softmax")),
        }
    }

    /// See `BackendStorage::layer_norm_backward`.
    pub(crate) fn layer_norm_backward(
        &self,
        grad: &Storage,
        weight: Option<&Storage>,
        dims: [usize; 2],
        eps: f32,
    ) -> Result<Option<LayerNormGrads<Storage>>> {
        let cpu =
            |r: Option<LayerNormGrads<_>>| r.map(|(dx, p)| (Storage::Cpu(dx), p.map(Storage::Cpu)));
        let gpu =
            |r: Option<LayerNormGrads<_>>| r.map(|(dx, p)| (Storage::Gpu(dx), p.map(Storage::Gpu)));
        Ok(match (self, grad, weight) {
            (Storage::Cpu(x), Storage::Cpu(g), None) => {
                cpu(x.layer_norm_backward(g, None, dims, eps)?)
            }
            (Storage::Cpu(x), Storage::Cpu(g), Some(Storage::Cpu(w))) => {
                cpu(x.layer_norm_backward(g, Some(w), dims, eps)?)
            }
            (Storage::Gpu(x), Storage::Gpu(g), None) => {
                gpu(x.layer_norm_backward(g, None, dims, eps)?)
            }
            (Storage::Gpu(x), Storage::Gpu(g), Some(Storage::Gpu(w))) => {
                gpu(x.layer_norm_backward(g, Some(w), dims, eps)?)
            }
            _ => return Err(mismatch("layer_norm")),
        })
    }

    pub(crate) fn conv2d_unfolded(
        &self,
        weight: &Storage,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Option<Storage>> {
        Ok(match (self, weight) {
            (Storage::Cpu(x), Storage::Cpu(w)) => x
                .conv2d_unfolded(w, spec, out_channels, groups)?
                .map(Storage::Cpu),
            (Storage::Gpu(x), Storage::Gpu(w)) => x
                .conv2d_unfolded(w, spec, out_channels, groups)?
                .map(Storage::Gpu),
            _ => return Err(mismatch("conv2d")),
        })
    }

    pub(crate) fn conv_transpose2d_as_conv(
        &self,
        weight: &Storage,
        spec: &WindowSpec,
        in_channels: usize,
        groups: usize,
    ) -> Result<Option<Storage>> {
        Ok(match (self, weight) {
            (Storage::Cpu(x), Storage::Cpu(w)) => x
                .conv_transpose2d_as_conv(w, spec, in_channels, groups)?
                .map(Storage::Cpu),
            (Storage::Gpu(x), Storage::Gpu(w)) => x
                .conv_transpose2d_as_conv(w, spec, in_channels, groups)?
                .map(Storage::Gpu),
            _ => return Err(mismatch("conv_transpose2d")),
        })
    }

    pub(crate) fn conv2d_direct(
        &self,
        weight: &Storage,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Storage> {
        match (self, weight) {
            (Storage::Cpu(x), Storage::Cpu(w)) => Ok(Storage::Cpu(x.conv2d_direct(
                w,
                spec,
                out_channels,
                groups,
            )?)),
            (Storage::Gpu(x), Storage::Gpu(w)) => Ok(Storage::Gpu(x.conv2d_direct(
                w,
                spec,
                out_channels,
                groups,
            )?)),
            _ => Err(mismatch("conv2d")),
        }
    }

    pub(crate) fn conv2d_weight_grad(
        &self,
        dy: &Storage,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Storage> {
        match (self, dy) {
            (Storage::Cpu(x), Storage::Cpu(d)) => Ok(Storage::Cpu(x.conv2d_weight_grad(
                d,
                spec,
                out_channels,
                groups,
            )?)),
            (Storage::Gpu(x), Storage::Gpu(d)) => Ok(Storage::Gpu(x.conv2d_weight_grad(
                d,
                spec,
                out_channels,
                groups,
            )?)),
            _ => Err(mismatch("conv2d_backward")),
        }
    }

    pub(crate) fn max_pool2d_backward(
        &self,
        indices: &Storage,
        spec: &WindowSpec,
    ) -> Result<Storage> {
        match (self, indices) {
            (Storage::Cpu(d), Storage::Cpu(i)) => Ok(Storage::Cpu(d.max_pool2d_backward(i, spec)?)),
            (Storage::Gpu(d), Storage::Gpu(i)) => Ok(Storage::Gpu(d.max_pool2d_backward(i, spec)?)),
            _ => Err(mismatch("max_pool2d_backward")),
        }
    }

    pub(crate) fn avg_pool2d_backward(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Storage> {
        unary_forward!(self, s => s.avg_pool2d_backward(spec, kind))
    }

    pub(crate) fn cross_entropy(
        &self,
        targets: &Storage,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Storage> {
        match (self, targets) {
            (Storage::Cpu(x), Storage::Cpu(t)) => {
                Ok(Storage::Cpu(x.cross_entropy(t, rows, classes, smoothing)?))
            }
            (Storage::Gpu(x), Storage::Gpu(t)) => {
                Ok(Storage::Gpu(x.cross_entropy(t, rows, classes, smoothing)?))
            }
            _ => Err(mismatch("cross_entropy")),
        }
    }

    pub(crate) fn cross_entropy_backward(
        &self,
        targets: &Storage,
        dloss: &Storage,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Storage> {
        match (self, targets, dloss) {
            (Storage::Cpu(x), Storage::Cpu(t), Storage::Cpu(d)) => Ok(Storage::Cpu(
                x.cross_entropy_backward(t, d, rows, classes, smoothing)?,
            )),
            (Storage::Gpu(x), Storage::Gpu(t), Storage::Gpu(d)) => Ok(Storage::Gpu(
                x.cross_entropy_backward(t, d, rows, classes, smoothing)?,
            )),
            _ => Err(mismatch("cross_entropy_backward")),
        }
    }

    pub(crate) fn lstm_cell(&self, c: &Storage, spec: &LstmCellSpec) -> Result<Storage> {
        match (self, c) {
            (Storage::Cpu(z), Storage::Cpu(c)) => Ok(Storage::Cpu(z.lstm_cell(c, spec)?)),
            (Storage::Gpu(z), Storage::Gpu(c)) => Ok(Storage::Gpu(z.lstm_cell(c, spec)?)),
            _ => Err(mismatch("lstm_cell")),
        }
    }

    pub(crate) fn lstm_cell_backward(
        &self,
        c: &Storage,
        dh: &Storage,
        dc: &Storage,
        spec: &LstmCellSpec,
    ) -> Result<(Storage, Storage)> {
        match (self, c, dh, dc) {
            (Storage::Cpu(z), Storage::Cpu(c), Storage::Cpu(dh), Storage::Cpu(dc)) => {
                let (dz, dc) = z.lstm_cell_backward(c, dh, dc, spec)?;
                Ok((Storage::Cpu(dz), Storage::Cpu(dc)))
            }
            (Storage::Gpu(z), Storage::Gpu(c), Storage::Gpu(dh), Storage::Gpu(dc)) => {
                let (dz, dc) = z.lstm_cell_backward(c, dh, dc, spec)?;
                Ok((Storage::Gpu(dz), Storage::Gpu(dc)))
            }
            _ => Err(mismatch("lstm_cell_backward")),
        }
    }

    pub(crate) fn gru_cell(
        &self,
        hp: &Storage,
        h: &Storage,
        spec: &GruCellSpec,
    ) -> Result<Storage> {
        match (self, hp, h) {
            (Storage::Cpu(x), Storage::Cpu(hp), Storage::Cpu(h)) => {
                Ok(Storage::Cpu(x.gru_cell(hp, h, spec)?))
            }
            (Storage::Gpu(x), Storage::Gpu(hp), Storage::Gpu(h)) => {
                Ok(Storage::Gpu(x.gru_cell(hp, h, spec)?))
            }
            _ => Err(mismatch("gru_cell")),
        }
    }

    pub(crate) fn gru_cell_backward(
        &self,
        hp: &Storage,
        h: &Storage,
        grad: &Storage,
        spec: &GruCellSpec,
    ) -> Result<(Storage, Storage, Storage)> {
        match (self, hp, h, grad) {
            (Storage::Cpu(x), Storage::Cpu(hp), Storage::Cpu(h), Storage::Cpu(g)) => {
                let (dx, dhp, dh) = x.gru_cell_backward(hp, h, g, spec)?;
                Ok((Storage::Cpu(dx), Storage::Cpu(dhp), Storage::Cpu(dh)))
            }
            (Storage::Gpu(x), Storage::Gpu(hp), Storage::Gpu(h), Storage::Gpu(g)) => {
                let (dx, dhp, dh) = x.gru_cell_backward(hp, h, g, spec)?;
                Ok((Storage::Gpu(dx), Storage::Gpu(dhp), Storage::Gpu(dh)))
            }
            _ => Err(mismatch("gru_cell_backward")),
        }
    }

    /// `optimizer_update_all` written over each update's parameter and states where
    /// their backend can; returns which updates were.
    pub(crate) fn optimizer_update_in_place(
        updates: &mut [ParamUpdateInPlace<'_, Storage>],
        step: &OptimizerStep,
    ) -> Result<Vec<bool>> {
        match updates.first().map(|u| &*u.param) {
            None => Ok(Vec::new()),
            Some(Storage::Cpu(_)) => in_place_on_backend(
                updates,
                step,
                |s| match s {
                    Storage::Cpu(s) => Some(s),
                    Storage::Gpu(_) => None,
                },
                |s| match s {
                    Storage::Cpu(s) => Some(s),
                    Storage::Gpu(_) => None,
                },
            ),
            Some(Storage::Gpu(_)) => in_place_on_backend(
                updates,
                step,
                |s| match s {
                    Storage::Gpu(s) => Some(s),
                    Storage::Cpu(_) => None,
                },
                |s| match s {
                    Storage::Gpu(s) => Some(s),
                    Storage::Cpu(_) => None,
                },
            ),
        }
    }

    /// One optimizer step of every parameter in `updates`, all on one backend.
    pub(crate) fn optimizer_update_all(
        updates: &[ParamUpdate<'_, Storage>],
        step: &OptimizerStep,
    ) -> Result<Vec<(Storage, Vec<Storage>)>> {
        match updates.first().map(|u| u.param) {
            None => Ok(Vec::new()),
            Some(Storage::Cpu(_)) => on_backend(updates, step, |s| match s {
                Storage::Cpu(s) => Some(s),
                Storage::Gpu(_) => None,
            })
            .map(|outs| wrap(outs, Storage::Cpu)),
            Some(Storage::Gpu(_)) => on_backend(updates, step, |s| match s {
                Storage::Gpu(s) => Some(s),
                Storage::Cpu(_) => None,
            })
            .map(|outs| wrap(outs, Storage::Gpu)),
        }
    }
}

/// `updates` with each storage as `backend`'s (all must be), stepped in place there
/// where it can (`BackendStorage::optimizer_update_in_place`).
fn in_place_on_backend<'a, S: BackendStorage + 'a>(
    updates: &'a mut [ParamUpdateInPlace<'_, Storage>],
    step: &OptimizerStep,
    backend: impl Fn(&'a Storage) -> Option<&'a S>,
    backend_mut: impl Fn(&'a mut Storage) -> Option<&'a mut S>,
) -> Result<Vec<bool>> {
    let op = "optimizer_update";
    let mut on = Vec::with_capacity(updates.len());
    for u in updates.iter_mut() {
        let param = backend_mut(&mut *u.param).ok_or_else(|| mismatch(op))?;
        let grad = backend(u.grad).ok_or_else(|| mismatch(op))?;
        let states = u
            .states
            .iter_mut()
            .map(|s| backend_mut(s).ok_or_else(|| mismatch(op)))
            .collect::<Result<_>>()?;
        on.push(ParamUpdateInPlace {
            param,
            grad,
            states,
            grad_scale: u.grad_scale,
        });
    }
    S::optimizer_update_in_place(&mut on, step)
}

/// `updates` with each storage as `backend`'s (all must be), stepped there.
fn on_backend<'a, S: BackendStorage + 'a>(
    updates: &[ParamUpdate<'a, Storage>],
    step: &OptimizerStep,
    backend: impl Fn(&'a Storage) -> Option<&'a S>,
) -> Result<Vec<(S, Vec<S>)>> {
    let op = "optimizer_update";
    let one = |s| backend(s).ok_or_else(|| mismatch(op));
    let updates = updates
        .iter()
        .map(|u| {
            Ok(ParamUpdate {
                param: one(u.param)?,
                grad: one(u.grad)?,
                states: u.states.iter().map(|&s| one(s)).collect::<Result<_>>()?,
                grad_scale: u.grad_scale,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    S::optimizer_update_all(&updates, step)
}

fn wrap<S>(outs: Vec<(S, Vec<S>)>, to: fn(S) -> Storage) -> Vec<(Storage, Vec<Storage>)> {
    outs.into_iter()
        .map(|(p, states)| (to(p), states.into_iter().map(to).collect()))
        .collect()
}
