//! kiln-cpu: the reference backend. Plain code for every op over any strides; every GPU
//! kernel is tested against it. Floating-point work is done in f64 and rounded once to
//! the tensor's dtype, so the reference is the accurate side of every comparison (and
//! `F64` tensors, which `gradcheck` uses, come for free).

/// Runs `$body` with `$data` bound to a buffer's elements, whatever their dtype: for
/// kernels generic over the element they read (`Into<f64>`), so nothing is widened
/// into a copy first. Defined before the modules, so that they see it.
macro_rules! with_elements {
    ($buf:expr, $data:ident => $body:expr) => {
        match $buf {
            kiln_core::HostBuffer::F32($data) => $body,
            kiln_core::HostBuffer::F16($data) => $body,
            kiln_core::HostBuffer::I32($data) => $body,
            kiln_core::HostBuffer::F64($data) => $body,
        }
    };
}

// First: its `widest_loop!` is used by the modules below.
#[macro_use]
mod vector;
mod attention;
mod batch_norm;
mod conv;
mod elementwise;
mod index;
mod loss;
mod matmul;
mod norm;
mod optim;
mod pool;
mod random;
mod reduce;
mod rnn;
mod special;
mod strided;
#[cfg(test)]
mod test_draws;
pub mod threads;
mod window;

pub use elementwise::{binary_f64, unary_f64};

use kiln_core::{
    AttentionGradLayouts, AttentionSpec, BackendDevice, BackendStorage, BinaryOp, DType, Error,
    GatherSpec, GruCellSpec, HostBuffer, HostSlice, LayerNormGrads, Layout, LstmCellSpec,
    MatmulSpec, OptimizerStep, ParamUpdateInPlace, PoolKind, ReduceOp, Result, ScatterSpec,
    UnaryOp, WindowSpec,
};

/// The CPU device. It holds nothing: host memory is the storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuDevice;

/// Tensor data in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuStorage(pub HostBuffer);

/// The elements of `layout` from an f32 buffer: borrowed when they are contiguous.
pub(crate) fn f32_view<'a>(v: &'a [f32], layout: &Layout) -> std::borrow::Cow<'a, [f32]> {
    if layout.is_contiguous() {
        std::borrow::Cow::Borrowed(&v[layout.offset()..layout.offset() + layout.elem_count()])
    } else {
        std::borrow::Cow::Owned(strided::gather(v, layout))
    }
}

impl CpuStorage {
    /// The elements of `layout` widened to f64, in row-major order.
    fn floats(&self, layout: &Layout) -> Vec<f64> {
        match &self.0 {
            HostBuffer::F32(v) => strided::gather_map(v, layout, |x| x as f64),
            HostBuffer::F16(v) => strided::gather_map(v, layout, |x| x.to_f64()),
            HostBuffer::I32(v) => strided::gather_map(v, layout, |x| x as f64),
            HostBuffer::F64(v) => strided::gather(v, layout),
        }
    }

    /// A compact buffer's elements widened to f64 (long f32 buffers in parallel).
    fn compact_floats(&self) -> Vec<f64> {
        match &self.0 {
            HostBuffer::F32(v) => threads::map(v, f64::from),
            other => other.to_f64_vec(),
        }
    }

    fn ints(&self, op: &'static str) -> Result<&[i32]> {
        match &self.0 {
            HostBuffer::I32(v) => Ok(v),
            other => Err(Error::UnsupportedDType {
                op,
                dtype: other.dtype(),
                reason: "indices must be i32",
            }),
        }
    }

    /// f64 results rounded once to `dtype` (long f32 results in parallel).
    fn from_floats(dtype: DType, v: Vec<f64>) -> Self {
        CpuStorage(match dtype {
            DType::F32 => HostBuffer::F32(threads::map(&v, |x| x as f32)),
            _ => HostBuffer::from_f64(dtype, v),
        })
    }
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        self.0.dtype()
    }

    fn to_host(&self, layout: &Layout) -> Result<HostBuffer> {
        use strided::gather as pick;
        Ok(match &self.0 {
            HostBuffer::F32(v) => HostBuffer::F32(pick(v, layout)),
            HostBuffer::F16(v) => HostBuffer::F16(pick(v, layout)),
            HostBuffer::I32(v) => HostBuffer::I32(pick(v, layout)),
            HostBuffer::F64(v) => HostBuffer::F64(pick(v, layout)),
        })
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        if let HostBuffer::F32(v) = &self.0 {
            let out = elementwise::unary_f32(op, &f32_view(v, layout));
            return Ok(CpuStorage(HostBuffer::F32(out)));
        }
        let out = self
            .floats(layout)
            .into_iter()
            .map(|x| unary_f64(op, x))
            .collect();
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn binary(
        &self,
        layout: &Layout,
        rhs: &Self,
        rhs_layout: &Layout,
        op: BinaryOp,
    ) -> Result<Self> {
        elementwise::binary(self, layout, rhs, rhs_layout, op)
    }

    fn where_cond(
        &self,
        layout: &Layout,
        t: &Self,
        tl: &Layout,
        f: &Self,
        fl: &Layout,
    ) -> Result<Self> {
        elementwise::where_cond(self, layout, t, tl, f, fl)
    }

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        Ok(CpuStorage(elementwise::cast(&self.to_host(layout)?, dtype)))
    }

    fn pad(&self, layout: &Layout, dims: &[usize], before: &[usize], value: f64) -> Result<Self> {
        let n = dims.iter().product();
        let mut out = CpuStorage(HostBuffer::try_full("pad", self.dtype(), n, value)?);
        let inner = Layout::window(dims, before, layout.dims());
        elementwise::copy_into(self, layout, &mut out, &inner)?;
        Ok(out)
    }

    fn compact(&self, layout: &Layout) -> Result<Self> {
        Ok(CpuStorage(self.to_host(layout)?))
    }

    fn copy_into(&self, layout: &Layout, dst: &mut Self, dst_layout: &Layout) -> Result<()> {
        elementwise::copy_into(self, layout, dst, dst_layout)
    }

    fn reduce(&self, op: ReduceOp, rows: usize, k: usize) -> Result<Self> {
        reduce::reduce(self, op, rows, k)
    }

    fn reduce_middle(&self, op: ReduceOp, outer: usize, k: usize, inner: usize) -> Result<Self> {
        reduce::reduce_middle(self, op, outer, k, inner)
    }

    fn softmax(&self, rows: usize, k: usize, log: bool) -> Result<Self> {
        if let HostBuffer::F32(x) = &self.0 {
            let out = reduce::softmax(x, rows, k, log, |v| v as f32);
            return Ok(CpuStorage(HostBuffer::F32(out)));
        }
        let out = with_elements!(&self.0, x => reduce::softmax(x, rows, k, log, |v| v));
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn softmax_backward(&self, grad: &Self, rows: usize, k: usize, log: bool) -> Result<Self> {
        if let (HostBuffer::F32(y), HostBuffer::F32(g)) = (&self.0, &grad.0) {
            let out = reduce::softmax_backward(y, g, rows, k, log, |v| v as f32);
            return Ok(CpuStorage(HostBuffer::F32(out)));
        }
        let (y, g) = (self.compact_floats(), grad.compact_floats());
        let out = reduce::softmax_backward(&y, &g, rows, k, log, |v| v);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn layer_norm(
        &self,
        weight: &Self,
        bias: &Self,
        rows: usize,
        k: usize,
        eps: f32,
    ) -> Result<Self> {
        let (w, b) = (weight.compact_floats(), bias.compact_floats());
        let eps = eps as f64;
        let dims = [rows, k];
        if let HostBuffer::F32(x) = &self.0 {
            let out = norm::layer_norm(x, &w, &b, dims, eps, |v| v as f32);
            return Ok(CpuStorage(HostBuffer::F32(out)));
        }
        let out = with_elements!(&self.0, x => norm::layer_norm(x, &w, &b, dims, eps, |v| v));
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn layer_norm_backward(
        &self,
        grad: &Self,
        weight: Option<&Self>,
        dims: [usize; 2],
        eps: f32,
    ) -> Result<Option<LayerNormGrads<Self>>> {
        let w = weight.map_or_else(|| vec![1.0; dims[1]], |w| w.compact_floats());
        let (products, eps) = (weight.is_some(), eps as f64);
        if let (HostBuffer::F32(x), HostBuffer::F32(g)) = (&self.0, &grad.0) {
            let (dx, products) =
                norm::layer_norm_backward(x, g, &w, dims, eps, products, |v| v as f32);
            let wrap = |v| CpuStorage(HostBuffer::F32(v));
            return Ok(Some((wrap(dx), products.map(wrap))));
        }
        let (x, g) = (self.compact_floats(), grad.compact_floats());
        let (dx, products) = norm::layer_norm_backward(&x, &g, &w, dims, eps, products, |v| v);
        let wrap = |v| Self::from_floats(self.dtype(), v);
        Ok(Some((wrap(dx), products.map(wrap))))
    }

    fn batch_norm_stats(&self, dims: [usize; 3], eps: f32) -> Result<[Self; 3]> {
        let eps = eps as f64;
        let stats = match &self.0 {
            HostBuffer::F32(x) => batch_norm::batch_norm_stats(x, dims, eps),
            _ => batch_norm::batch_norm_stats(&self.compact_floats(), dims, eps),
        };
        Ok(stats.map(|v| Self::from_floats(self.dtype(), v)))
    }

    fn batch_norm_backward_sums(
        &self,
        grad: &Self,
        mean: &Self,
        rstd: &Self,
        dims: [usize; 3],
    ) -> Result<[Self; 2]> {
        let stats = [mean.compact_floats(), rstd.compact_floats()];
        let sums = match (&self.0, &grad.0) {
            (HostBuffer::F32(x), HostBuffer::F32(g)) => {
                batch_norm::batch_norm_backward_sums(x, g, &stats, dims)
            }
            _ => {
                let (x, g) = (self.compact_floats(), grad.compact_floats());
                batch_norm::batch_norm_backward_sums(&x, &g, &stats, dims)
            }
        };
        Ok(sums.map(|v| Self::from_floats(self.dtype(), v)))
    }

    fn matmul(&self, rhs: &Self, spec: &MatmulSpec) -> Result<Self> {
        matmul::matmul(self, rhs, spec)
    }

    fn attention(&self, k: &Self, v: &Self, spec: &AttentionSpec) -> Result<(Self, Self)> {
        spec.check_out()?;
        let (q, k, v) = (
            self.compact_floats(),
            k.compact_floats(),
            v.compact_floats(),
        );
        let (out, lse) = attention::attention(&q, &k, &v, spec);
        let dtype = self.dtype();
        Ok((Self::from_floats(dtype, out), Self::from_floats(dtype, lse)))
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
        layouts.check(spec)?;
        spec.check_out()?;
        let [q, k, v, out, lse, grad] = [self, k, v, out, lse, grad].map(Self::compact_floats);
        let grads = attention::attention_backward(&q, &k, &v, &out, &lse, &grad, spec, layouts);
        Ok(Self::from_floats(self.dtype(), grads))
    }

    fn im2col(&self, spec: &WindowSpec) -> Result<Self> {
        if let HostBuffer::F32(v) = &self.0 {
            return Ok(CpuStorage(HostBuffer::F32(conv::im2col(v, spec))));
        }
        Ok(Self::from_floats(
            self.dtype(),
            conv::im2col(&self.compact_floats(), spec),
        ))
    }

    fn conv2d_unfolded(
        &self,
        weight: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Option<Self>> {
        // f32 only: f64 (gradcheck) and f16 keep the composed im2col and matmul.
        Ok(match (&self.0, &weight.0) {
            (HostBuffer::F32(x), HostBuffer::F32(w)) => Some(CpuStorage(HostBuffer::F32(
                conv::conv2d_unfolded(x, w, spec, out_channels, groups),
            ))),
            _ => None,
        })
    }

    fn conv2d_direct(
        &self,
        weight: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Self> {
        let out = match (&self.0, &weight.0) {
            (HostBuffer::F32(x), HostBuffer::F32(w)) => {
                conv::conv2d_direct(x, w, spec, out_channels, groups)
            }
            _ => conv::conv2d_direct(
                &self.compact_floats(),
                &weight.compact_floats(),
                spec,
                out_channels,
                groups,
            ),
        };
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn col2im(&self, spec: &WindowSpec) -> Result<Self> {
        if let HostBuffer::F32(v) = &self.0 {
            return Ok(CpuStorage(HostBuffer::F32(conv::col2im(v, spec))));
        }
        Ok(Self::from_floats(
            self.dtype(),
            conv::col2im(&self.compact_floats(), spec),
        ))
    }

    fn max_pool2d(&self, spec: &WindowSpec) -> Result<(Self, Self)> {
        if let HostBuffer::F32(v) = &self.0 {
            let (values, indices) = pool::max_pool2d(v, spec);
            return Ok((
                CpuStorage(HostBuffer::F32(values)),
                CpuStorage(HostBuffer::I32(indices)),
            ));
        }
        let (values, indices) = pool::max_pool2d(&self.compact_floats(), spec);
        Ok((
            Self::from_floats(self.dtype(), values),
            CpuStorage(HostBuffer::I32(indices)),
        ))
    }

    fn avg_pool2d(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Self> {
        let out = pool::avg_pool2d(&self.compact_floats(), spec, kind);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn gather(&self, index: &Self, spec: &GatherSpec) -> Result<Self> {
        index::gather(self, index.ints("gather")?, spec)
    }

    fn scatter_add(&self, index: &Self, src: &Self, spec: &ScatterSpec) -> Result<Self> {
        let (x, s) = (self.compact_floats(), src.compact_floats());
        let out = index::scatter_add(&x, index.ints("scatter_add")?, &s, spec);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn conv2d_weight_grad(
        &self,
        dy: &Self,
        spec: &WindowSpec,
        out_channels: usize,
        groups: usize,
    ) -> Result<Self> {
        if let (HostBuffer::F32(x), HostBuffer::F32(d)) = (&self.0, &dy.0) {
            let dw = conv::conv2d_weight_grad_gemm(x, d, spec, out_channels, groups);
            return Ok(CpuStorage(HostBuffer::F32(dw)));
        }
        let (x, dy) = (self.compact_floats(), dy.compact_floats());
        let out = conv::conv2d_weight_grad(&x, &dy, spec, out_channels, groups);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn max_pool2d_backward(&self, indices: &Self, spec: &WindowSpec) -> Result<Self> {
        if let HostBuffer::F32(v) = &self.0 {
            let dx = pool::max_pool2d_backward(v, indices.ints("max_pool2d_backward")?, spec);
            return Ok(CpuStorage(HostBuffer::F32(dx)));
        }
        let out = pool::max_pool2d_backward(
            &self.compact_floats(),
            indices.ints("max_pool2d_backward")?,
            spec,
        );
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn avg_pool2d_backward(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Self> {
        let out = pool::avg_pool2d_backward(&self.compact_floats(), spec, kind);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn cross_entropy(
        &self,
        targets: &Self,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Self> {
        let t = targets.ints("cross_entropy")?;
        let out = loss::cross_entropy(&self.compact_floats(), t, rows, classes, smoothing as f64);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn cross_entropy_backward(
        &self,
        targets: &Self,
        dloss: &Self,
        rows: usize,
        classes: usize,
        smoothing: f32,
    ) -> Result<Self> {
        let t = targets.ints("cross_entropy_backward")?;
        let (x, d) = (self.compact_floats(), dloss.compact_floats());
        let out = loss::cross_entropy_backward(&x, t, &d, rows, classes, smoothing as f64);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn lstm_cell(&self, c: &Self, spec: &LstmCellSpec) -> Result<Self> {
        let out = rnn::lstm_cell(&self.compact_floats(), &c.compact_floats(), spec);
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn lstm_cell_backward(
        &self,
        c: &Self,
        dh: &Self,
        dc: &Self,
        spec: &LstmCellSpec,
    ) -> Result<(Self, Self)> {
        let [z, c, dh, dc] = [self, c, dh, dc].map(|t| t.compact_floats());
        let (dz, dc) = rnn::lstm_cell_backward(&z, &c, [&dh, &dc], spec);
        let dtype = self.dtype();
        Ok((Self::from_floats(dtype, dz), Self::from_floats(dtype, dc)))
    }

    fn gru_cell(&self, hp: &Self, h: &Self, spec: &GruCellSpec) -> Result<Self> {
        let [x, hp, h] = [self, hp, h].map(|t| t.compact_floats());
        Ok(Self::from_floats(
            self.dtype(),
            rnn::gru_cell(&x, &hp, &h, spec),
        ))
    }

    fn gru_cell_backward(
        &self,
        hp: &Self,
        h: &Self,
        grad: &Self,
        spec: &GruCellSpec,
    ) -> Result<(Self, Self, Self)> {
        let [x, hp, h, g] = [self, hp, h, grad].map(|t| t.compact_floats());
        let (dx, dhp, dh) = rnn::gru_cell_backward(&x, &hp, &h, &g, spec);
        let dtype = self.dtype();
        Ok((
            Self::from_floats(dtype, dx),
            Self::from_floats(dtype, dhp),
            Self::from_floats(dtype, dh),
        ))
    }

    fn optimizer_update(
        &self,
        grad: &Self,
        grad_scale: f32,
        states: &[&Self],
        step: &OptimizerStep,
    ) -> Result<(Self, Vec<Self>)> {
        if states.len() != step.states() {
            let reason = format!("{} takes {} state tensors", step.name(), step.states());
            let op = "optimizer_update";
            return Err(Error::InvalidArgument { op, reason });
        }
        let f32s: Option<Vec<&[f32]>> = states
            .iter()
            .map(|s| match &s.0 {
                HostBuffer::F32(v) => Some(&v[..]),
                _ => None,
            })
            .collect();
        if let (HostBuffer::F32(p), HostBuffer::F32(g), Some(s)) = (&self.0, &grad.0, &f32s) {
            let (p, states) = optim::update(p, (g, grad_scale), s, step, |v| v as f32);
            let wrap = |v| CpuStorage(HostBuffer::F32(v));
            return Ok((wrap(p), states.into_iter().map(wrap).collect()));
        }
        let states: Vec<Vec<f64>> = states.iter().map(|s| s.compact_floats()).collect();
        let states: Vec<&[f64]> = states.iter().map(|s| &s[..]).collect();
        let (p, g) = (self.compact_floats(), grad.compact_floats());
        let (p, states) = optim::update(&p, (&g, grad_scale), &states, step, |v| v);
        let dtype = self.dtype();
        let states = states
            .into_iter()
            .map(|s| Self::from_floats(dtype, s))
            .collect();
        Ok((Self::from_floats(dtype, p), states))
    }

    /// Every update is stepped: f32 values are written over, other dtypes computed
    /// apart and put in their place.
    fn optimizer_update_in_place(
        updates: &mut [ParamUpdateInPlace<'_, Self>],
        step: &OptimizerStep,
    ) -> Result<Vec<bool>> {
        for u in updates.iter_mut() {
            let f32s = std::iter::once(&mut *u.param)
                .chain(u.states.iter_mut().map(|s| &mut **s))
                .map(|s| match &mut s.0 {
                    HostBuffer::F32(v) => Some(&mut v[..]),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>();
            match (f32s, &u.grad.0) {
                (Some(mut targets), HostBuffer::F32(g)) if targets.len() == 1 + step.states() => {
                    let (p, states) = targets.split_first_mut().expect("the parameter first");
                    optim::update_in_place(p, (g, u.grad_scale), states, step);
                }
                _ => {
                    let states: Vec<&Self> = u.states.iter().map(|s| &**s).collect();
                    let (p, new_states) =
                        u.param
                            .optimizer_update(u.grad, u.grad_scale, &states, step)?;
                    *u.param = p;
                    for (s, new) in u.states.iter_mut().zip(new_states) {
                        **s = new;
                    }
                }
            }
        }
        Ok(vec![true; updates.len()])
    }
}

impl BackendDevice for CpuDevice {
    type Storage = CpuStorage;

    fn zeros(&self, n: usize, dtype: DType) -> Result<CpuStorage> {
        Ok(CpuStorage(HostBuffer::try_full("zeros", dtype, n, 0.0)?))
    }

    fn full(&self, n: usize, dtype: DType, value: f64) -> Result<CpuStorage> {
        Ok(CpuStorage(HostBuffer::try_full("full", dtype, n, value)?))
    }

    fn upload(&self, data: HostSlice<'_>) -> Result<CpuStorage> {
        Ok(CpuStorage(data.to_buffer()))
    }

    fn upload_owned(&self, data: HostBuffer) -> Result<CpuStorage> {
        Ok(CpuStorage(data))
    }

    fn rand_uniform(&self, n: usize, dtype: DType, seed: u64, stream: u64) -> Result<CpuStorage> {
        Ok(CpuStorage::from_floats(
            dtype,
            random::uniform(n, seed, stream),
        ))
    }

    fn bernoulli(
        &self,
        n: usize,
        dtype: DType,
        p: f64,
        seed: u64,
        stream: u64,
    ) -> Result<CpuStorage> {
        Ok(CpuStorage::from_floats(
            dtype,
            random::bernoulli(n, p, seed, stream),
        ))
    }
}
