//! kiln-cpu: the reference backend. Plain code for every op over any strides; every GPU
//! kernel is tested against it. Floating-point work is done in f32 (f16 inputs are
//! widened and results rounded back), the same recipe the WGSL kernels follow.

mod elementwise;
mod index;
mod matmul;
mod random;
mod reduce;
mod window;

pub use elementwise::{binary_f32, unary_f32};

use kiln_core::{
    BackendDevice, BackendStorage, BinaryOp, DType, Error, GatherSpec, HostBuffer, Layout,
    MatmulSpec, PoolKind, ReduceOp, Result, ScatterSpec, UnaryOp, WindowSpec,
};

/// The CPU device. It holds nothing: host memory is the storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuDevice;

/// Tensor data in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuStorage(pub HostBuffer);

impl CpuStorage {
    /// The elements of `layout` widened to f32, in row-major order.
    fn floats(&self, layout: &Layout) -> Vec<f32> {
        match &self.0 {
            HostBuffer::F32(v) => layout.offsets().map(|i| v[i]).collect(),
            HostBuffer::F16(v) => layout.offsets().map(|i| v[i].to_f32()).collect(),
            HostBuffer::I32(v) => layout.offsets().map(|i| v[i] as f32).collect(),
        }
    }

    /// A compact buffer's elements widened to f32.
    fn compact_floats(&self) -> Vec<f32> {
        self.0.to_f32_vec()
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

    fn require_float(&self, op: &'static str) -> Result<()> {
        if self.dtype().is_float() {
            Ok(())
        } else {
            Err(Error::UnsupportedDType {
                op,
                dtype: self.dtype(),
                reason: "this op needs a floating-point tensor",
            })
        }
    }

    fn from_floats(dtype: DType, v: Vec<f32>) -> Self {
        CpuStorage(HostBuffer::from_f32(dtype, v))
    }
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        self.0.dtype()
    }

    fn to_host(&self, layout: &Layout) -> Result<HostBuffer> {
        Ok(match &self.0 {
            HostBuffer::F32(v) => HostBuffer::F32(layout.offsets().map(|i| v[i]).collect()),
            HostBuffer::F16(v) => HostBuffer::F16(layout.offsets().map(|i| v[i]).collect()),
            HostBuffer::I32(v) => HostBuffer::I32(layout.offsets().map(|i| v[i]).collect()),
        })
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        self.require_float(op.name())?;
        let out = self
            .floats(layout)
            .into_iter()
            .map(|x| unary_f32(op, x))
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
        on_true: &Self,
        tl: &Layout,
        on_false: &Self,
        fl: &Layout,
    ) -> Result<Self> {
        elementwise::where_cond(self, layout, on_true, tl, on_false, fl)
    }

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        Ok(CpuStorage(elementwise::cast(&self.to_host(layout)?, dtype)))
    }

    fn copy_into(&self, layout: &Layout, dst: &mut Self, dst_layout: &Layout) -> Result<()> {
        elementwise::copy_into(self, layout, dst, dst_layout)
    }

    fn reduce(&self, op: ReduceOp, rows: usize, k: usize) -> Result<Self> {
        reduce::reduce(self, op, rows, k)
    }

    fn softmax(&self, rows: usize, k: usize, log: bool) -> Result<Self> {
        self.require_float(if log { "log_softmax" } else { "softmax" })?;
        Ok(Self::from_floats(
            self.dtype(),
            reduce::softmax(&self.compact_floats(), rows, k, log),
        ))
    }

    fn layer_norm(
        &self,
        weight: &Self,
        bias: &Self,
        rows: usize,
        k: usize,
        eps: f32,
    ) -> Result<Self> {
        self.require_float("layer_norm")?;
        let out = reduce::layer_norm(
            &self.compact_floats(),
            &weight.compact_floats(),
            &bias.compact_floats(),
            rows,
            k,
            eps,
        );
        Ok(Self::from_floats(self.dtype(), out))
    }

    fn matmul(&self, rhs: &Self, spec: &MatmulSpec) -> Result<Self> {
        self.require_float("matmul")?;
        Ok(Self::from_floats(
            self.dtype(),
            matmul::matmul(&self.compact_floats(), &rhs.compact_floats(), spec),
        ))
    }

    fn im2col(&self, spec: &WindowSpec) -> Result<Self> {
        self.require_float("conv2d")?;
        Ok(Self::from_floats(
            self.dtype(),
            window::im2col(&self.compact_floats(), spec),
        ))
    }

    fn col2im(&self, spec: &WindowSpec) -> Result<Self> {
        self.require_float("conv_transpose2d")?;
        Ok(Self::from_floats(
            self.dtype(),
            window::col2im(&self.compact_floats(), spec),
        ))
    }

    fn max_pool2d(&self, spec: &WindowSpec) -> Result<(Self, Self)> {
        self.require_float("max_pool2d")?;
        let (values, indices) = window::max_pool2d(&self.compact_floats(), spec);
        Ok((
            Self::from_floats(self.dtype(), values),
            CpuStorage(HostBuffer::I32(indices)),
        ))
    }

    fn avg_pool2d(&self, spec: &WindowSpec, kind: PoolKind) -> Result<Self> {
        self.require_float("avg_pool2d")?;
        Ok(Self::from_floats(
            self.dtype(),
            window::avg_pool2d(&self.compact_floats(), spec, kind),
        ))
    }

    fn gather(&self, index: &Self, spec: &GatherSpec) -> Result<Self> {
        index::gather(self, index.ints("gather")?, spec)
    }

    fn scatter_add(&self, index: &Self, src: &Self, spec: &ScatterSpec) -> Result<Self> {
        self.require_float("scatter_add")?;
        let out = index::scatter_add(
            &self.compact_floats(),
            index.ints("scatter_add")?,
            &src.compact_floats(),
            spec,
        );
        Ok(Self::from_floats(self.dtype(), out))
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

    fn upload(&self, data: &HostBuffer) -> Result<CpuStorage> {
        Ok(CpuStorage(data.clone()))
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
