//! Launches recorded but not run. With fusion on, a kernel with a store section (the
//! tiled and blocked matmuls, the row and column reductions) returns a pending storage
//! holding its launch: it runs when its buffer is needed, or with the elementwise
//! expression that reads its output as its epilogue (`fusion::epilogue`).

use crate::device::GpuDevice;
use crate::fusion::Epilogue;
use crate::kernels::Kernel;
use crate::params::ShaderParams;
use crate::pool::PooledBuffer;
use crate::storage::GpuStorage;
use kiln_core::{DType, Result};

/// A deferred launch, whatever its kernel's params.
pub(crate) trait Deferred: Send {
    /// Elements of the output, and their dtype.
    fn len(&self) -> usize;
    fn dtype(&self) -> DType;
    /// Storage buffers the kernel binds: its inputs and its output.
    fn buffers(&self) -> usize;
    fn kernel(&self) -> Kernel;
    /// The params' bytes, as the kernel reads them.
    fn params(&self) -> &[u8];
    fn inputs(&self) -> &[GpuStorage];
    /// Records the launch into `out`, or with `epilogue` the epilogue's values.
    fn run(self: Box<Self>, out: &PooledBuffer, epilogue: Option<Epilogue>) -> Result<()>;
}

/// A launch of `kernel` whose bindings are `inputs` and then its output.
struct DeferredLaunch<P> {
    op: &'static str,
    kernel: Kernel,
    dtypes: Vec<DType>,
    params: P,
    inputs: Vec<GpuStorage>,
    groups: [u32; 3],
    len: usize,
    dtype: DType,
}

impl<P: ShaderParams + Send> Deferred for DeferredLaunch<P> {
    fn len(&self) -> usize {
        self.len
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn buffers(&self) -> usize {
        self.inputs.len() + 1
    }

    fn kernel(&self) -> Kernel {
        self.kernel
    }

    fn params(&self) -> &[u8] {
        bytemuck::bytes_of(&self.params)
    }

    fn inputs(&self) -> &[GpuStorage] {
        &self.inputs
    }

    fn run(self: Box<Self>, out: &PooledBuffer, epilogue: Option<Epilogue>) -> Result<()> {
        let inputs: Vec<&GpuStorage> = self.inputs.iter().collect();
        let device = &self.inputs[0].device;
        device.dispatch_fused(
            self.op,
            self.kernel,
            &self.dtypes,
            &self.params,
            &inputs,
            &[out.buffer()],
            self.groups,
            epilogue,
        )
    }
}

impl GpuDevice {
    /// A launch of `kernel` (bindings: `inputs`, then an output of `len` elements of
    /// `dtype`), deferred. What running it could fail on that the shapes decide (the
    /// params' layout, the output's size) is checked now.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn defer<P: ShaderParams + Send + 'static>(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: P,
        inputs: &[&GpuStorage],
        groups: [u32; 3],
        len: usize,
        dtype: DType,
    ) -> Result<GpuStorage> {
        self.check_params::<P>(op, kernel)?;
        self.check_alloc(op, len, dtype)?;
        let launch = DeferredLaunch {
            op,
            kernel,
            dtypes: dtypes.to_vec(),
            params,
            inputs: inputs.iter().map(|&s| s.clone()).collect(),
            groups,
            len,
            dtype,
        };
        GpuStorage::deferred(Box::new(launch), dtype, len, self)
    }

    /// Whether `kernel`'s launches defer: fusion is on and it has a store section.
    pub(crate) fn defers(&self, kernel: Kernel) -> bool {
        self.fusion() && crate::fusion::has_store_section(kernel)
    }
}
