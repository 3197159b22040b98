//! Launches recorded but not run. With fusion on, a kernel with a store section (the
//! tiled and blocked matmuls, the row and column reductions, layer norm's backward)
//! returns a pending storage holding its launch: it runs when its buffer is needed, or
//! with the elementwise expression that reads its output as its epilogue
//! (`fusion::epilogue`). A kernel's further outputs (layer norm's backward writes the
//! weight's products too) are side outputs, filled when the launch runs.

use crate::device::GpuDevice;
use crate::fusion::Epilogue;
use crate::kernels::Kernel;
use crate::params::ShaderParams;
use crate::pool::PooledBuffer;
use crate::storage::GpuStorage;
use crate::storage::StorageData;
use kiln_core::{DType, Result};
use std::sync::{Arc, Weak};

/// A deferred launch, whatever its kernel's params.
pub(crate) trait Deferred: Send {
    /// Elements of the output, and their dtype.
    fn len(&self) -> usize;
    fn dtype(&self) -> DType;
    /// Storage buffers the kernel binds: its inputs and its output.
    fn buffers(&self) -> usize;
    fn kernel(&self) -> Kernel;
    /// Workgroups of the launch along x, y and z.
    fn groups(&self) -> [u32; 3];
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
    /// Further outputs (elements and dtype), bound after the output, each with the
    /// side output storage it fills once written (if still held). Their buffers are
    /// taken when the launch runs, as its output's are.
    sides: Vec<((usize, DType), Weak<StorageData>)>,
}

impl<P: ShaderParams + Send> Deferred for DeferredLaunch<P> {
    fn len(&self) -> usize {
        self.len
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn buffers(&self) -> usize {
        self.inputs.len() + 1 + self.sides.len()
    }

    fn kernel(&self) -> Kernel {
        self.kernel
    }

    fn groups(&self) -> [u32; 3] {
        self.groups
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
        let mut sides = Vec::with_capacity(self.sides.len());
        for ((len, dtype), side) in self.sides {
            sides.push((device.alloc_output(self.op, len, dtype)?, side));
        }
        let mut outputs = vec![out.buffer()];
        outputs.extend(sides.iter().map(|(b, _)| b.buffer()));
        device.dispatch_fused(
            self.op,
            self.kernel,
            &self.dtypes,
            &self.params,
            &inputs,
            &outputs,
            self.groups,
            epilogue,
        )?;
        for (buffer, side) in sides {
            if let Some(side) = side.upgrade() {
                side.fill_side(buffer)?;
            }
        }
        Ok(())
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
        let (out, _) = self.defer_with_sides(
            op,
            kernel,
            dtypes,
            params,
            inputs,
            groups,
            (len, dtype),
            &[],
        )?;
        Ok(out)
    }

    /// `defer`, for a kernel whose output (`out`: elements and dtype) is followed by
    /// further outputs (`sides`, bound after it in order): each comes back as a side
    /// output storage, filled when the launch runs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn defer_with_sides<P: ShaderParams + Send + 'static>(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: P,
        inputs: &[&GpuStorage],
        groups: [u32; 3],
        out: (usize, DType),
        sides: &[(usize, DType)],
    ) -> Result<(GpuStorage, Vec<GpuStorage>)> {
        let (len, dtype) = out;
        self.check_params::<P>(op, kernel)?;
        self.check_alloc(op, len, dtype)?;
        let mut side_storages = Vec::with_capacity(sides.len());
        let mut side_buffers = Vec::with_capacity(sides.len());
        for &(n, d) in sides {
            self.check_alloc(op, n, d)?;
            let side = GpuStorage::side_output(d, n, self)?;
            side_buffers.push(((n, d), Arc::downgrade(&side.data)));
            side_storages.push(side);
        }
        let launch = DeferredLaunch {
            op,
            kernel,
            dtypes: dtypes.to_vec(),
            params,
            inputs: inputs.iter().map(|&s| s.clone()).collect(),
            groups,
            len,
            dtype,
            sides: side_buffers,
        };
        let primary = GpuStorage::deferred(Box::new(launch), dtype, len, self)?;
        for side in &side_storages {
            side.follow(&primary);
        }
        Ok((primary, side_storages))
    }

    /// Whether `kernel`'s launches defer: fusion is on and it has a store section.
    pub(crate) fn defers(&self, kernel: Kernel) -> bool {
        self.fusion() && crate::fusion::has_store_section(kernel)
    }
}
