//! Making tensors: constants, host data, ranges and identities.

use crate::storage::Storage;
use crate::tensor::check_shape;
use crate::{Device, Element, Tensor};
use kiln_core::{BackendDevice, DType, Error, HostBuffer, HostSlice, Result, Shape};
use kiln_cpu::CpuDevice;

impl Device {
    pub(crate) fn zeros_storage(&self, n: usize, dtype: DType) -> Result<Storage> {
        match self {
            Device::Cpu => Ok(Storage::Cpu(CpuDevice.zeros(n, dtype)?)),
            Device::Gpu(g) => Ok(Storage::Gpu(g.zeros(n, dtype)?)),
        }
    }

    pub(crate) fn full_storage(&self, n: usize, dtype: DType, value: f64) -> Result<Storage> {
        match self {
            Device::Cpu => Ok(Storage::Cpu(CpuDevice.full(n, dtype, value)?)),
            Device::Gpu(g) => Ok(Storage::Gpu(g.full(n, dtype, value)?)),
        }
    }

    pub(crate) fn upload(&self, data: HostSlice<'_>) -> Result<Storage> {
        match self {
            Device::Cpu => Ok(Storage::Cpu(CpuDevice.upload(data)?)),
            Device::Gpu(g) => Ok(Storage::Gpu(g.upload(data)?)),
        }
    }

    pub(crate) fn upload_owned(&self, data: HostBuffer) -> Result<Storage> {
        match self {
            Device::Cpu => Ok(Storage::Cpu(CpuDevice.upload_owned(data)?)),
            Device::Gpu(g) => Ok(Storage::Gpu(g.upload_owned(data)?)),
        }
    }
}

/// An error unless `shape` is valid and holds `len` elements.
fn check_count(shape: &Shape, len: usize) -> Result<()> {
    check_shape("from_vec", shape)?;
    if len != shape.elem_count() {
        return Err(Error::ElementCount {
            op: "from_vec",
            expected: shape.elem_count(),
            got: len,
            shape: shape.clone(),
        });
    }
    Ok(())
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        check_shape("zeros", &shape)?;
        Ok(Tensor::from_storage(
            device.zeros_storage(shape.elem_count(), dtype)?,
            shape,
        ))
    }

    /// A tensor of ones.
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }

    /// A tensor with every element `value` (converted to `dtype`).
    pub fn full(
        shape: impl Into<Shape>,
        value: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        check_shape("full", &shape)?;
        Ok(Tensor::from_storage(
            device.full_storage(shape.elem_count(), dtype, value)?,
            shape,
        ))
    }

    /// Zeros of this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape().clone(), self.dtype(), &self.device())
    }

    /// Ones of this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape().clone(), self.dtype(), &self.device())
    }

    /// `value` in this tensor's shape, dtype and device.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(self.shape().clone(), value, self.dtype(), &self.device())
    }

    /// A tensor holding `data` (row-major) with `shape`.
    pub fn from_vec<T: Element>(
        data: Vec<T>,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        Tensor::from_host(T::into_host(data), shape.into(), device)
    }

    /// `from_vec` from a slice (copied; on a GPU, straight from the slice).
    pub fn from_slice<T: Element>(
        data: &[T],
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        check_count(&shape, data.len())?;
        Ok(Tensor::from_storage(
            device.upload(T::host_slice(data))?,
            shape,
        ))
    }

    pub(crate) fn from_host(data: HostBuffer, shape: Shape, device: &Device) -> Result<Tensor> {
        check_count(&shape, data.len())?;
        Ok(Tensor::from_storage(device.upload_owned(data)?, shape))
    }

    /// `start, start + step, ...` below `end` (above it for a negative step), as a 1-D tensor.
    pub fn arange(
        start: f64,
        end: f64,
        step: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::InvalidArgument {
                op: "arange",
                reason: format!("start {start}, end {end}, step {step} do not make a range"),
            });
        }
        let n = ((end - start) / step).ceil().max(0.0);
        if n > u32::MAX as f64 {
            let reason = format!("{n} elements is more than kiln indexes");
            return Err(Error::InvalidArgument {
                op: "arange",
                reason,
            });
        }
        let n = n as usize;
        let mut values = kiln_core::host::try_filled("arange", n, 0.0f64)?;
        for (i, v) in values.iter_mut().enumerate() {
            *v = start + i as f64 * step;
        }
        let host = HostBuffer::from_f64(dtype, values);
        Tensor::from_host(host, Shape::new([n]), device)
    }

    /// The `n x n` identity matrix.
    pub fn eye(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = Shape::new([n, n]);
        check_shape("eye", &shape)?;
        let mut values = kiln_core::host::try_filled("eye", n * n, 0.0f64)?;
        for i in 0..n {
            values[i * (n + 1)] = 1.0;
        }
        let host = HostBuffer::from_f64(dtype, values);
        Tensor::from_host(host, shape, device)
    }
}
